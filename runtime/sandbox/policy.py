"""What a sandbox container is allowed: pure functions from a recipe's policy to Docker options.

The hardening here is fixed. A recipe may choose an image and tighten or loosen the resource
numbers within the schema's bounds, but nothing it says can add a network, a capability, a
writable root, a host path or the gateway's environment.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from typing import Any

from ..recipes.schema import SandboxPolicy

USER = "10001:10001"
WORKSPACE = "/workspace"
DEFAULT_IMAGE = "potluck-sandbox:default"
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


@dataclass(frozen=True)
class Limits:
    """Resource numbers for one sandbox, already checked by the recipe schema."""

    memory_bytes: int
    nano_cpus: int
    pids: int
    exec_timeout_s: int
    output_cap_bytes: int = 64 * 1024
    tmp_bytes: int = 64 * 1024 * 1024
    workspace_bytes: int = 256 * 1024 * 1024
    nofile: int = 1024
    nproc: int = 4096  # per uid across the host: the per-container cap is `pids`


def parse_size(text: str) -> int:
    match = re.fullmatch(r"([1-9][0-9]*)([kmg])", text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512m or 1g)")
    return int(match.group(1)) * {"k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]


def limits_for(policy: SandboxPolicy) -> Limits:
    return Limits(
        memory_bytes=parse_size(policy.memory),
        nano_cpus=int(policy.cpus * 1e9),
        pids=policy.pids,
        exec_timeout_s=policy.exec_timeout_s,
    )


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
        "user": USER,
        "working_dir": WORKSPACE,
        "environment": dict(ENVIRONMENT),
        "labels": labels(install, room, "sandbox"),
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


def wrap_command(command: str, timeout_s: int) -> list[str]:
    """The argv run by `docker exec`: the command under a timeout that kills its whole
    process group, so a hung pipeline dies with everything it started."""
    return [
        "timeout",
        "--signal=KILL",
        str(timeout_s),
        "bash",
        "-c",
        command,
    ]


# Kills every process in the container but PID 1 (tini) and the killer itself: what an exec
# left behind (daemons, `nohup`, `setsid`) does not outlive it.
SWEEP = (
    "n=0; for p in $(ps -e -o pid=); do "
    '[ "$p" -eq 1 ] || [ "$p" -eq $$ ] || { kill -9 "$p" 2>/dev/null && n=$((n+1)); }; '
    'done; echo "$n"'
)


def quote(path: str) -> str:
    return shlex.quote(path)


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
