"""The sandbox broker: the one process that holds the Docker engine's socket.

It offers the gateway the operations sandboxes need, by intent, over the typed protocol of
protocol.py on a Unix socket, and nothing else: there is no request that names an image, a
user, a mount, an option or a container. It builds every container and exec itself from
the install's ceilings (containers.py, policy.py), whatever the gateway asks.

Bounded by construction: a connection carries one request; its first frame must arrive
within REQUEST_TIMEOUT_S and each data frame within FRAME_TIMEOUT_S; frames are capped in
size; at most `max_connections` are served at once (the rest are told "busy" and closed).
A client that goes away mid-command stops the command. SIGTERM or SIGINT: stop accepting,
let requests finish for `grace_s`, cancel the rest (their commands are stopped and swept),
remove the containers (workspaces stay), remove the socket, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from . import protocol
from .containers import Output, Sandboxes
from .protocol import DATA_CHUNK, ProtocolError
from .results import Ended, SandboxError
from .wire import read_message, write_message

log = logging.getLogger("potluck.broker")

REQUEST_TIMEOUT_S = 10.0
FRAME_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 64
LINGER_S = 1.0
BACKLOG = 1024  # connections the kernel queues for accept (capped by net.core.somaxconn)


class BrokerError(RuntimeError):
    """The broker cannot start; the message says why and what to do."""


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except (OSError, AttributeError):
        return None


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def bind(path: Path, mode: int) -> socket.socket:
    """The listening socket, created with its final mode (no window where it is wider).
    A stale socket is replaced; anything else at that path, or a live broker, is refused."""
    if not path.parent.is_dir():
        raise BrokerError(f"{path.parent} does not exist; create it (or choose --socket)")
    try:
        found = path.lstat()
    except FileNotFoundError:
        found = None
    if found is not None:
        if not stat.S_ISSOCK(found.st_mode):
            raise BrokerError(f"{path} exists and is not a socket; refusing to replace it")
        if _answers(path):
            raise BrokerError(f"another broker is listening on {path}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def lock_state(state_dir: Path) -> int:
    """One broker per install: a lock held on the state directory for the process's life."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / "broker.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BrokerError(
            f"another broker already serves this install ({state_dir}); use its socket"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class Broker:
    def __init__(
        self,
        sandboxes: Sandboxes,
        *,
        max_connections: int = MAX_CONNECTIONS,
        grace_s: float = 10.0,
        reap_every_s: float | None = None,
    ) -> None:
        self.sandboxes = sandboxes
        self.max_connections = max_connections
        self.grace_s = grace_s
        idle = sandboxes.ceilings.idle_s
        self.reap_every_s = reap_every_s or max(1.0, min(60.0, idle / 4))
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self, sock: socket.socket) -> None:
        try:
            adopted, removed = await self.sandboxes.adopt()
            log.info("sandboxes: %d adopted, %d stale removed", len(adopted), len(removed))
        except SandboxError as exc:
            log.warning("no engine at start (%s); sandboxes start when it answers", exc)
        # asyncio listens again with its own backlog (100): past it, a Unix socket's connect
        # fails with EAGAIN, which asyncio takes for a connection; keep the burst queued.
        self._server = await asyncio.start_unix_server(
            self._accept, sock=sock, limit=protocol.MAX_FRAME + 16, backlog=BACKLOG
        )
        self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every_s)
            try:
                if reaped := await self.sandboxes.reap_idle():
                    log.info("reaped %d idle sandboxes (workspaces kept)", len(reaped))
            except Exception as exc:
                log.warning("reaping idle sandboxes failed: %s", exc)

    async def stop(self) -> None:
        """Stop accepting; give requests `grace_s`; cancel the rest; remove containers."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        if self._handlers:
            log.info("stopping: %d requests in flight", len(self._handlers))
            await asyncio.wait(set(self._handlers), timeout=self.grace_s)
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:  # their commands are being stopped and swept
            await asyncio.wait(set(self._handlers), timeout=30)
        await self.sandboxes.close(stop=True)
        log.info("broker stopped")

    # -- one connection, one request -------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stopping or len(self._handlers) >= self.max_connections:
            with contextlib.suppress(Exception):
                why = "stopping" if self.stopping else "busy"
                text = (
                    "the broker is stopping"
                    if self.stopping
                    else f"busy: the broker is serving {self.max_connections} requests; try again"
                )
                await write_message(writer, protocol.error(why, text))
            await _linger(reader, writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)
            await _linger(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    message = await read_message(reader)
            except TimeoutError:
                raise ProtocolError(
                    f"no complete request within {REQUEST_TIMEOUT_S:.0f} s", "timeout"
                ) from None
            if message is None:
                return
            request = protocol.request(message)
            await self._dispatch(request, reader, writer)
        except ProtocolError as exc:
            log.warning("refused a request (peer uid %s): %s", _peer_uid(writer), exc)
            await self._reply(writer, protocol.error(exc.code, str(exc)))
        except SandboxError as exc:
            await self._reply(writer, protocol.error(exc.code, str(exc)))
        except ValueError as exc:  # a path that leaves the workspace, and the like
            await self._reply(writer, protocol.error("bad_request", str(exc)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except asyncio.CancelledError:
            await self._reply(writer, protocol.error("stopping", "the broker is stopping"))
            raise
        except Exception as exc:
            log.exception("request failed")
            await self._reply(writer, protocol.error("internal", f"the broker failed: {exc}"))

    async def _reply(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await write_message(writer, message)

    async def _dispatch(
        self, request: protocol.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        boxes = self.sandboxes
        match request:
            case protocol.Exec():
                await self._exec(request, reader, writer)
            case protocol.Put():
                data = self._incoming(reader, request.size)
                result = await boxes.put(
                    request.room, request.path, request.size, data, request.ask
                )
                await write_message(writer, protocol.ok({"wall_s": result.wall_s}))
            case protocol.Get():
                await self._get(request, writer)
            case protocol.ListFiles():
                entries = await boxes.list_files(request.room, request.path, request.ask)
                await write_message(writer, protocol.ok({"entries": entries}))
            case protocol.Ensure():
                notes = await boxes.ensure(request.room, request.ask)
                await write_message(writer, protocol.ok({"notes": notes}))
            case protocol.Reset():
                await boxes.reset(request.room)
                await write_message(writer, protocol.ok())
            case protocol.Remove():
                await boxes.remove(request.room)
                await write_message(writer, protocol.ok())
            case protocol.ListSandboxes():
                await write_message(writer, protocol.ok({"sandboxes": await boxes.mine()}))
            case protocol.Health():
                await write_message(writer, protocol.ok(await boxes.health()))
            case protocol.Probe():
                probe = await boxes.probe()
                await write_message(
                    writer, protocol.ok({"enforced": probe.enforced, "missing": probe.missing})
                )

    async def _incoming(self, reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
        """Exactly `size` bytes of data frames from the client, each within the frame
        deadline; more, less or anything else is refused."""
        left = size
        while left > 0:
            try:
                async with asyncio.timeout(FRAME_TIMEOUT_S):
                    message = await read_message(reader)
            except TimeoutError:
                raise ProtocolError(
                    f"no data for {FRAME_TIMEOUT_S:.0f} s ({left} bytes still expected)", "timeout"
                ) from None
            if message is None:
                raise ProtocolError(f"the client stopped sending with {left} bytes to go")
            piece = protocol.data(message, min(DATA_CHUNK, left))
            left -= len(piece)
            yield piece

    async def _exec(
        self, request: protocol.Exec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stdin_read = asyncio.Event()
        failure: list[BaseException] = []

        async def stdin() -> AsyncIterator[bytes]:
            try:
                async for piece in self._incoming(reader, request.stdin):
                    yield piece
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                stdin_read.set()

        async def forward() -> None:
            events = self.sandboxes.stream(
                request.room,
                list(request.argv),
                request.ask,
                stdin=stdin() if request.stdin else None,
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, Output):
                        message = (protocol.out if event.stream == 1 else protocol.err)(event.data)
                        await write_message(writer, message)
                    elif isinstance(event, Ended):
                        final = {**event.as_dict(), "counters": dict(self.sandboxes.counters)}
                        await write_message(writer, {"exit": final})

        async def hangup() -> None:
            """Returns when the client closes its side (or sends more than it should)."""
            await stdin_read.wait()
            await reader.read(1)

        if not request.stdin:
            stdin_read.set()
        running = asyncio.ensure_future(forward())
        watching = asyncio.ensure_future(hangup())
        try:
            await asyncio.wait({running, watching}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the broker is stopping: stop the command first
            await _stopped(running)
            raise
        finally:
            watching.cancel()
        if not running.done():  # the client is gone: stop its command
            log.info("client left during a command in %s; stopping it", request.room)
            await _stopped(running)
            return
        running.result()
        if failure and isinstance(failure[0], ProtocolError):
            log.warning("stdin for %s ended early: %s", request.room, failure[0])

    async def _get(self, request: protocol.Get, writer: asyncio.StreamWriter) -> None:
        size = 0
        pieces = self.sandboxes.open_file(
            request.room, request.path, request.max_bytes, request.ask
        )
        pending = b""
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                pending += piece
                while len(pending) >= DATA_CHUNK:
                    await write_message(writer, protocol.chunk(pending[:DATA_CHUNK]))
                    pending = pending[DATA_CHUNK:]
                size += len(piece)
        if pending:
            await write_message(writer, protocol.chunk(pending))
        await write_message(writer, protocol.ok({"size": size}))


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close so the last reply arrives: closing a Unix socket with unread input makes the
    kernel reset the connection, and the client may lose the reply. So: half-close, discard
    what the client still sends (bounded in bytes and time), then close."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            left = protocol.MAX_FRAME * 4
            while left > 0 and (data := await reader.read(65536)):
                left -= len(data)
    except (OSError, TimeoutError, asyncio.CancelledError, RuntimeError):
        pass
    finally:
        writer.close()


async def _stopped(task: asyncio.Future[None]) -> None:
    """Cancel a command's task and wait while it stops the command and sweeps up."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def serve(
    sandboxes: Sandboxes,
    socket_path: Path,
    *,
    mode: int = 0o660,
    grace_s: float = 10.0,
    owned: bool = False,
    max_connections: int = MAX_CONNECTIONS,
) -> int:
    """Run the broker until SIGTERM/SIGINT (or, when `owned`, until stdin closes: the
    gateway that started it is gone). Returns the exit status."""
    lock = lock_state(sandboxes.state_dir)
    sock = bind(socket_path, mode)
    identity = socket_path.stat().st_ino
    broker = Broker(sandboxes, grace_s=grace_s, max_connections=max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = await _stop_when_stdin_closes(stop) if owned else None
    try:
        await broker.start(sock)
        log.info("sandbox broker listening on %s (install %s)", socket_path, sandboxes.install)
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await broker.stop()
        with contextlib.suppress(FileNotFoundError):
            if socket_path.stat().st_ino == identity:
                socket_path.unlink()
        os.close(lock)
    return 0


async def _stop_when_stdin_closes(stop: asyncio.Event) -> asyncio.Task[None]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol_ = asyncio.StreamReaderProtocol(reader)
    await loop.connect_read_pipe(lambda: protocol_, sys.stdin)

    async def watch() -> None:
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass
        stop.set()

    return loop.create_task(watch())
