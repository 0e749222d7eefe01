"""What a sandbox container is allowed: pure functions from a request and the install's
ceilings to the limits in force and the Docker options that enforce them.

The hardening here is fixed. A recipe's `sandbox:` section is a *request*: it may ask for
less memory, fewer CPUs or processes and a shorter time limit than the install allows, never
more, and it cannot name an image, add a network, a capability, a writable root, a host path
or the gateway's environment. The broker computes the limits itself from the request and the
install's ceilings; it never trusts that the gateway did.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..recipes.schema import SANDBOX_IMAGE

USER = "10001:10001"  # every command an agent runs
# The container's init (tini) and its keeper run as a uid of their own: the sandbox user can
# neither signal nor trace them, and `kill -KILL -1` as the sandbox user sweeps everything
# else. The engine's process list then tells leftovers (any other uid) from the keeper.
KEEPER_USER = "10003:10003"
KEEPER_UID = KEEPER_USER.split(":")[0]
WORKSPACE = "/workspace"
DEFAULT_IMAGE = SANDBOX_IMAGE  # the recipe schema refuses any other
# Only these reach the container's environment: nothing of the gateway's (no API keys).
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORKSPACE,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
LABEL_MANAGED = "io.potluck.managed"
LABEL_INSTALL = "io.potluck.install"
LABEL_ROOM = "io.potluck.room"
LABEL_KIND = "io.potluck.kind"
LABEL_LIMITS = "io.potluck.limits"

MIN_MEMORY = 16 * 1024**2  # below this Docker refuses, or bash cannot start
OUTPUT_CAP = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource numbers for one sandbox, already within the install's ceilings."""

    memory_bytes: int
    nano_cpus: int
    pids: int
    exec_timeout_s: int
    output_cap_bytes: int = OUTPUT_CAP
    tmp_bytes: int = 64 * 1024 * 1024
    workspace_bytes: int = 256 * 1024 * 1024
    nofile: int = 1024
    nproc: int = 4096  # per uid across the host: the per-container cap is `pids`

    @property
    def container_key(self) -> str:
        """What a running container was created with: a request needing other numbers gets
        a new container (the workspace stays)."""
        return f"{self.memory_bytes}/{self.nano_cpus}/{self.pids}/{self.tmp_bytes}"


def default_cpus() -> float:
    return float(min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class Ceilings:
    """The most any recipe gets on this install (config `[sandbox]`), and the image."""

    image: str = DEFAULT_IMAGE
    memory_bytes: int = 1024**3
    cpus: float = 2.0
    pids: int = 256
    exec_timeout_s: int = 120
    workspace_bytes: int = 256 * 1024 * 1024
    idle_s: float = 600.0
    # Containers running at once, all rooms together: anyone who can add the bot to rooms
    # (an allow-list like `telegram:*`) could otherwise start one per room without end.
    running: int = 8

    def within_host(self, host_cpus: int) -> Ceilings:
        """The engine cannot give more CPUs than it has (Docker would refuse with a raw
        error): the ceiling is the smaller of the two."""
        if host_cpus > 0 and self.cpus > host_cpus:
            return Ceilings(**{**self.__dict__, "cpus": float(host_cpus)})
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "memory": format_size(self.memory_bytes),
            "cpus": self.cpus,
            "pids": self.pids,
            "exec_timeout_s": self.exec_timeout_s,
            "workspace": format_size(self.workspace_bytes),
            "idle_s": self.idle_s,
            "running": self.running,
        }


class Request(Protocol):
    """A recipe's `sandbox:` section, or the same four numbers as the broker receives them."""

    @property
    def memory(self) -> str: ...
    @property
    def cpus(self) -> float: ...
    @property
    def pids(self) -> int: ...
    @property
    def exec_timeout_s(self) -> int: ...


SIZE = re.compile(r"([1-9][0-9]*)([kmg])")


