"""Streaming chat completions from the embedded model's own server, with no litellm between.

The embedded model is ours and speaks the OpenAI API on loopback, so the runtime talks to it
with aiohttp (already loaded for the gateway): litellm costs ~200 MB and seconds to import,
which `potluck serve` should not pay before a room asks a cloud model, and a few percent of
tokens per second on every local turn.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

OnText = Callable[[str], Awaitable[None] | None]
MAX_LINE = 1 << 20


class DirectError(Exception):
    """The server failed the call. transient: worth retrying (overloaded, restarting)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class Streamed:
    text: str
    finish: str
    prompt_tokens: int
    completion_tokens: int


async def stream_chat(
    api_base: str, api_key: str, body: dict[str, Any], on_text: OnText | None, timeout_s: float
) -> Streamed:
    """POST /chat/completions with stream on; `on_text` gets the text so far at each piece."""
    import aiohttp

    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {api_key}"}
    text, finish, usage = "", "stop", {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, read_bufsize=1 << 16) as http,
            http.post(f"{api_base}/chat/completions", json=payload, headers=headers) as response,
        ):
            if response.status != 200:
                detail = (await response.content.read(500)).decode(errors="replace")
                raise DirectError(
                    f"HTTP {response.status}: {detail}", response.status in (429, 500, 502, 503)
                )
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                try:
                    chunk = json.loads(line[6:])
                except ValueError:
                    raise DirectError("the model server sent a malformed chunk", False) from None
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        text += piece
                        if on_text is not None:
                            maybe = on_text(text)
                            if asyncio.iscoroutine(maybe):
                                await maybe
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DirectError(f"{type(exc).__name__}: {exc}", True) from None
    return Streamed(
        text, finish, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    )
