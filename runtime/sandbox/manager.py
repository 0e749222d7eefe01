"""One warm, hardened container per room, driven through the Docker API.

The Docker SDK blocks, so every call runs on a thread pool of our own; each room's commands
run in order, rooms run side by side. A command runs inside a small wrapper that puts it
under `timeout`, then kills whatever it left behind and reports the cgroup's OOM-kill count,
so one `docker exec` gives the exit status, a timeout, a memory kill and a sweep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipes.schema import SandboxPolicy
from .policy import (
    DEFAULT_IMAGE,
    ENVIRONMENT,
    LABEL_INSTALL,
    LABEL_ROOM,
    USER,
    WORKSPACE,
    Limits,
    container_name,
    container_options,
    limits_for,
    workspace_path,
)
from .workspace import Workspaces

log = logging.getLogger("potluck.sandbox")

MARKER = "\x1epotluck-exec"
# $1: the command; $2: the timeout in seconds. Exit status is the command's. After the
# command, builtins only (no fork, so it works even when a bomb took every process slot):
# kill everything but tini (PID 1), its first child (the keeper) and this shell, in repeated
# passes since a fork bomb forks while it is swept; then read the cgroup's OOM-kill count.
WRAPPER = (
    'timeout --kill-after=1 "$2" bash -c "$1"; rc=$?\n'
    "read -r keeper _ < /proc/1/task/1/children; swept=0\n"
    "for _ in 1 2 3 4 5 6 7 8 9 10; do\n"
    "  found=0\n"
    "  for d in /proc/[0-9]*; do\n"
    "    p=${d#/proc/}\n"
    '    case " 1 $$ $keeper " in *" $p "*) continue ;; esac\n'
    '    read -r _ _ state _ < "$d/stat" 2>/dev/null || continue\n'
    '    [ "$state" = Z ] && continue\n'
    '    kill -9 "$p" 2>/dev/null && swept=$((swept+1)) && found=1\n'
    "  done\n"
    '  [ "$found" = 0 ] && break\n'
    "done\n"
    "oom=-1; f=/sys/fs/cgroup/memory/memory.oom_control\n"
    '[ -r "$f" ] && while read -r k v; do [ "$k" = oom_kill ] && oom=$v; done < "$f"\n'
    f'printf \'\\n{MARKER} %s %s %s\\n\' "$rc" "$swept" "$oom" >&2\n'
    "exit $rc\n"
)
MARKER_LINE = re.compile(rf"\n?{MARKER} (-?\d+) (\d+) (-?\d+)\n?$")
MAX_FILE_BYTES = 8 * 1024 * 1024
CHUNK = 64 * 1024  # raw bytes per exec argument when writing (base64 stays under 128 KiB)


class SandboxError(RuntimeError):
    """The sandbox could not be used; the message says what to do."""


@dataclass
class ExecResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    leftovers_killed: int = 0

    @property
    def digest(self) -> str:
        """What a receipt records of the output: its hash, not its text."""
        return hashlib.sha256((self.stdout + "\x00" + self.stderr).encode()).hexdigest()

    def summary(self) -> str:
        """One line for the room: how it ended."""
        if self.timed_out:
            how = "stopped: it ran past the time limit"
        elif self.oom_killed:
            how = "killed: it ran out of memory"
        else:
            how = f"exit {self.exit_code}"
        extra = []
        if self.truncated:
            extra.append("output truncated")
        if self.leftovers_killed:
            extra.append(f"{self.leftovers_killed} leftover processes killed")
        return f"{how} in {self.wall_s:.2f}s" + (f" ({', '.join(extra)})" if extra else "")


class _Capped:
    """Collects a stream up to a cap, then only counts; always keeps a short tail."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = b""
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if len(self.head) < self.cap:
            self.head += data[: self.cap - len(self.head)]
        self.tail = (self.tail + data)[-256:]

    def text(self) -> str:
        return self.head.decode("utf-8", errors="replace")


@dataclass
class _Box:
    container_id: str
    last_used: float
    oom_seen: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class ProbeResult:
    enforced: dict[str, str]
    missing: dict[str, str]

    def lines(self) -> list[str]:
        return [f"in force: {k} ({v})" for k, v in self.enforced.items()] + [
            f"NOT in force: {k} ({v})" for k, v in self.missing.items()
        ]