def parse_size(text: str) -> int:
    match = SIZE.fullmatch(str(text).strip().lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512m or 1g)")
    return int(match.group(1)) * {"k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]


def format_size(size: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _number(value: float) -> str:
    return f"{value:g}"


def effective(request: Request | None, ceilings: Ceilings) -> tuple[Limits, list[str]]:
    """The limits to apply for `request` on this install, and one sentence for each request
    that was capped (for the room: "memory 999999g asked, 1g allowed by this install").
    Pure; the gateway calls it to tell the room, the broker to build the container."""
    if request is None:
        from ..recipes.schema import SandboxPolicy

        request = SandboxPolicy()
    notes: list[str] = []

    def cap(what: str, asked: float, allowed: float, show: Any = _number) -> float:
        if asked > allowed:
            notes.append(f"{what} {show(asked)} asked, {show(allowed)} allowed by this install")
            return allowed
        return asked

    memory = int(cap("memory", parse_size(request.memory), ceilings.memory_bytes, format_size))
    if memory < MIN_MEMORY:
        notes.append(
            f"memory {request.memory} asked, {format_size(MIN_MEMORY)} is the least a sandbox gets"
        )
        memory = MIN_MEMORY
    cpus = cap("cpus", float(request.cpus), ceilings.cpus)
    pids = int(cap("pids", int(request.pids), ceilings.pids))
    timeout = int(cap("exec_timeout_s", int(request.exec_timeout_s), ceilings.exec_timeout_s))
    limits = Limits(
        memory_bytes=memory,
        nano_cpus=round(cpus * 1e9),
        pids=pids,
        exec_timeout_s=timeout,
        workspace_bytes=ceilings.workspace_bytes,
    )
    return limits, notes


def room_slug(room: str) -> str:
    """A stable, Docker-safe name for a room key such as `matrix:!abc:example.org`."""
    return hashlib.sha256(room.encode()).hexdigest()[:16]


def container_name(install: str, room: str) -> str:
    return f"potluck-sbx-{install}-{room_slug(room)}"


def volume_name(install: str, room: str) -> str:
    return f"potluck-ws-{install}-{room_slug(room)}"


def labels(install: str, room: str, kind: str) -> dict[str, str]:
    return {LABEL_MANAGED: "1", LABEL_INSTALL: install, LABEL_ROOM: room, LABEL_KIND: kind}


def container_options(
    *, install: str, room: str, image: str, volume: str, limits: Limits
) -> dict[str, Any]:
    """Keyword arguments for docker-py's `containers.create`: the hardened container."""
    return {
        "image": image,
        "name": container_name(install, room),
        "command": ["/usr/bin/tini", "--", "sleep", "infinity"],
        "user": KEEPER_USER,
        "working_dir": WORKSPACE,
        "environment": dict(ENVIRONMENT),
        "labels": {**labels(install, room, "sandbox"), LABEL_LIMITS: limits.container_key},
        "detach": True,
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "ipc_mode": "private",
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,  # no swap on top
        "nano_cpus": limits.nano_cpus,
        "pids_limit": limits.pids,
        "ulimits": [
            {"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile},
            {"Name": "nproc", "Soft": limits.nproc, "Hard": limits.nproc},
            {"Name": "core", "Soft": 0, "Hard": 0},
        ],
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_bytes},mode=1777"},
        "volumes": {volume: {"bind": WORKSPACE, "mode": "rw"}},
        "hostname": "sandbox",
        "init": False,  # tini is PID 1 inside the image
        "auto_remove": False,
        "restart_policy": {"Name": "no"},
    }


def exec_options(argv: list[str], stdin: bool) -> dict[str, Any]:
    """Keyword arguments for docker-py's `exec_create`: always the sandbox user, the
    workspace and the fixed environment, whatever the command."""
    return {
        "cmd": list(argv),
        "user": USER,
        "workdir": WORKSPACE,
        "environment": dict(ENVIRONMENT),
        "stdout": True,
        "stderr": True,
        "stdin": stdin,
        "tty": False,
        "privileged": False,
    }


def leftovers(processes: list[dict[str, str]], init_pid: int) -> list[dict[str, str]]:
    """From the engine's process list of a container (`top` with PID, UID and STAT columns),
    what must not be there between commands: any live process that is not init or its
    keeper. Zombies are dead already (init reaps them). Pure."""
    found = []
    keepers = 0
    for process in processes:
        if process.get("STAT", "").startswith("Z"):
            continue
        if process.get("UID") == KEEPER_UID and (
            process.get("PID") == str(init_pid) or process.get("PPID") == str(init_pid)
        ):
            keepers += 1
            if keepers <= 2:
                continue
        found.append(process)
    return found


def workspace_path(path: str) -> str:
    """A path inside the workspace, refusing escapes: agents name files relative to it."""
    if "\x00" in path:
        raise ValueError("file names cannot contain NUL")
    path = path.replace("\\", "/")
    if path == WORKSPACE or path.startswith(WORKSPACE + "/"):
        path = path[len(WORKSPACE) :]
    elif path.startswith("/"):
        raise ValueError(f"{path!r} is outside the workspace ({WORKSPACE})")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ValueError(f"{path!r} leaves the workspace")
            parts.pop()
            continue
        parts.append(part)
    return "/".join([WORKSPACE, *parts])
