"""A scripted model behind litellm's own extension point (custom_provider_map).

Tests and benchmarks name `scripted/<script>` in a recipe; the script decides the reply from
the messages. Nothing in litellm is patched: this is a provider like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk, ModelResponse

Script = Callable[[list[dict[str, Any]]], str]
SCRIPTS: dict[str, Script] = {}
DELAYS: dict[str, float] = {}


def last_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")


SCRIPTS["echo"] = lambda messages: f"echo: {last_user(messages)[-200:]}"
SCRIPTS["instant"] = lambda messages: "ok"
# Distinct words: litellm stops a stream that repeats one chunk 100 times.
SCRIPTS["slow"] = lambda messages: " ".join(f"tick{n}" for n in range(200))
DELAYS["slow"] = 0.05


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


class ScriptedLLM(CustomLLM):
    def _reply(self, model: str, messages: list[dict[str, Any]]) -> str:
        name = model.split("/", 1)[-1]
        if name not in SCRIPTS:
            raise litellm.BadRequestError(
                f"no script named {name!r}", model=model, llm_provider="scripted"
            )
        return SCRIPTS[name](messages)

    def _chunks(self, text: str, prompt_tokens: int) -> Iterator[GenericStreamingChunk]:
        words = _words(text)
        for index, word in enumerate(words):
            last = index == len(words) - 1
            yield {
                "text": word,
                "tool_use": None,
                "is_finished": last,
                "finish_reason": "stop" if last else "",
                "index": 0,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(words),
                    "total_tokens": prompt_tokens + len(words),
                }
                if last
                else None,
            }

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        text = self._reply(model, messages)
        return litellm.completion(model="scripted-internal", messages=messages, mock_response=text)

    async def acompletion(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        return self.completion(model, messages)

    def streaming(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> Iterator[GenericStreamingChunk]:
        delay = DELAYS.get(model.split("/", 1)[-1], 0.0)
        for chunk in self._chunks(self._reply(model, messages), _prompt_tokens(messages)):
            if delay:
                time.sleep(delay)
            yield chunk

    async def astreaming(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        delay = DELAYS.get(model.split("/", 1)[-1], 0.0)
        for chunk in self._chunks(self._reply(model, messages), _prompt_tokens(messages)):
            if delay:
                await asyncio.sleep(delay)
            yield chunk


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


def register() -> None:
    """Make `scripted/...` models available to litellm (idempotent)."""
    if not any(entry.get("provider") == "scripted" for entry in litellm.custom_provider_map):
        litellm.custom_provider_map.append(
            {"provider": "scripted", "custom_handler": ScriptedLLM()}
        )
        litellm.utils.custom_llm_setup()
