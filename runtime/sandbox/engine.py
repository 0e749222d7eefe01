"""The Docker engine as the broker uses it, and nothing more.

Control calls (create, inspect, top, remove) go through docker-py, which blocks, on a thread
pool of their own. An exec's streams are attached natively on the engine's Unix socket with
asyncio: the upgrade's leftover bytes stay in our reader, stdin can be half-closed, and
giving up on a stream is closing a transport, with no thread parked in recv().
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

FRAME = struct.Struct(">BxxxL")  # Docker's multiplexed stream: stream id, length
DEFAULT_SOCKET = "/var/run/docker.sock"
BASE_API = "1.41"  # Docker 20.10's, until the engine says which it speaks


class EngineError(RuntimeError):
    """The engine did not do what was asked (or could not be reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def socket_path(env: dict[str, str] | None = None) -> str:
    """The engine's Unix socket, from DOCKER_HOST or Docker's default."""
    host = (env if env is not None else os.environ).get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    raise EngineError(
        f"DOCKER_HOST={host}: the sandbox broker talks to the engine over its Unix socket only; "
        "set DOCKER_HOST=unix:///path/to/docker.sock or leave it unset"
    )


@dataclass(frozen=True)
class Frame:
    stream: int  # 1 stdout, 2 stderr
    data: bytes


class Attached:
    """One exec's streams: read frames until EOF, write stdin, half-close it, or drop it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def next(self) -> Frame | None:
        """The next piece of output, or None at the end of the stream."""
        try:
            stream, length = FRAME.unpack(await self.reader.readexactly(FRAME.size))
            return Frame(stream, await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def end_input(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Engine:
    """One engine connection: a docker-py client for control calls, the socket for streams."""

    def __init__(self, path: str | None = None, client: Any = None, workers: int = 16) -> None:
        self.path = path or socket_path()
        self.negotiated = client is not None
        if client is None:
            import docker

            # A version given here means no request at construction: a broker starts (and
            # says "no engine") while the engine is down. `negotiate` settles it later.
            client = docker.DockerClient(
                base_url=f"unix://{self.path}", version=BASE_API, timeout=120
            )
        self.client = client
        self.api = client.api
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")

    def negotiate(self) -> None:
        """Blocking: speak the engine's own API version (as docker-py's "auto" would)."""
        if not self.negotiated:
            found = self.api.version(api_version=False).get("ApiVersion")
            if found:
                self.api._version = str(found)  # docker-py keeps the version there
            self.negotiated = True

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def attach(self, exec_id: str) -> Attached:
        """Start a created exec with its streams attached (Docker's upgrade to a raw stream)."""
        reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 20)
        body = json.dumps({"Detach": False, "Tty": False}).encode()
        version = getattr(self.api, "_version", "1.41")
        writer.write(
            f"POST /v{version}/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
            "Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
            async with asyncio.timeout(60):
                head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status not in (101, 200):
                message = head.decode("latin-1").split("\r\n", 1)[0]
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        text = (await reader.read(64 * 1024)).decode("utf-8", "replace")
                        message = json.loads(text).get("message", text)
                raise EngineError(f"the engine refused to start the command: {message}", status)
        except BaseException:
            writer.close()
            raise
        return Attached(reader, writer)

    async def top(self, container_id: str) -> list[dict[str, str]]:
        """The container's processes as the engine sees them (its cgroup's task list)."""
        found = await self.call(self.api.top, container_id, ps_args="-o pid,ppid,uid,stat,args")
        titles = found.get("Titles") or []
        return [dict(zip(titles, row, strict=False)) for row in found.get("Processes") or []]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.client.close()