class Sandboxes:
    """All sandboxes of one gateway install. Labels mark what is ours; nothing else on the
    host is listed, adopted or removed."""

    def __init__(
        self,
        state_dir: Path,
        install: str = "default",
        client: Any = None,
        image: str = DEFAULT_IMAGE,
        workspace_bytes: int = 256 * 1024 * 1024,
        idle_s: float = 600.0,
    ) -> None:
        import docker

        self.client = client or docker.from_env(timeout=120)
        self.install = re.sub(r"[^a-z0-9]", "", install.lower())[:16] or "default"
        self.image = image
        self.idle_s = idle_s
        self.workspace_bytes = workspace_bytes
        self.workspaces = Workspaces(self.client, self.install, state_dir, workspace_bytes)
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sandbox")
        self._boxes: dict[str, _Box] = {}
        self._room_locks: dict[str, asyncio.Lock] = {}
        self.counters = {"starts": 0, "execs": 0, "kills": 0, "timeouts": 0, "ooms": 0}

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def _lock(self, room: str) -> asyncio.Lock:
        return self._room_locks.setdefault(room, asyncio.Lock())

    # -- containers ------------------------------------------------------------------------

    def _limits(self, policy: SandboxPolicy | None) -> Limits:
        limits = limits_for(policy or SandboxPolicy())
        return Limits(**{**limits.__dict__, "workspace_bytes": self.workspace_bytes})

    def _create(self, room: str, policy: SandboxPolicy | None) -> _Box:
        """Blocking: find the room's container (starting it if stopped) or create it."""
        import docker.errors

        image = (policy.image if policy else None) or self.image
        name = container_name(self.install, room)
        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound:
            container = None
        if container is not None:
            try:
                if container.status != "running":
                    self.workspaces.ensure(room)  # a reboot may have dropped the loop device
                    container.start()
                    self.counters["starts"] += 1
                return _Box(container.id, time.monotonic())
            except docker.errors.APIError as exc:
                log.warning("sandbox %s would not restart (%s); recreating it", name, exc)
                container.remove(force=True)
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"the sandbox image {image} is not on this Docker engine; "
                "run `potluck sandbox build` (it needs no registry)"
            ) from None
        workspace = self.workspaces.ensure(room)
        options = container_options(
            install=self.install,
            room=room,
            image=image,
            volume=workspace.volume,
            limits=self._limits(policy),
        )
        container = self.client.containers.create(**options)
        container.start()
        self.counters["starts"] += 1
        log.info("sandbox for %s started (%s)", room, container.short_id)
        return _Box(container.id, time.monotonic())

    async def _box(self, room: str, policy: SandboxPolicy | None) -> _Box:
        box = self._boxes.get(room)
        if box is None:
            box = await self._call(self._create, room, policy)
            self._boxes[room] = box
        box.last_used = time.monotonic()
        return box

    # -- running commands ------------------------------------------------------------------

    def _exec_blocking(
        self, box: _Box, argv: list[str], cap: int
    ) -> tuple[_Capped, _Capped, int | None]:
        api = self.client.api
        exec_id = api.exec_create(
            box.container_id,
            argv,
            user=USER,
            workdir=WORKSPACE,
            environment=dict(ENVIRONMENT),
            stdout=True,
            stderr=True,
        )["Id"]
        out, err = _Capped(cap), _Capped(cap)
        for stdout, stderr in api.exec_start(exec_id, stream=True, demux=True):
            if stdout:
                out.add(stdout)
            if stderr:
                err.add(stderr)
        return out, err, api.exec_inspect(exec_id).get("ExitCode")

    async def _run(
        self,
        room: str,
        script: str,
        *,
        policy: SandboxPolicy | None = None,
        cap: int | None = None,
        timeout_s: int | None = None,
        label: str | None = None,
    ) -> ExecResult:
        import docker.errors

        limits = self._limits(policy)
        timeout_s = timeout_s or limits.exec_timeout_s
        cap = cap or limits.output_cap_bytes
        argv = ["bash", "-c", WRAPPER, "potluck", script, str(timeout_s)]
        async with self._lock(room):
            for attempt in (1, 2):
                box = await self._box(room, policy)
                started = time.monotonic()
                job = asyncio.ensure_future(self._call(self._exec_blocking, box, argv, cap))
                try:
                    out, err, code = await asyncio.wait_for(
                        asyncio.shield(job), timeout=timeout_s + 10
                    )
                    break
                except TimeoutError:
                    # Something kept the output open past the timeout (a daemon holding
                    # stdout): kill the container; the workspace survives.
                    await self._discard(room, box)
                    with contextlib.suppress(Exception):
                        await job
                    self.counters["timeouts"] += 1
                    return ExecResult(
                        label or script, 137, "", "", time.monotonic() - started, timed_out=True
                    )
                except (docker.errors.NotFound, docker.errors.APIError) as exc:
                    # The container died under us (engine restart, removed by hand).
                    self._boxes.pop(room, None)
                    if attempt == 2:
                        raise SandboxError(f"the sandbox could not run it: {exc}") from None
            wall = time.monotonic() - started
            self.counters["execs"] += 1
            result = self._result(box, label or script, out, err, code, wall, cap)
            if not MARKER_LINE.search(err.tail.decode("utf-8", errors="replace")):
                # The wrapper could not finish (no process slots left, killed): the container
                # is in no state to trust, so the next command gets a fresh one.
                await self._discard(room, box)
            return result

    def _result(
        self,
        box: _Box,
        command: str,
        out: _Capped,
        err: _Capped,
        code: int | None,
        wall: float,
        cap: int,
    ) -> ExecResult:
        match = MARKER_LINE.search(err.tail.decode("utf-8", errors="replace"))
        stderr = err.text()
        if not match:
            stderr += "\n[the sandbox was overwhelmed and has been replaced; files are kept]"
        rc, swept, oom = (code if code is not None else -1), 0, -1
        if match:
            rc, swept, oom = int(match.group(1)), int(match.group(2)), int(match.group(3))
            stderr = MARKER_LINE.sub("", stderr) if err.total <= cap else stderr
        oom_killed = oom > box.oom_seen and rc == 137
        if oom >= 0:
            box.oom_seen = max(box.oom_seen, oom)
        truncated = out.total > cap or err.total > cap + 64
        stdout = out.text()
        if out.total > cap:
            stdout += f"\n[… {out.total - cap} more bytes of output not shown]"
        if err.total > cap + 64:
            stderr += f"\n[… {err.total - cap} more bytes of errors not shown]"
        timed_out = rc == 124
        self.counters["kills"] += swept
        self.counters["timeouts"] += int(timed_out)
        self.counters["ooms"] += int(oom_killed)
        return ExecResult(
            command, rc, stdout, stderr, wall, truncated, timed_out, oom_killed, swept
        )

    async def exec(
        self, room: str, command: str, policy: SandboxPolicy | None = None
    ) -> ExecResult:
        """Run a shell command in the room's workspace."""
        return await self._run(room, command, policy=policy)

    # -- files -----------------------------------------------------------------------------

    async def write_file(
        self, room: str, path: str, data: bytes, policy: SandboxPolicy | None = None
    ) -> ExecResult:
        target = workspace_path(path)
        if len(data) > MAX_FILE_BYTES:
            raise SandboxError(f"{path}: {len(data)} bytes is over the {MAX_FILE_BYTES} limit")
        first = 'mkdir -p -- "$(dirname -- "$P")" && : > "$P"'
        result = await self._run(room, f"P={_q(target)}; {first}", policy=policy, label=path)
        for offset in range(0, len(data), CHUNK):
            piece = base64.b64encode(data[offset : offset + CHUNK]).decode()
            result = await self._run(
                room,
                f"printf %s {piece} | base64 -d >> {_q(target)}",
                policy=policy,
                label=path,
            )
            if result.exit_code != 0:
                break
        if result.exit_code != 0:
            raise SandboxError(f"could not write {path}: {result.stderr.strip()[-300:]}")
        return result

    async def read_file(
        self, room: str, path: str, max_bytes: int = 256 * 1024, policy: SandboxPolicy | None = None
    ) -> bytes:
        target = workspace_path(path)
        script = f"test -f {_q(target)} && head -c {max_bytes} -- {_q(target)} | base64 -w0"
        result = await self._run(room, script, policy=policy, cap=max_bytes * 2, label=path)
        if result.exit_code != 0:
            raise SandboxError(f"{path}: no such file in the workspace")
        return base64.b64decode(result.stdout)

    async def list_files(
        self, room: str, path: str = ".", policy: SandboxPolicy | None = None
    ) -> list[str]:
        target = workspace_path(path)
        script = (
            f"cd {_q(target)} && find . -mindepth 1 -maxdepth 4 -not -path '*/.git/*' "
            "-not -name lost+found -printf '%y %s %P\\n' | sort -k3 | head -n 500"
        )
        result = await self._run(room, script, policy=policy, label=f"ls {path}")
        if result.exit_code != 0:
            raise SandboxError(f"{path}: no such folder in the workspace")
        return [line for line in result.stdout.splitlines() if line.strip()]

    # -- lifecycle -------------------------------------------------------------------------

    async def _discard(self, room: str, box: _Box | None = None) -> None:
        import docker.errors

        box = box or self._boxes.get(room)
        self._boxes.pop(room, None)
        name = container_name(self.install, room)
        with contextlib.suppress(docker.errors.NotFound):
            container = await self._call(self.client.containers.get, name)
            await self._call(container.remove, force=True)

    async def reset(self, room: str) -> None:
        """A fresh container and an empty workspace for the room."""
        async with self._lock(room):
            await self._discard(room)
            await self._call(self.workspaces.remove, room)

    async def reap_idle(self, idle_s: float | None = None) -> list[str]:
        """Remove containers unused for idle_s; their workspaces stay."""
        limit = self.idle_s if idle_s is None else idle_s
        now = time.monotonic()
        reaped = []
        for room, box in list(self._boxes.items()):
            if now - box.last_used >= limit and not self._lock(room).locked():
                await self._discard(room, box)
                reaped.append(room)
        return reaped

    def ours(self, kind: str = "sandbox") -> list[Any]:
        filters = {"label": [f"{LABEL_INSTALL}={self.install}", f"io.potluck.kind={kind}"]}
        if kind == "workspace":
            return self.client.volumes.list(filters=filters)
        return self.client.containers.list(all=True, filters=filters)

    async def adopt(self) -> tuple[list[str], list[str]]:
        """After a restart: keep our running containers warm, remove our stopped ones."""
        adopted, removed = [], []
        for container in await self._call(self.ours):
            room = container.labels.get(LABEL_ROOM, "")
            if container.status == "running" and room:
                self._boxes[room] = _Box(container.id, time.monotonic())
                adopted.append(room)
            else:
                await self._call(container.remove, force=True)
                removed.append(room)
        return adopted, removed

    async def close(self, stop: bool = True) -> None:
        """Stop our containers (workspaces stay) and the thread pool."""
        if stop:
            for room in list(self._boxes):
                await self._discard(room)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- what this kernel enforces ---------------------------------------------------------

    async def probe(self) -> ProbeResult:
        """Run a throwaway sandbox and read back which limits are really in force."""
        room = "__probe__"
        policy = SandboxPolicy(memory="256m", pids=64, cpus=0.5)
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
            "echo nofile=$(ulimit -n)"
        )
        try:
            result = await self._run(room, script, policy=policy, timeout_s=20)
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

        check("non-root user", facts.get("uid") == "10001", f"uid {facts.get('uid')}")
        check("no capabilities", facts.get("CapEff", "").strip("0") == "", facts.get("CapEff", ""))
        check("no-new-privileges", facts.get("NoNewPrivs") == "1", "NoNewPrivs")
        check("memory limit", facts.get("mem") == str(256 * 1024**2), f"{facts.get('mem')} bytes")
        check("pids limit", facts.get("pids") == "64", f"pids.max {facts.get('pids')}")
        check("cpu limit", facts.get("cpu") not in (None, "", "-1", "max"), f"{facts.get('cpu')}")
        check("no network", facts.get("net") in ("lo,", ""), f"interfaces {facts.get('net')}")
        check("read-only root", facts.get("root") == "readonly", "touch / refused")
        check("nofile ulimit", facts.get("nofile") == "1024", f"{facts.get('nofile')}")
        ws = int(facts.get("ws") or 0)
        check(
            "workspace size cap",
            self.workspaces.loop and 0 < ws <= self.workspace_bytes,
            f"{ws // 1024**2} MiB ext4 image on a loop device"
            if self.workspaces.loop
            else "no loop devices here (gateway not root?): workspace is an uncapped volume",
        )
        info = await self._call(self.client.info)
        security = ",".join(info.get("SecurityOptions") or []) or "none"
        check("seccomp profile", "seccomp" in security, security)
        missing.setdefault("storage_opt quota", "needs xfs+pquota; replaced by the ext4 image")
        missing.setdefault("AppArmor", "not available on this engine")
        for line in ProbeResult(enforced, missing).lines():
            log.info("sandbox %s", line)
        return ProbeResult(enforced, missing)


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)
