"""A local server speaking three model providers' wire contracts, recording every request.

It stands in for a cloud provider or for an attacker's server named in a recipe's api_base:
tests read `requests` to see exactly which credentials arrived. It answers, in each
provider's documented streaming shape, wherever the path ends as the provider's does:

- OpenAI chat completions (`…/chat/completions`): Server-Sent Events of
  `chat.completion.chunk` objects ending in `data: [DONE]`, or one JSON object without
  `stream`; usage in a last chunk when `stream_options.include_usage` asks for it.
- Anthropic messages (`…/v1/messages`): the `message_start` … `message_stop` event stream.
- Ollama (`/api/chat`, `/api/generate`): newline-delimited JSON objects, `done` on the last.

Every other path is recorded and answered 404, so a request to an unexpected route (another
API a library might bridge to) still shows which headers it carried.

It runs on its own thread and event loop, as a real server would be another process: litellm
makes some calls synchronously on the caller's loop (Ollama's /api/show after a completion),
which would deadlock against a server sharing that loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    """One request as it arrived: what a provider (or an attacker) would see."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    def credentials(self) -> list[str]:
        """Every header value that could carry a key, as sent."""
        names = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
        return [value for name, value in self.headers.items() if name.lower() in names]


class FakeProvider:
    def __init__(self, reply: str = "hello from {model}") -> None:
        self.reply = reply
        # Models answered 500 with the credentials they came with in the message, as a hostile
        # (or careless) server might, to see whether an error can carry a key into a room.
        self.failing: set[str] = set()
        self.requests: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-style base a recipe would name."""
        return f"{self.root}/v1"

    def seen_credentials(self) -> list[str]:
        return [value for request in self.requests for value in request.credentials()]

    async def start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready), name="fake-provider", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(ready.wait, 10)
        if not self.port:
            raise RuntimeError("the fake provider did not start within 10 s")

    async def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            done = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            await asyncio.wrap_future(done)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 10)

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)

        async def setup() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        try:
            loop.run_until_complete(setup())
        finally:
            ready.set()
        loop.run_forever()
        loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        seen = Seen(request.method, request.path, dict(request.headers), body)
        self.requests.append(seen)
        path = request.path.rstrip("/")
        model = str(body.get("model", ""))
        if request.method == "POST" and model in self.failing:
            echo = ", ".join(seen.credentials())
            return web.json_response({"error": {"message": f"down; you sent {echo}"}}, status=500)
        if request.method == "POST" and path.endswith("/chat/completions"):
            return await self._openai(request, body)
        if request.method == "POST" and path.endswith("/v1/messages"):
            return await self._anthropic(request, body)
        if request.method == "POST" and path in ("/api/chat", "/api/generate"):
            return await self._ollama(request, body, chat=path == "/api/chat")
        return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)

    def _words(self, model: str) -> list[str]:
        parts = self.reply.format(model=model).split(" ")
        return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]

    async def _openai(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", ""))
        words = self._words(model)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": len(words)},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        for word in words:
            delta = {"index": 0, "delta": {"content": word}, "finish_reason": None}
            await response.write(event([delta]))
        await response.write(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 0}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            await response.write(event([], usage=usage))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _anthropic(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", ""))
        words = self._words(model)
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        }
        if not body.get("stream"):
            message.update(
                content=[{"type": "text", "text": "".join(words)}],
                stop_reason="end_turn",
                usage={"input_tokens": 5, "output_tokens": len(words)},
            )
            return web.json_response(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            data = {"type": kind, **data}
            await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        await send("message_start", {"message": message})
        await send(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        for word in words:
            await send(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": word}},
            )
        await send("content_block_stop", {"index": 0})
        await send(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        )
        await send("message_stop", {})
        return response

    async def _ollama(
        self, request: web.Request, body: dict[str, Any], chat: bool
    ) -> web.StreamResponse:
        model = str(body.get("model", ""))
        words = self._words(model)

        def line(word: str, done: bool) -> dict[str, Any]:
            data: dict[str, Any] = {"model": model, "created_at": "2025-01-01T00:00:00Z"}
            if chat:
                data["message"] = {"role": "assistant", "content": word}
            else:
                data["response"] = word
            data["done"] = done
            if done:
                data.update(done_reason="stop", prompt_eval_count=5, eval_count=len(words))
            return data

        if body.get("stream") is False:
            return web.json_response(line("".join(words), True))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for word in words:
            await response.write((json.dumps(line(word, False)) + "\n").encode())
        await response.write((json.dumps(line("", True)) + "\n").encode())
        return response
