"""The gateway's side of the sandbox broker: the same calls the tools make on sandboxes,
each one a request by intent over the broker's Unix socket.

No Docker here, and nothing the gateway could use to reach the engine: a room, a command,
a path, a recipe's request. One connection per call, so a client is not bound to an event
loop and a broken call cannot poison the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import protocol
from .policy import OUTPUT_CAP, Ceilings, Request, effective, parse_size, workspace_path
from .protocol import MAX_FILE, ProtocolError
from .results import (
    Collected,
    Ended,
    EngineDown,
    ExecResult,
    NotMine,
    ProbeResult,
    SandboxError,
    exec_result,
)
from .wire import read_message, write_message

CONNECT_TIMEOUT_S = 10.0
QUICK_TIMEOUT_S = 120.0  # everything but commands: files, lists, reset, health, probe
ERRORS = {"not_mine": NotMine, "unavailable": EngineDown}
# "busy", "timeout", "bad_request", "stopping", "sandbox", "internal": SandboxError


class BrokerUnavailable(SandboxError):
    """The broker itself does not answer."""

    code = "unavailable"


@dataclass(frozen=True)
class Health:
    """What the broker says of itself: the engine, the image, the install's ceilings."""

    engine_ok: bool
    engine_version: str
    engine_error: str
    image: str
    image_present: bool
    image_current: str  # the tag of this version's image definition, when built
    ceilings: Ceilings
    install: str
    workspace_capped: bool
    sandboxes: int
    counters: dict[str, int]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Health:
        engine = data.get("engine") or {}
        image = data.get("image") or {}
        limits = data.get("ceilings") or {}
        ceilings = Ceilings(
            image=str(limits.get("image", "")),
            memory_bytes=parse_size(str(limits.get("memory", "1g"))),
            cpus=float(limits.get("cpus", 1.0)),
            pids=int(limits.get("pids", 256)),
            exec_timeout_s=int(limits.get("exec_timeout_s", 120)),
            workspace_bytes=parse_size(str(limits.get("workspace", "256m"))),
            idle_s=float(limits.get("idle_s", 600)),
        )
        return cls(
            engine_ok=engine.get("ok") is True,
            engine_version=str(engine.get("version", "")),
            engine_error=str(engine.get("error", "")),
            image=str(image.get("name", "")),
            image_present=image.get("present") is True,
            image_current=str(image.get("current", "")),
            ceilings=ceilings,
            install=str(data.get("install", "")),
            workspace_capped=data.get("workspace_capped") is True,
            sandboxes=int(data.get("sandboxes", 0)),
            counters={str(k): int(v) for k, v in (data.get("counters") or {}).items()},
        )


def ask(request: Request | None) -> dict[str, Any]:
    """A recipe's `sandbox:` section as the broker's request: four numbers, no image."""
    if request is None:
        return {}
    return {
        "memory": str(request.memory),
        "cpus": float(request.cpus),
        "pids": int(request.pids),
        "exec_timeout_s": int(request.exec_timeout_s),
    }


