"""A hostile Nostr relay on loopback: it speaks NIP-01's messages, but answers every `REQ`
with whatever a test tells it to (forged events, events nobody asked for, garbage), and can
hold back the end of stored events (EOSE) forever or trickle notices to keep a client
waiting. Real relays refuse to store forged events, so the attacks a client must survive
need a relay that lies."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import websockets

from .support import free_port


@dataclass
class LyingRelay:
    answers: list[Any] = field(default_factory=list)  # events (dicts) or raw text frames
    eose: bool = True  # send EOSE after the answers
    trickle: bool = False  # after the answers, send a NOTICE every 50 ms, forever
    requests: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self._server: Any = None

    async def _serve(self, socket: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in socket:
                message = json.loads(raw)
                if message[0] != "REQ":
                    continue
                self.requests.append(message)
                sub = message[1]
                for answer in self.answers:
                    frame = (
                        answer if isinstance(answer, str) else json.dumps(["EVENT", sub, answer])
                    )
                    await socket.send(frame)
                if self.eose:
                    await socket.send(json.dumps(["EOSE", sub]))
                while self.trickle:
                    await socket.send(json.dumps(["NOTICE", "still here"]))
                    await asyncio.sleep(0.05)

    async def __aenter__(self) -> LyingRelay:
        self._server = await websockets.serve(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.trickle = False
        self._server.close()
        await self._server.wait_closed()
