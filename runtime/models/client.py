"""Every model call goes through here: litellm, streaming, retries, fallbacks, accounting.

A cloud model without its API key is skipped, not failed: the agent falls back along the
recipe's chain (and finally to the local model) and the reason is kept in the result's
notes, so the room can be told plainly.

Which key a call carries is decided per model by keys.route: a key goes only to its
provider's official endpoint or to endpoints the install lists for it, never to an api_base
a recipe names. This module supplies what only litellm knows (which provider serves a model,
whether litellm would pick a key of its own) and keeps every known secret out of the text
it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import openai

from . import scripted
from .keys import (
    KEYLESS_OK,
    PLACEHOLDER_KEY,
    EndpointError,
    Provider,
    Route,
    merge_secrets,
    normalise_endpoint,
    redact,
    refusal_by_name,
    route,
)
from .local import DEFAULT as LOCAL_DEFAULT
from .local import LocalModels

log = logging.getLogger("potluck.models")
litellm.telemetry = False
litellm.suppress_debug_info = True
scripted.register()

RETRYABLE = (
    litellm.RateLimitError,
    litellm.ServiceUnavailableError,
    litellm.InternalServerError,
    litellm.Timeout,
    litellm.APIConnectionError,
)
OnText = Callable[[str], Awaitable[None] | None]


class ModelError(RuntimeError):
    """No model in the chain could answer; the message lists what each attempt said."""


@dataclass
class Completion:
    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    finish: str = "stop"
    notes: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CallParams:
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    api_base: str | None = None
    timeout: float = 120.0


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


class Models:
    """Calls models for every room. `providers` is the install's key configuration
    (gateway.config's [providers]); `secrets` is the older [secrets] form, folded into it."""

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider] | None = None,
        secrets: Mapping[str, str] | None = None,
        local: LocalModels | None = None,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        self.providers = merge_secrets(providers or {}, secrets or {})
        self.local = local or LocalModels()
        self.retries = retries
        self.backoff_s = backoff_s

    # -- which models can be called, with which key ---------------------------------------

    def route(self, model: str, api_base: str | None) -> Route:
        """The key and base this model's call carries, or why it may not be made."""
        if model.startswith(("local/", "scripted/")):
            return Route()  # ours: no provider key is involved
        if reason := refusal_by_name(model):
            return Route(refused=reason)
        probe = api_base
        if api_base:
            with contextlib.suppress(EndpointError):
                probe = normalise_endpoint(api_base)
        try:
            _, served_by, dynamic, _ = litellm.get_llm_provider(
                model=model, api_base=probe, api_key=PLACEHOLDER_KEY
            )
        except Exception:  # an unknown provider: the call itself would say so
            served_by, dynamic = None, None
        env_has_key = any(os.environ.get(name) for name in KEYLESS_OK.get(served_by or "", ()))
        return route(
            model,
            served_by,
            api_base,
            self.providers,
            env_has_key=env_has_key,
            litellm_overrides_key=dynamic not in (None, PLACEHOLDER_KEY),
        )

    def unavailable(self, model: str, api_base: str | None) -> str | None:
        """Why this model cannot be tried here, or None when it can."""
        if model.startswith("local/"):
            return None if self.local.installed(model) else f"{model} is not installed"
        if model.startswith("scripted/"):
            return None
        planned = self.route(model, api_base)
        if planned.refused:
            return planned.refused
        if planned.api_base or planned.api_key or provider_of(model) in ("ollama", "ollama_chat"):
            return None
        try:
            env = litellm.validate_environment(model=model)
        except Exception:
            return None
        if env.get("keys_in_environment"):
            return None
        missing = ", ".join(env.get("missing_keys", [])) or "an API key"
        family = provider_of(model)
        return f"{model} needs {missing} (config [providers.{family}] api_key, or environment)"

    def supports_tools(self, model: str) -> bool:
        """Function calling as litellm knows it; otherwise agents get the text convention."""
        if model.startswith(("local/", "scripted/")) or refusal_by_name(model):
            return False
        try:
            return bool(litellm.supports_function_calling(model=model))
        except Exception:
            return False

    def context_window(self, model: str) -> int:
        if model.startswith("local/"):
            return self.local.spec(model).context
        if refusal_by_name(model):
            return 8192
        try:
            info = litellm.get_model_info(model)
            return int(info.get("max_input_tokens") or info.get("max_tokens") or 8192)
        except Exception:
            return 8192

    def count_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        if model.startswith(("local/", "scripted/")) or refusal_by_name(model):
            # litellm would count with an OpenAI tokenizer that is not these models' own
            # anyway, at ~1-2 ms a call; a character estimate that over-counts (English runs
            # ~4 characters a token) keeps trimming safe for a fraction of the cost.
            return _estimate(messages)
        try:
            return int(litellm.token_counter(model=model, messages=messages))
        except Exception:
            return _estimate(messages)

    # -- calling ---------------------------------------------------------------------------

    async def complete(
        self,
        chain: list[str],
        messages: list[dict[str, Any]],
        params: CallParams,
        on_text: OnText | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        """Try each model of the chain in order (retrying transient errors) until one answers."""
        notes: list[str] = []
        attempts: list[str] = []
        candidates = list(dict.fromkeys(chain))
        if (
            all(self.unavailable(m, params.api_base) for m in candidates)
            and LOCAL_DEFAULT not in candidates
        ):
            candidates.append(LOCAL_DEFAULT)
        for model in candidates:
            reason = self.unavailable(model, params.api_base)
            if reason:
                notes.append(f"skipped {reason}")
                continue
            planned = self.route(model, params.api_base)
            if planned.note and planned.note not in notes:
                notes.append(planned.note)
            for attempt in range(self.retries + 1):
                try:
                    result = await self._stream(model, messages, params, on_text, tools, planned)
                except RETRYABLE as exc:
                    attempts.append(f"{model}: {type(exc).__name__}: {self._short(exc)}")
                    if attempt < self.retries:
                        delay = self.backoff_s * (2**attempt) * random.uniform(0.8, 1.2)
                        await asyncio.sleep(delay)
                        continue
                except openai.OpenAIError as exc:  # every other provider error: next model
                    attempts.append(f"{model}: {type(exc).__name__}: {self._short(exc)}")
                except ValueError as exc:  # malformed answers, unknown providers
                    attempts.append(f"{model}: {self._short(exc)}")
                else:
                    if model != chain[0]:
                        notes.append(f"answered by {model} instead of {chain[0]}")
                    result.notes = notes + [f"retried: {a}" for a in attempts]
                    return result
                break
        detail = "; ".join(attempts + notes) or "no model to try"
        raise ModelError(f"no model could answer ({detail})")

    async def _stream(
        self,
        model: str,
        messages: list[dict[str, Any]],
        params: CallParams,
        on_text: OnText | None,
        tools: list[dict[str, Any]] | None,
        planned: Route,
    ) -> Completion:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "timeout": params.timeout,
            "num_retries": 0,
            "stream_options": {"include_usage": True},
        }
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if planned.api_base:
            kwargs["api_base"] = planned.api_base
        if planned.api_key is not None:
            kwargs["api_key"] = planned.api_key
        if tools:
            kwargs["tools"] = tools
        queue: asyncio.Semaphore | None = None
        if model.startswith("local/"):
            server = await self.local.ensure(model)
            kwargs.update(
                model="openai/" + server.spec.name,
                api_base=server.api_base,
                api_key=server.api_key,
                max_tokens=min(params.max_tokens, server.spec.max_reply_tokens),
                extra_body=dict(server.spec.sampling),
            )
            queue = self.local.queue(model)
        if queue is not None:
            await queue.acquire()
        try:
            return await self._consume(model, messages, kwargs, on_text)
        finally:
            if queue is not None:
                queue.release()

    async def _consume(
        self,
        model: str,
        messages: list[dict[str, Any]],
        kwargs: dict[str, Any],
        on_text: OnText | None,
    ) -> Completion:
        response = await litellm.acompletion(**kwargs)
        text, finish, usage = "", "stop", None
        tool_parts: dict[int, dict[str, Any]] = {}
        try:
            async for chunk in response:
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if delta.content:
                    text += delta.content
                    if on_text is not None:
                        maybe = on_text(text)
                        if asyncio.iscoroutine(maybe):
                            await maybe
                for call in getattr(delta, "tool_calls", None) or []:
                    part = tool_parts.setdefault(call.index or 0, {"name": "", "arguments": ""})
                    if call.function.name:
                        part["name"] = call.function.name
                    if call.function.arguments:
                        part["arguments"] += call.function.arguments
                    if call.id:
                        part["id"] = call.id
                if choice.finish_reason:
                    finish = choice.finish_reason
        finally:
            closer = getattr(response, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):  # the stream may already be closed
                    await closer()
        if not text and not tool_parts:
            # litellm turns an unparseable body into an empty stream; treat it as a failure
            # so the chain moves on instead of recording a silent empty turn.
            raise ValueError("the provider's answer was empty or malformed")
        tokens_in = getattr(usage, "prompt_tokens", 0) or self.count_tokens(model, messages)
        tokens_out = getattr(usage, "completion_tokens", 0) or self.count_tokens(
            model, [{"role": "assistant", "content": text}]
        )
        return Completion(
            text=text,
            model=model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=self.cost(model, tokens_in, tokens_out),
            finish=finish,
            tool_calls=list(tool_parts.values()),
        )

    def _short(self, exc: BaseException) -> str:
        """An exception's message for a note, with every secret this process knows masked:
        a provider (or a hostile server) may quote the credentials it was sent."""
        return _short(exc, self.known_secrets())

    def known_secrets(self) -> list[str]:
        found = [p.api_key for p in self.providers.values() if p.api_key]
        found += [e.api_key for p in self.providers.values() for e in p.endpoints if e.api_key]
        found += [
            value
            for name, value in os.environ.items()
            if re.search(r"(API_KEY|AUTH_TOKEN|TOKEN|SECRET|PASSWORD)$", name.upper())
        ]
        return found

    @staticmethod
    def cost(model: str, tokens_in: int, tokens_out: int) -> float:
        if model.startswith(("local/", "scripted/", "ollama")) or refusal_by_name(model):
            return 0.0
        try:
            prompt, completion = litellm.cost_per_token(
                model=model, prompt_tokens=tokens_in, completion_tokens=tokens_out
            )
            return float(prompt + completion)
        except Exception:  # a model litellm has no price for
            return 0.0


def _estimate(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "")) // 3 + 4 for m in messages)


def _short(exc: BaseException, secrets: list[str]) -> str:
    text = redact(str(exc), secrets).replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."