class BrokerClient:
    """Sandboxes, as the gateway uses them, through a broker.

    `process` is a broker this client started (a child of the gateway): closing the client
    stops it. A broker run as a service (systemd, compose) is left running.
    """

    def __init__(self, socket_path: Path | str, process: subprocess.Popen[bytes] | None = None):
        self.socket_path = str(socket_path)
        self.process = process
        self.counters: dict[str, int] = {
            "starts": 0,
            "execs": 0,
            "kills": 0,
            "timeouts": 0,
            "ooms": 0,
            "replaced": 0,
        }
        self._ceilings: Ceilings | None = None

    # -- one request -----------------------------------------------------------------------

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await asyncio.open_unix_connection(
                    self.socket_path, limit=protocol.MAX_FRAME + 16
                )
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"the sandbox broker at {self.socket_path} does not answer "
                f"({exc.__class__.__name__}); start it (`potluck sandbox broker`, or the "
                "potluck-broker service), or leave [sandbox] broker unset so the gateway "
                "starts its own"
            ) from None

    async def _call(
        self, message: dict[str, Any], data: bytes = b"", timeout_s: float = QUICK_TIMEOUT_S
    ) -> AsyncIterator[tuple[str, Any]]:
        """Send a request (and its data), then yield the broker's replies up to the last."""
        reader, writer = await self._open()
        try:
            try:
                await write_message(writer, message)
                for frame in protocol.data_frames(data):
                    await write_message(writer, frame)
            except ConnectionError:
                # A busy or stopping broker answers at once and closes; a client slower than
                # that loses its write, but the answer may be in the reader already: read on.
                pass
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        answer = await read_message(reader)
                except TimeoutError:
                    raise SandboxError(
                        f"the sandbox broker did not answer within {timeout_s:.0f} s"
                    ) from None
                if answer is None:
                    raise SandboxError("the sandbox broker closed the connection without answering")
                kind, value = protocol.reply(answer)
                if kind == "error":
                    raise ERRORS.get(value["code"], SandboxError)(value["message"])
                yield kind, value
                if kind in ("exit", "ok"):
                    return
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise SandboxError(f"the connection to the sandbox broker broke ({exc})") from None
        except ProtocolError as exc:
            raise SandboxError(f"the sandbox broker answered nonsense: {exc}") from None
        finally:
            writer.close()

    async def _ok(
        self, message: dict[str, Any], data: bytes = b"", timeout_s: float = QUICK_TIMEOUT_S
    ) -> dict[str, Any]:
        async with contextlib.aclosing(self._call(message, data, timeout_s)) as replies:
            async for kind, value in replies:
                if kind == "ok":
                    return value
        raise SandboxError("the sandbox broker gave no answer")

    # -- what the tools use ----------------------------------------------------------------

    async def run(
        self,
        room: str,
        argv: list[str],
        request: Request | None = None,
        stdin: bytes = b"",
        label: str | None = None,
    ) -> ExecResult:
        """Run an argument vector in the room's workspace."""
        if len(stdin) > MAX_FILE:
            raise SandboxError(f"stdin of {len(stdin)} bytes is over the {MAX_FILE} limit")
        message = {"op": "exec", "room": room, "argv": argv, "stdin": len(stdin)}
        if request is not None:
            message["ask"] = ask(request)
        limit = int(request.exec_timeout_s) if request is not None else 30
        collected = Collected(OUTPUT_CAP)
        ended = None
        replies = self._call(message, stdin, timeout_s=2 * limit + QUICK_TIMEOUT_S)
        async with contextlib.aclosing(replies):
            async for kind, value in replies:
                if kind in ("out", "err"):
                    collected.add(1 if kind == "out" else 2, value)
                elif kind == "exit":
                    counters = value.pop("counters", None)
                    if isinstance(counters, dict):
                        self.counters.update({str(k): int(v) for k, v in counters.items()})
                    try:
                        ended = Ended.from_dict(value)
                    except ValueError as exc:
                        raise SandboxError(f"the sandbox broker answered nonsense: {exc}") from None
        if ended is None:
            raise SandboxError("the sandbox broker did not say how the command ended")
        return exec_result(label or " ".join(argv), collected, ended)

    async def exec(self, room: str, command: str, request: Request | None = None) -> ExecResult:
        """Run a shell command in the room's workspace."""
        return await self.run(room, ["bash", "-c", command], request, label=command)

    async def write_file(
        self, room: str, path: str, data: bytes, request: Request | None = None
    ) -> ExecResult:
        workspace_path(path)  # an escape is refused here already (the broker checks again)
        if len(data) > MAX_FILE:
            raise SandboxError(f"{path}: {len(data)} bytes is over the {MAX_FILE} limit")
        message = {"op": "put", "room": room, "path": path, "size": len(data)}
        if request is not None:
            message["ask"] = ask(request)
        started = time.monotonic()
        await self._ok(message, data)
        return ExecResult(path, 0, "", "", time.monotonic() - started)

    async def read_file(
        self, room: str, path: str, max_bytes: int = 256 * 1024, request: Request | None = None
    ) -> bytes:
        workspace_path(path)
        message: dict[str, Any] = {
            "op": "get",
            "room": room,
            "path": path,
            "max_bytes": max(1, min(max_bytes, MAX_FILE)),
        }
        if request is not None:
            message["ask"] = ask(request)
        pieces = []
        async with contextlib.aclosing(self._call(message)) as replies:
            async for kind, value in replies:
                if kind == "data":
                    pieces.append(value)
        return b"".join(pieces)

    async def list_files(
        self, room: str, path: str = ".", request: Request | None = None
    ) -> list[str]:
        workspace_path(path)
        message: dict[str, Any] = {"op": "list_files", "room": room, "path": path}
        if request is not None:
            message["ask"] = ask(request)
        entries = (await self._ok(message)).get("entries")
        if not isinstance(entries, list):
            raise SandboxError("the sandbox broker answered nonsense: no entries")
        return [str(entry) for entry in entries]

    async def ensure(self, room: str, request: Request | None = None) -> list[str]:
        """Warm the room's sandbox; returns what of the request the install capped."""
        message: dict[str, Any] = {"op": "ensure", "room": room}
        if request is not None:
            message["ask"] = ask(request)
        return [str(note) for note in (await self._ok(message)).get("notes") or []]

    async def reset(self, room: str) -> None:
        """A fresh container and an empty workspace for the room."""
        await self._ok({"op": "reset", "room": room})

    async def remove(self, room: str) -> None:
        """Remove the room's container; its workspace stays."""
        await self._ok({"op": "remove", "room": room})

    async def list(self) -> list[dict[str, Any]]:
        """This install's sandboxes: room, state (running, exited, missing), container."""
        found = (await self._ok({"op": "list_sandboxes"})).get("sandboxes")
        if not isinstance(found, list):
            raise SandboxError("the sandbox broker answered nonsense: no sandboxes")
        return [dict(entry) for entry in found if isinstance(entry, dict)]

    async def health(self) -> Health:
        health = Health.from_dict(await self._ok({"op": "health"}))
        self._ceilings = health.ceilings
        self.counters.update(health.counters)
        return health

    async def probe(self) -> ProbeResult:
        found = await self._ok({"op": "probe"})
        return ProbeResult(dict(found.get("enforced") or {}), dict(found.get("missing") or {}))

    async def capped(self, request: Request | None) -> list[str]:
        """What of a recipe's request this install will cap, one sentence each, for the room
        (the broker applies the same rule by itself)."""
        if self._ceilings is None:
            await self.health()
        assert self._ceilings is not None
        return effective(request, self._ceilings)[1]

    async def reap_idle(self, idle_s: float | None = None) -> list[str]:
        """Nothing to do: the broker reaps idle sandboxes itself, on its own timer. Kept so
        callers written for the old in-process sandboxes keep working."""
        return []

    async def close(self, stop: bool | None = None) -> None:
        """Stop the broker if this client started it (its containers go, workspaces stay).
        `stop` is accepted for callers written for the old in-process sandboxes; the
        broker decides about containers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(Exception):
            if process.stdin is not None:
                process.stdin.close()  # an owned broker stops when its stdin closes
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
