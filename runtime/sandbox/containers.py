"""One warm, hardened container per room, driven through the engine. The broker's core.

How a command ended is never read from its output, which the command controls:
- its exit code is the engine's (exec inspect);
- its time limit is kept by this process's clock: at the limit everything the command
  started gets SIGTERM, a second later SIGKILL, and it is reported as a time-out whatever
  its exit status;
- after it, the engine's process list of the container (`top`) must show nothing but init
  and its keeper, which run under a uid of their own; anything else is killed (a sweep run
  as the sandbox user, `kill -KILL -1`, which cannot reach the keeper) and the list checked
  again; a container that still is not clean is discarded, its workspace kept;
- a memory kill is the engine's `oom` event for that container between the exec's own start
  and end events (watch.py).

The Docker SDK blocks, so control calls run on the engine's thread pool; each room's
commands run in order, rooms run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import Attached, Engine
from .policy import (
    LABEL_INSTALL,
    LABEL_KIND,
    LABEL_LIMITS,
    Ceilings,
    Limits,
    Request,
    container_name,
    container_options,
    effective,
    exec_options,
    leftovers,
    workspace_path,
)
from .registry import Registry
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
from .watch import Watch, oom_in_window
from .workspace import Workspaces

__all__ = ["ExecResult", "Output", "ProbeResult", "SandboxError", "Sandboxes"]

log = logging.getLogger("potluck.sandbox")

MAX_FILE_BYTES = 8 * 1024 * 1024
FILE_TIMEOUT_S = 60  # file operations are our own scripts: a fixed limit, not the recipe's
TERM_GRACE_S = 1.0
SETTLE_S = 2.0  # how long a swept container may take to show a clean process list
HOLD_GRACE_S = 0.2  # after the command exits, how long its output may take to close
EXIT_POLL_S = 0.25
# Builtins only (no fork), so it runs even when a bomb took the other process slots.
# kill(-1) reaches every process of the sandbox user in the container but this shell; init
# and its keeper run as another uid and are out of its reach.
SWEEP = 'for _ in 1 2 3 4 5 6 7 8; do kill -s "$1" -1 2>/dev/null || exit 0; done'
# $1: the target; $2: its size. The bytes arrive on stdin; the file appears whole or not at
# all (a short stdin, a full disk: the temporary file is removed, nothing replaced).
PUT = (
    't=; trap \'[ -n "$t" ] && rm -f -- "$t"\' EXIT; set -e\n'
    'd=$(dirname -- "$1"); mkdir -p -- "$d"\n'
    't=$(mktemp -- "$d/.potluck-put.XXXXXX")\n'
    'cat > "$t"\n'
    'n=$(stat -c %s -- "$t")\n'
    'if [ "$n" != "$2" ]; then echo "only $n of $2 bytes arrived" >&2; exit 4; fi\n'
    'chmod 644 -- "$t"; mv -f -T -- "$t" "$1"; t=\n'
)
# $1: the file; $2: how many bytes at most. Exit 2: missing; 3: not a regular file; else
# head's own status, so an unreadable file is an error, not empty content.
GET = (
    'if [ ! -e "$1" ]; then echo "no such file" >&2; exit 2; fi\n'
    'if [ ! -f "$1" ]; then echo "not a regular file" >&2; exit 3; fi\n'
    'exec head -c "$2" -- "$1"\n'
)
LIST = (
    "cd -- \"$1\" && find . -mindepth 1 -maxdepth 4 -not -path '*/.git/*' "
    "-not -name lost+found -printf '%y %s %P\\n' | sort -k3 | head -n 500"
)


@dataclass(frozen=True)
class Output:
    stream: int  # 1 stdout, 2 stderr
    data: bytes


@dataclass
class _Box:
    container_id: str
    init_pid: int
    limits_key: str
    last_used: float


def _engine_down(exc: BaseException) -> EngineDown:
    return EngineDown(
        f"the Docker engine does not answer ({exc.__class__.__name__}); sandboxes are back "
        "once it is (start it with deploy/engine.sh)"
    )


def _is_connection_error(exc: BaseException) -> bool:
    """No answer from the engine at all (as opposed to an answer we did not like: docker-py's
    APIError is an HTTPError, itself an OSError, so the order of these tests matters)."""
    import requests

    if isinstance(exc, requests.exceptions.HTTPError):
        return False
    return isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | ConnectionError
        | FileNotFoundError,
    ) or (exc.__class__.__name__ == "DockerException" and "connection" in str(exc).lower())


def _gone(exc: BaseException) -> bool:
    """The container is not there or not running: a fresh one is the answer."""
    import docker.errors

    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    return isinstance(exc, docker.errors.NotFound) or status in (404, 409)


class Sandboxes:
    """All sandboxes of one install. The registry says what is ours; nothing else on the
    engine is used, adopted or removed, whatever its name or labels."""

    def __init__(
        self,
        state_dir: Path,
        install: str = "default",
        client: Any = None,
        ceilings: Ceilings | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.engine = engine or Engine(client=client)
        self.client = self.engine.client
        self.api = self.engine.api
        self.install = re.sub(r"[^a-z0-9]", "", install.lower())[:16] or "default"
        self.ceilings = ceilings or Ceilings()
        self.image = self.ceilings.image
        self.state_dir = state_dir
        self.workspaces = Workspaces(
            self.client, self.install, state_dir, self.ceilings.workspace_bytes
        )
        self.registry = Registry(state_dir / "sandboxes.json")
        self.watch = Watch(self.api, self.install)
        self._boxes: dict[str, _Box] = {}
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._starting: set[str] = set()  # rooms whose container is being created
        self._ready_lock = asyncio.Lock()
        self._ready = False
        self.counters = {
            "starts": 0,
            "execs": 0,
            "kills": 0,
            "timeouts": 0,
            "ooms": 0,
            "replaced": 0,
        }

    async def _engine(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.engine.call(fn, *args, **kwargs)
        except Exception as exc:
            if _is_connection_error(exc):
                raise _engine_down(exc) from None
            raise

    async def start(self) -> None:
        """Follow the engine's events; cap the CPU ceiling at what the engine has."""
        async with self._ready_lock:
            if self._ready:
                return
            await self._engine(self.engine.negotiate)
            info = await self._engine(self.client.info)
            capped = self.ceilings.within_host(int(info.get("NCPU") or 0))
            if capped != self.ceilings:
                log.warning(
                    "sandbox cpus ceiling %s is above this engine's %s CPUs; using %s",
                    self.ceilings.cpus,
                    info.get("NCPU"),
                    capped.cpus,
                )
                self.ceilings = capped
            self.watch.start()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.watch.connected.wait()
            self._ready = True

    def _lock(self, room: str) -> asyncio.Lock:
        return self._room_locks.setdefault(room, asyncio.Lock())

    def limits(self, request: Request | None) -> tuple[Limits, list[str]]:
        return effective(request, self.ceilings)

    # -- containers ------------------------------------------------------------------------

    def _remove_blocking(self, room: str, container: Any) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
        self.registry.forget(room, container.id)

    def _create(self, room: str, limits: Limits) -> _Box:
        """Blocking: the room's own container, started, with these limits: the recorded one
        when it still fits, else a new one. Never one we did not create."""
        import docker.errors

        containers = self.client.containers
        container = None
        if known := self.registry.get(room):
            try:
                container = containers.get(known)
            except docker.errors.NotFound:
                self.registry.forget(room, known)
        if container is not None and container.labels.get(LABEL_LIMITS) != limits.container_key:
            self._remove_blocking(room, container)  # other limits asked: a new container
            container = None
        if container is not None and container.status != "running":
            try:
                self.workspaces.ensure(room)  # a reboot may have dropped the loop device
                container.start()
                self.counters["starts"] += 1
            except docker.errors.APIError as exc:
                log.warning("sandbox for %s would not restart (%s); recreating it", room, exc)
                self._remove_blocking(room, container)
                container = None
        if container is None:
            container = self._new(room, limits)
        container.reload()
        return _Box(container.id, int(container.attrs["State"]["Pid"]), limits.container_key, 0.0)

    def _new(self, room: str, limits: Limits) -> Any:
        import docker.errors

        name = container_name(self.install, room)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name)
            raise NotMine(
                f"a container named {name} exists that this broker did not create; it is left "
                f"alone (if it is stale, remove it with `docker rm -f {name}`)"
            )
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"the sandbox image {self.image} is not on this Docker engine; "
                "run `potluck sandbox build` (it needs no registry)"
            ) from None
        workspace = self.workspaces.ensure(room)
        options = container_options(
            install=self.install,
            room=room,
            image=self.image,
            volume=workspace.volume,
            limits=limits,
        )
        try:
            container = self.client.containers.create(**options)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise NotMine(f"a container named {name} appeared meanwhile; left alone") from None
            raise SandboxError(f"the engine would not create the sandbox: {exc}") from None
        self.registry.remember(room, container.id)
        container.start()
        self.counters["starts"] += 1
        log.info("sandbox for %s started (%s)", room, container.short_id)
        return container

    async def _box(self, room: str, limits: Limits) -> _Box:
        box = self._boxes.get(room)
        if box is not None and box.limits_key != limits.container_key:
            await self._discard(room)
            box = None
        if box is None:
            await self._make_room_for(room)
            # the slot is taken before the (slow) create: rooms starting together would
            # otherwise each see room under the ceiling and all start; creates still overlap
            self._starting.add(room)
            try:
                box = await self._engine(self._create, room, limits)
            finally:
                self._starting.discard(room)
            self._boxes[room] = box
        box.last_used = time.monotonic()
        return box

    async def _make_room_for(self, room: str) -> None:
        """At the ceiling of running containers, the least recently used one that is not
        busy stops (its workspace stays); when every one is busy, the room is told to wait."""
        while len(self._boxes) + len(self._starting) >= self.ceilings.running:
            idle = [
                (box.last_used, other)
                for other, box in self._boxes.items()
                if other != room and not self._lock(other).locked()
            ]
            if not idle:
                raise SandboxError(
                    f"this install runs at most {self.ceilings.running} sandboxes at once and "
                    "all are busy; try again when another room's command has finished (the "
                    "owner can raise [sandbox] running)"
                )
            other = min(idle)[1]
            async with self._lock(other):
                if other in self._boxes:
                    await self._discard(other)

    async def _discard(self, room: str) -> None:
        """Remove the room's container (only ever the one we recorded); the workspace stays."""
        import docker.errors

        self._boxes.pop(room, None)
        if known := self.registry.get(room):
            try:
                container = await self._engine(self.client.containers.get, known)
            except docker.errors.NotFound:
                self.registry.forget(room, known)
                return
            await self._engine(self._remove_blocking, room, container)

    # -- running commands ------------------------------------------------------------------

    async def _start_exec(
        self, room: str, limits: Limits, argv: list[str], stdin: bool
    ) -> tuple[_Box, str, Attached]:
        for attempt in (1, 2):
            box = await self._box(room, limits)
            try:
                created = await self._engine(
                    self.api.exec_create, box.container_id, **exec_options(argv, stdin)
                )
                return box, created["Id"], await self.engine.attach(created["Id"])
            except Exception as exc:
                if isinstance(exc, SandboxError) or not _gone(exc):
                    raise
                # The container died under us (engine restart, removed by hand): once more,
                # with a fresh one.
                self._boxes.pop(room, None)
                if attempt == 2:
                    raise SandboxError(f"the sandbox could not run it: {exc}") from None
        raise AssertionError("unreachable")

    async def _sweep(self, box: _Box, signal: str) -> None:
        """Signal every process of the sandbox user in the container (not init, not the
        keeper). May fail under a bomb (no process slot for it); `_clean` then says so."""
        try:
            created = await self._engine(
                self.api.exec_create,
                box.container_id,
                **exec_options(["bash", "-c", SWEEP, "sweep", signal], False),
            )
            async with asyncio.timeout(10):
                await self._engine(self.api.exec_start, created["Id"])
        except Exception as exc:
            log.debug("sweep %s in %s failed: %s", signal, box.container_id[:12], exc)

    async def _leftovers(self, box: _Box) -> list[dict[str, str]] | None:
        """What runs in the container besides init and its keeper; None if the engine cannot
        list it (the container is gone)."""
        try:
            return leftovers(await self.engine.top(box.container_id), box.init_pid)
        except Exception as exc:
            if _is_connection_error(exc):
                raise _engine_down(exc) from None
            return None

    async def _clean(self, box: _Box) -> bool:
        """Wait (briefly) until the engine lists nothing but init and its keeper."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            found = await self._leftovers(box)
            if found == []:
                return True
            if found is None or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)

    async def _main_exit(self, exec_id: str) -> None:
        """Returns once the engine says the command's main process has exited: from the
        event stream or, since the engine holds `exec_die` back while something keeps the
        output open, from the exec's own state, asked every quarter of a second."""
        while True:
            if await self.watch.ended(exec_id, EXIT_POLL_S):
                return
            if not await self._running(exec_id):
                return

    async def _running(self, exec_id: str) -> bool:
        try:
            info = await self._engine(self.api.exec_inspect, exec_id)
        except Exception as exc:  # the engine went away: the clean-up will find out
            log.debug("exec %s could not be inspected: %s", exec_id[:12], exc)
            return False
        return bool(info.get("Running"))

    async def stream(
        self,
        room: str,
        argv: list[str],
        request: Request | None = None,
        *,
        stdin: AsyncIterator[bytes] | None = None,
        cap: int | None = None,
        timeout_s: int | None = None,
    ) -> AsyncIterator[Output | Ended]:
        """Run argv in the room's workspace as the sandbox user: its output as it comes
        (the first `cap` bytes of each stream), then one `Ended`. Stopping the iteration
        early stops the command, and the container is swept or replaced as after any."""
        await self.start()
        limits, notes = self.limits(request)
        cap = cap or limits.output_cap_bytes
        limit = timeout_s or limits.exec_timeout_s
        async with self._lock(room):
            box, exec_id, attached = await self._start_exec(room, limits, argv, stdin is not None)
            run = _Run(self, room, box, exec_id, attached, cap, limit, stdin)
            finished = False
            try:
                async with contextlib.aclosing(run.events(notes)) as events:
                    async for event in events:
                        yield event
                finished = True
            finally:
                if not finished:
                    await _uninterruptible(run.abandon())
                run.stop_tasks()

    async def run(
        self,
        room: str,
        argv: list[str],
        request: Request | None = None,
        *,
        stdin: bytes = b"",
        label: str | None = None,
        cap: int | None = None,
        timeout_s: int | None = None,
    ) -> ExecResult:
        """Run argv and collect its result."""
        limits, _ = self.limits(request)
        collected = Collected(cap or limits.output_cap_bytes)
        feed = _chunks(stdin) if stdin else None
        events = self.stream(
            room, argv, request, stdin=feed, cap=collected.cap, timeout_s=timeout_s
        )
        ended = await _collect(events, collected)
        return exec_result(label or " ".join(argv), collected, ended)

    async def exec(self, room: str, command: str, request: Request | None = None) -> ExecResult:
        """Run a shell command in the room's workspace."""
        return await self.run(room, ["bash", "-c", command], request, label=command)

    # -- files -----------------------------------------------------------------------------

    async def put(
        self,
        room: str,
        path: str,
        size: int,
        data: AsyncIterator[bytes],
        request: Request | None = None,
    ) -> ExecResult:
        """Write `size` bytes arriving from `data` to a file in the workspace, atomically."""
        target = workspace_path(path)
        if size > MAX_FILE_BYTES:
            raise SandboxError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES} limit")
        collected = Collected(4096)
        argv = ["bash", "-c", PUT, "put", target, str(size)]
        events = self.stream(
            room, argv, request, stdin=data, cap=collected.cap, timeout_s=FILE_TIMEOUT_S
        )
        result = exec_result(path, collected, await _collect(events, collected))
        if result.exit_code != 0 or result.timed_out:
            why = result.stderr.strip()[-300:] or result.summary()
            raise SandboxError(f"could not write {path}: {why}")
        return result

    async def write_file(
        self, room: str, path: str, data: bytes, request: Request | None = None
    ) -> ExecResult:
        return await self.put(room, path, len(data), _chunks(data), request)

    async def open_file(
        self, room: str, path: str, max_bytes: int = 256 * 1024, request: Request | None = None
    ) -> AsyncIterator[bytes]:
        """The first max_bytes of a file, in pieces as they come; raises SandboxError at the
        end when the file could not be read (missing, not a file, not readable)."""
        target = workspace_path(path)
        max_bytes = max(1, min(max_bytes, MAX_FILE_BYTES))
        errors = Collected(4096)
        ended = None
        argv = ["bash", "-c", GET, "get", target, str(max_bytes)]
        events = self.stream(room, argv, request, cap=max_bytes, timeout_s=FILE_TIMEOUT_S)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Output):
                    if event.stream == 1:
                        yield event.data
                    else:
                        errors.add(2, event.data)
                else:
                    ended = event
        assert ended is not None
        if ended.timed_out or ended.exit_code != 0:
            why = errors.err.decode("utf-8", errors="replace").strip()
            if ended.exit_code == 2:
                raise SandboxError(f"{path}: no such file in the workspace")
            if ended.exit_code == 3:
                raise SandboxError(f"{path}: not a regular file")
            raise SandboxError(f"{path}: could not be read ({why[-200:] or 'no reason given'})")

    async def read_file(
        self, room: str, path: str, max_bytes: int = 256 * 1024, request: Request | None = None
    ) -> bytes:
        async with contextlib.aclosing(self.open_file(room, path, max_bytes, request)) as pieces:
            return b"".join([piece async for piece in pieces])

    async def list_files(
        self, room: str, path: str = ".", request: Request | None = None
    ) -> list[str]:
        target = workspace_path(path)
        result = await self.run(
            room, ["bash", "-c", LIST, "ls", target], request, label=f"ls {path}",
            timeout_s=FILE_TIMEOUT_S,
        )  # fmt: skip
        if result.exit_code != 0:
            raise SandboxError(f"{path}: no such folder in the workspace")
        return [line for line in result.stdout.splitlines() if line.strip()]

    # -- lifecycle -------------------------------------------------------------------------

    async def ensure(self, room: str, request: Request | None = None) -> list[str]:
        """The room's sandbox, warm; returns what of the request was capped."""
        await self.start()
        limits, notes = self.limits(request)
        async with self._lock(room):
            await self._box(room, limits)
        return notes

    async def remove(self, room: str) -> None:
        """Remove the room's container; its workspace stays."""
        async with self._lock(room):
            await self._discard(room)

    async def reset(self, room: str) -> None:
        """A fresh container and an empty workspace for the room."""
        async with self._lock(room):
            await self._discard(room)
            await self._engine(self.workspaces.remove, room)

    async def reap_idle(self, idle_s: float | None = None) -> list[str]:
        """Remove containers unused for idle_s; their workspaces stay."""
        limit = self.ceilings.idle_s if idle_s is None else idle_s
        reaped = []
        for room, box in list(self._boxes.items()):
            lock = self._lock(room)
            if lock.locked() or time.monotonic() - box.last_used < limit:
                continue
            async with lock:
                if self._boxes.get(room) is box:
                    await self._discard(room)
                    reaped.append(room)
        return reaped

    def strangers(self) -> list[Any]:
        """Blocking: containers labelled as this install's that we did not create."""
        filters = {"label": [f"{LABEL_INSTALL}={self.install}", f"{LABEL_KIND}=sandbox"]}
        found = self.client.containers.list(all=True, filters=filters)
        return [c for c in found if not self.registry.owns(c.id)]

    async def adopt(self) -> tuple[list[str], list[str]]:
        """After a restart: keep our running, clean containers warm; remove our stopped or
        unclean ones. Containers we did not create are left alone, whatever their labels."""
        import docker.errors

        await self.start()
        adopted, removed = [], []
        for room, known in self.registry.rooms().items():
            try:
                container = await self._engine(self.client.containers.get, known)
            except docker.errors.NotFound:
                self.registry.forget(room, known)
                continue
            if container.status == "running":
                box = _Box(
                    container.id,
                    int(container.attrs["State"]["Pid"]),
                    container.labels.get(LABEL_LIMITS, ""),
                    time.monotonic(),
                )
                if await self._leftovers(box) == []:
                    self._boxes[room] = box
                    adopted.append(room)
                    continue
            await self._engine(self._remove_blocking, room, container)
            removed.append(room)
        for stranger in await self._engine(self.strangers):
            log.warning(
                "container %s carries this install's labels but this broker did not create "
                "it; left alone (remove it by hand if it is stale)",
                stranger.name,
            )
        return adopted, removed

    async def mine(self) -> list[dict[str, Any]]:
        """This install's sandboxes (the ones we created), with their state."""
        import docker.errors

        found = []
        for room, known in sorted(self.registry.rooms().items()):
            try:
                container = await self._engine(self.client.containers.get, known)
                state = container.status
            except docker.errors.NotFound:
                state = "missing"
            box = self._boxes.get(room)
            idle = round(time.monotonic() - box.last_used, 1) if box else None
            found.append({"room": room, "state": state, "container": known[:12], "idle_s": idle})
        return found

    async def close(self, stop: bool = True) -> None:
        """Remove our containers (workspaces stay) unless told not to; stop following."""
        if stop:
            for room in list(self.registry.rooms()):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(30):
                        await self._discard(room)
        self.watch.stop()
        self.engine.close()

    # -- what this engine and kernel enforce -----------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Engine reachable? Image present? The ceilings in force. Never raises."""
        from .image import current_tag, image_present

        report: dict[str, Any] = {
            "install": self.install,
            "ceilings": self.ceilings.as_dict(),
            "counters": dict(self.counters),
            "sandboxes": len(self.registry.rooms()),
            "workspace_capped": bool(self.workspaces.loop),
        }
        try:
            await self.start()
            version = await self._engine(self.client.version)
            report["ceilings"] = self.ceilings.as_dict()
        except Exception as exc:
            report["engine"] = {"ok": False, "version": "", "error": str(exc)}
            report["image"] = {"name": self.image, "present": False, "current": ""}
            return report
        report["engine"] = {"ok": True, "version": str(version.get("Version", "?")), "error": ""}
        present = await self._engine(image_present, self.client, self.image)
        tag = current_tag()
        current = await self._engine(image_present, self.client, tag)
        report["image"] = {
            "name": self.image,
            "present": present,
            "current": tag if current else "",
        }
        return report

    async def probe(self) -> ProbeResult:
        """Run a throwaway sandbox and read back which limits are really in force."""
        from ..recipes.schema import SandboxPolicy

        room = "__probe__"
        asked = SandboxPolicy(memory="256m", pids=64, cpus=0.5, exec_timeout_s=20)
        limits, _ = self.limits(asked)
        script = (
            "echo uid=$(id -u); grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\\t';"
            "echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
            "|| cat /sys/fs/cgroup/memory.max 2>/dev/null);"
            "echo pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null "
            "|| cat /sys/fs/cgroup/pids.max 2>/dev/null);"
            "echo cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null "
            "|| cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null);"
            "echo net=$(ls /sys/class/net | tr '\\n' ,);"
            "touch /probe 2>/dev/null && echo root=writable || echo root=readonly;"
            "echo ws=$(df -B1 --output=size /workspace | tail -1 | tr -d ' ');"
            "echo nofile=$(ulimit -n);"
            "kill -0 1 2>/dev/null && echo init=reachable || echo init=out-of-reach"
        )
        try:
            result = await self.run(room, ["bash", "-c", script], asked, label="probe")
        finally:
            await self.reset(room)
        facts = dict(
            line.split("=", 1) if "=" in line else line.split(":", 1)
            for line in result.stdout.splitlines()
            if "=" in line or ":" in line
        )
        enforced: dict[str, str] = {}
        missing: dict[str, str] = {}

        def check(name: str, ok: bool, detail: str) -> None:
            (enforced if ok else missing)[name] = detail

        memory = str(limits.memory_bytes)
        check("non-root user", facts.get("uid") == "10001", f"uid {facts.get('uid')}")
        check("no capabilities", facts.get("CapEff", "").strip("0") == "", facts.get("CapEff", ""))
        check("no-new-privileges", facts.get("NoNewPrivs") == "1", "NoNewPrivs")
        check("memory limit", facts.get("mem") == memory, f"{facts.get('mem')} bytes")
        check("pids limit", facts.get("pids") == str(limits.pids), f"pids.max {facts.get('pids')}")
        check("cpu limit", facts.get("cpu") not in (None, "", "-1", "max"), f"{facts.get('cpu')}")
        check("no network", facts.get("net") in ("lo,", ""), f"interfaces {facts.get('net')}")
        check("read-only root", facts.get("root") == "readonly", "touch / refused")
        check("nofile ulimit", facts.get("nofile") == "1024", f"{facts.get('nofile')}")
        check(
            "init out of the sandbox user's reach",
            facts.get("init") == "out-of-reach",
            "init and its keeper run as their own uid",
        )
        ws = int(facts.get("ws") or 0)
        check(
            "workspace size cap",
            bool(self.workspaces.loop) and 0 < ws <= self.ceilings.workspace_bytes,
            f"{ws // 1024**2} MiB ext4 image on a loop device"
            if self.workspaces.loop
            else "no loop devices here (broker not root?): workspace is an uncapped volume",
        )
        info = await self._engine(self.client.info)
        security = ",".join(info.get("SecurityOptions") or []) or "none"
        check("seccomp profile", "seccomp" in security, security)
        missing.setdefault("storage_opt quota", "needs xfs+pquota; replaced by the ext4 image")
        missing.setdefault("AppArmor", "not available on this engine")
        for line in ProbeResult(enforced, missing).lines():
            log.info("sandbox %s", line)
        return ProbeResult(enforced, missing)


