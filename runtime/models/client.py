"""Every model call goes through here: litellm, streaming, retries, fallbacks, accounting.

litellm is imported on the first call that needs it (a cloud or scripted model, a question
only it can answer): it costs ~200 MB and seconds to import, which a gateway whose rooms use
the embedded model never pays. The embedded model is called directly (direct.py).

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
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .direct import DirectError, stream_chat
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
from .local import LocalModels, OnWait
from .profile import NEUTRAL, Profile, Sampling, resolve

log = logging.getLogger("potluck.models")
_loaded: Any = None


def _litellm() -> Any:
    """litellm, imported (and the scripted provider registered) on first use."""
    global _loaded
    if _loaded is None:
        import litellm

        from . import scripted

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        scripted.register()
        _loaded = litellm
    return _loaded


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, DirectError):
        return exc.transient
    if _loaded is None:
        return False
    return isinstance(
        exc,
        (
            _loaded.RateLimitError,
            _loaded.ServiceUnavailableError,
            _loaded.InternalServerError,
            _loaded.Timeout,
            _loaded.APIConnectionError,
        ),
    )


def _provider_error(exc: BaseException) -> bool:
    """Any other provider error: the chain moves on to its next model."""
    if isinstance(exc, DirectError | ValueError):
        return True
    openai = sys.modules.get("openai")
    return openai is not None and isinstance(exc, openai.OpenAIError)


OnText = Callable[[str], Awaitable[None] | None]
Messages = list[dict[str, Any]]
# The messages for the model that will answer: the conductor shapes them per model (a tiny
# model gets a shorter context), and a chain may fall back to a model of another size.
MessagesFor = Callable[[str], Messages]


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


RECIPE_DEFAULTS = Sampling(temperature=0.7)  # runtime/recipes/schema.py Agent's defaults


@dataclass(frozen=True)
class CallParams:
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    api_base: str | None = None
    timeout: float = 120.0
    min_p: float | None = None
    repeat_penalty: float | None = None
    # The recipe schema's defaults: a setting equal to its default was not said by the
    # recipe, so the answering model's profile decides it (see profile.resolve).
    defaults: Sampling = RECIPE_DEFAULTS

    def sampling(self) -> Sampling:
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
        )


@dataclass(frozen=True)
class Fallback:
    """The install's better model ([models] in the config): tried before the embedded model
    wherever a chain would reach it, and when nothing in a chain is available."""

    model: str
    api_base: str | None = None


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
        fallback: Fallback | None = None,
    ) -> None:
        self.providers = merge_secrets(providers or {}, secrets or {})
        self.local = local or LocalModels()
        self.retries = retries
        self.backoff_s = backoff_s
        self.fallback = fallback

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
            _, served_by, dynamic, _ = _litellm().get_llm_provider(
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
            env = _litellm().validate_environment(model=model)
        except Exception:
            return None
        if env.get("keys_in_environment"):
            return None
        missing = ", ".join(env.get("missing_keys", [])) or "an API key"
        family = provider_of(model)
        return f"{model} needs {missing} (config [providers.{family}] api_key, or environment)"

    def profile(self, model: str) -> Profile:
        """What this model can do (runtime/models/profile.py): measured for ours."""
        if model.startswith("local/"):
            with contextlib.suppress(Exception):
                return self.local.spec(model).profile
        return NEUTRAL

    def candidates(self, chain: list[str], api_base: str | None) -> list[tuple[str, str | None]]:
        """The (model, api_base) pairs a call tries, in order: the chain, with the install's
        fallback before the embedded model, and both appended when nothing else is
        available. Pure but for the availability checks."""
        order = [(m, api_base) for m in dict.fromkeys(chain)]
        extra = ([(self.fallback.model, self.fallback.api_base)] if self.fallback else []) + [
            (LOCAL_DEFAULT, None)
        ]
        if all(self.unavailable(m, b) for m, b in order):
            order += [pair for pair in extra if pair not in order]
        elif self.fallback is not None:
            local = next((i for i, (m, _) in enumerate(order) if m == LOCAL_DEFAULT), None)
            if local is not None and extra[0] not in order:
                order.insert(local, extra[0])
        return order

    def answering(self, chain: list[str], api_base: str | None) -> str:
        """The model expected to answer: the first candidate that can be tried."""
        for model, base in self.candidates(chain, api_base):
            if not self.unavailable(model, base):
                return model
        return chain[0]

    def supports_tools(self, model: str) -> bool:
        """Function calling as litellm knows it; otherwise agents get the text convention."""
        if self.profile(model).tools is False:
            return False
        if model.startswith(("local/", "scripted/")) or refusal_by_name(model):
            return False
        try:
            return bool(_litellm().supports_function_calling(model=model))
        except Exception:
            return False

    def context_window(self, model: str) -> int:
        if model.startswith("local/"):
            return self.local.spec(model).context
        if refusal_by_name(model):
            return 8192
        try:
            info = _litellm().get_model_info(model)
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
            return int(_litellm().token_counter(model=model, messages=messages))
        except Exception:
            return _estimate(messages)

    # -- calling ---------------------------------------------------------------------------

    async def complete(
        self,
        chain: list[str],
        messages: Messages | MessagesFor,
        params: CallParams,
        on_text: OnText | None = None,
        tools: list[dict[str, Any]] | None = None,
        on_wait: OnWait | None = None,
    ) -> Completion:
        """Try each model of the chain in order (retrying transient errors) until one answers.
        `messages` may be a function of the model, for a chain of models of several sizes;
        `on_wait(ahead)` is called when the call must queue for a local model's slot."""
        notes: list[str] = []
        attempts: list[str] = []
        for model, api_base in self.candidates(chain, params.api_base):
            reason = self.unavailable(model, api_base)
            if reason:
                notes.append(f"skipped {reason}")
                continue
            planned = self.route(model, api_base)
            if planned.note and planned.note not in notes:
                notes.append(planned.note)
            shaped = messages(model) if callable(messages) else messages
            for attempt in range(self.retries + 1):
                try:
                    result = await self._stream(
                        model, shaped, params, on_text, tools, planned, on_wait
                    )
                except Exception as exc:
                    if _retryable(exc):
                        attempts.append(f"{model}: {type(exc).__name__}: {self._short(exc)}")
                        if attempt < self.retries:
                            delay = self.backoff_s * (2**attempt) * random.uniform(0.8, 1.2)
                            await asyncio.sleep(delay)
                            continue
                    elif isinstance(exc, ValueError):  # malformed answers, unknown providers
                        attempts.append(f"{model}: {self._short(exc)}")
                    elif _provider_error(exc):  # every other provider error: next model
                        attempts.append(f"{model}: {type(exc).__name__}: {self._short(exc)}")
                    else:
                        raise
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
        on_wait: OnWait | None = None,
    ) -> Completion:
        profile = self.profile(model)
        sampling = resolve(profile, params.sampling(), params.defaults)
        max_tokens = params.max_tokens
        if profile.reply_tokens is not None:
            max_tokens = min(max_tokens, profile.reply_tokens)
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "timeout": params.timeout,
            "num_retries": 0,
            "stream_options": {"include_usage": True},
        }
        if sampling.temperature is not None:
            kwargs["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            kwargs["top_p"] = sampling.top_p
        if planned.api_base:
            kwargs["api_base"] = planned.api_base
        if planned.api_key is not None:
            kwargs["api_key"] = planned.api_key
        if tools:
            kwargs["tools"] = tools
        extra = sampling.extra_body()
        # llama.cpp-style settings: only to servers that take them (ours, and any
        # OpenAI-compatible server named by api_base)
        if extra and (model.startswith("local/") or planned.api_base):
            kwargs["extra_body"] = extra
        if not model.startswith("local/"):
            return await self._consume(model, messages, kwargs, on_text)
        server = await self.local.ensure(model)
        body = {
            key: kwargs.get(key) for key in ("messages", "max_tokens", "temperature", "top_p")
        } | extra
        body = {k: v for k, v in body.items() if v is not None}
        body["model"] = server.spec.name
        slots = self.local.slots(model)
        await slots.acquire(on_wait)
        try:
            got = await stream_chat(server.api_base, server.api_key, body, on_text, params.timeout)
        finally:
            slots.release()
        if not got.text:
            raise ValueError("the local model's answer was empty")
        tokens_in = got.prompt_tokens or self.count_tokens(model, messages)
        tokens_out = got.completion_tokens or self.count_tokens(
            model, [{"role": "assistant", "content": got.text}]
        )
        return Completion(got.text, model, tokens_in, tokens_out, 0.0, got.finish)

    async def _consume(
        self,
        model: str,
        messages: list[dict[str, Any]],
        kwargs: dict[str, Any],
        on_text: OnText | None,
    ) -> Completion:
        response = await _litellm().acompletion(**kwargs)
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
            prompt, completion = _litellm().cost_per_token(
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