class _Run:
    """One exec in flight: its output pump, its stdin feeder, its end, its clean-up."""

    def __init__(
        self,
        boxes: Sandboxes,
        room: str,
        box: _Box,
        exec_id: str,
        attached: Attached,
        cap: int,
        limit_s: int,
        stdin: AsyncIterator[bytes] | None,
    ) -> None:
        self.boxes = boxes
        self.room = room
        self.box = box
        self.exec_id = exec_id
        self.attached = attached
        self.cap = cap
        self.limit_s = limit_s
        self.replaced = False
        self.started = time.monotonic()
        self.started_at = time.time()
        self.totals = {1: 0, 2: 0}
        self.sent = {1: 0, 2: 0}
        self.queue: asyncio.Queue[Output | None] = asyncio.Queue(maxsize=64)
        self.tasks = [asyncio.ensure_future(self._pump())]
        if stdin is not None:
            self.tasks.append(asyncio.ensure_future(self._feed(stdin)))
        else:
            attached.end_input()
        self.exited = asyncio.ensure_future(boxes._main_exit(exec_id))
        self.tasks.append(self.exited)

    async def _pump(self) -> None:
        """Engine frames into the queue: capped per stream, everything counted."""
        try:
            while (frame := await self.attached.next()) is not None:
                stream = 1 if frame.stream == 1 else 2
                self.totals[stream] += len(frame.data)
                room = self.cap - self.sent[stream]
                if room > 0 and frame.data:
                    piece = frame.data[:room]
                    self.sent[stream] += len(piece)
                    await self.queue.put(Output(stream, piece))
        finally:
            await self.queue.put(None)

    async def _feed(self, stdin: AsyncIterator[bytes]) -> None:
        try:
            async for piece in stdin:
                await self.attached.send(piece)
        except Exception as exc:  # the caller's source failed: the command sees EOF
            log.debug("stdin for %s ended early: %s", self.exec_id[:12], exc)
        finally:
            self.attached.end_input()

    async def events(self, notes: list[str]) -> AsyncIterator[Output | Ended]:
        """Output until the command's main process has exited and its output is closed, or
        until the time limit; then the clean-up and the `Ended`."""
        deadline = self.started + self.limit_s
        eof = timed_out = False
        exited_at: float | None = None
        getter: asyncio.Future[Output | None] | None = None
        try:
            while True:
                if exited_at is None and self.exited.done():
                    exited_at = time.monotonic()
                if eof and exited_at is not None:
                    break
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    timed_out = True
                    break
                if exited_at is not None and not eof:
                    # the command is over but something still holds its output open: a
                    # moment for the last bytes, then that something is a leftover
                    grace = exited_at + HOLD_GRACE_S - now
                    if grace <= 0:
                        break
                    remaining = min(remaining, grace)
                pending: set[asyncio.Future[Any]] = set()
                if not eof:
                    if getter is None:
                        getter = asyncio.ensure_future(self.queue.get())
                    pending.add(getter)
                if not self.exited.done():
                    pending.add(self.exited)
                await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if getter is not None and getter.done():
                    item = getter.result()
                    getter = None
                    if item is None:
                        eof = True
                        if not self.exited.done() and not await self.boxes._running(self.exec_id):
                            exited_at = time.monotonic()  # the usual end: no need to wait
                    else:
                        yield item
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
        ended_at = deadline if timed_out else (exited_at or time.monotonic())
        async for event in self._finish(timed_out, eof, ended_at, notes):
            yield event

    async def _finish(
        self, timed_out: bool, eof: bool, ended_at: float, notes: list[str]
    ) -> AsyncIterator[Output | Ended]:
        boxes, box = self.boxes, self.box
        inspect = boxes._engine(boxes.api.exec_inspect, self.exec_id)
        # once the main process has exited its status is final: ask alongside the listing
        status = None if timed_out else asyncio.ensure_future(inspect)
        if timed_out:
            await boxes._sweep(box, "TERM")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TERM_GRACE_S):
                    await asyncio.shield(self.exited)
        found = await boxes._leftovers(box)
        killed = len(found) if found and not timed_out else 0
        if found or timed_out:
            await boxes._sweep(box, "KILL")
        clean = found == [] or await boxes._clean(box)
        if not clean:
            self.replaced = True  # not even a sweep left it clean: it goes (files stay)
            await boxes._discard(self.room)
        if not eof:  # the sweep (or the removal) closed the output: take what is left
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    while (item := await self.queue.get()) is not None:
                        yield item
        info: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            info = await (status or inspect)
        if status is not None:
            inspect.close()  # never awaited: the status was asked alongside the listing
        code = info.get("ExitCode")
        if info.get("Running") and not self.replaced:
            self.replaced = True
            await boxes._discard(self.room)
        oom = await self._oom()
        counters = boxes.counters
        counters["execs"] += 1
        counters["kills"] += killed
        counters["timeouts"] += int(timed_out)
        counters["ooms"] += int(oom)
        counters["replaced"] += int(self.replaced)
        yield Ended(
            exit_code=code if isinstance(code, int) else -1,
            wall_s=round(ended_at - self.started, 3),
            timed_out=timed_out,
            oom_killed=oom,
            leftovers_killed=killed,
            out_total=self.totals[1],
            err_total=self.totals[2],
            replaced=self.replaced,
            notes=tuple(notes),
        )

    async def _oom(self) -> bool:
        boxes = self.boxes
        await boxes.watch.ended(self.exec_id, 1.0)
        seen = boxes.watch.oom_during(self.box.container_id, self.exec_id)
        if seen is not None:
            return seen
        try:
            return bool(
                await boxes._engine(
                    oom_in_window, boxes.api, self.box.container_id, self.started_at, time.time()
                )
            )
        except Exception:
            return False

    async def abandon(self) -> None:
        """The caller stopped listening (it went away, or the broker is stopping): stop the
        command and leave the container clean, or discard it."""
        boxes, box = self.boxes, self.box
        self.attached.close()
        await boxes._sweep(box, "KILL")
        if not await boxes._clean(box):
            self.replaced = True
            await boxes._discard(self.room)

    def stop_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.attached.close()


async def _uninterruptible(work: Any) -> None:
    """Finish clean-up even when the caller is being cancelled; cancel again afterwards."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except Exception as exc:
            log.warning("sandbox clean-up failed: %s", exc)
            break
    if cancelled:
        raise asyncio.CancelledError


async def _collect(events: AsyncIterator[Output | Ended], collected: Collected) -> Ended:
    """A command's output into `collected`, up to its end."""
    ended = None
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, Output):
                collected.add(event.stream, event.data)
            else:
                ended = event
    assert ended is not None
    return ended


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]
