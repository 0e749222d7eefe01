"""How the gateway gets its sandboxes: a client of the sandbox broker, never the engine.

With `[sandbox] broker` set (a home server's potluck-broker service, or compose's broker
container), the gateway connects to that socket. Otherwise it starts a broker of its own as
a child process (`potluck sandbox broker --owned`), which stops when the client closes or
when the gateway dies (its stdin closes). The child gets a minimal environment: none of the
gateway's API keys or tokens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from runtime.sandbox.client import BrokerClient, BrokerUnavailable
from runtime.sandbox.results import SandboxError

from .config import Config

log = logging.getLogger("potluck.sandboxes")
START_TIMEOUT_S = 60.0
# What a child broker inherits of the gateway's environment: where to find Python, the
# engine and the install; nothing else (no keys, no tokens).
KEEP_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "CI")
KEEP_PREFIXES = ("POTLUCK_SANDBOX_", "DOCKER_")
NO_TOOLS = "agents run without tools"


def local_socket(config: Config) -> Path:
    return config.home / "state" / "broker.sock"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def broker_env(config: Config, env: dict[str, str] | None = None) -> dict[str, str]:
    source = dict(os.environ if env is None else env)
    kept = {k: v for k, v in source.items() if k in KEEP_ENV or k.startswith(KEEP_PREFIXES)}
    kept["POTLUCK_HOME"] = str(config.home)
    return kept


def start_broker(config: Config, path: Path) -> subprocess.Popen[bytes]:
    """A broker for this install, owned by the caller: it stops when our end of its stdin
    closes. Its log lines go where ours go (stderr)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "gateway", "--home", str(config.home), "sandbox", "broker"]
    argv += ["--socket", str(path), "--mode", "600", "--owned"]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, env=broker_env(config))


async def connect(config: Config, start: bool = True) -> BrokerClient:
    """A client of this install's broker: the configured one, one already running for this
    install, or (when `start`) a new child. Raises SandboxError saying how to fix it."""
    if config.sandbox.broker is not None:
        return BrokerClient(config.sandbox.broker)
    path = local_socket(config)
    if _answers(path):
        return BrokerClient(path)  # `potluck serve` (or another command) runs one already
    if not start:
        raise BrokerUnavailable(f"no sandbox broker answers at {path}")
    process = start_broker(config, path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(path):
            return BrokerClient(path, process=process)
        if process.poll() is not None:
            if _answers(path):  # another one won the race for this install: use it
                return BrokerClient(path)
            raise SandboxError(
                f"the sandbox broker exited (status {process.returncode}) before it listened "
                "on its socket; its reason is in the lines above"
            )
        await asyncio.sleep(0.05)
    await BrokerClient(path, process=process).close()
    raise SandboxError(f"the sandbox broker did not listen on {path} within {START_TIMEOUT_S} s")


async def open_sandboxes(config: Config) -> BrokerClient | None:
    """The gateway's sandboxes, or None with one clear log line when they cannot work."""
    try:
        client = await connect(config)
        health = await client.health()
    except SandboxError as exc:
        log.warning("no sandbox broker (%s): %s", exc, NO_TOOLS)
        return None
    if not health.engine_ok:
        log.warning(
            "the sandbox broker reaches no Docker engine (%s): %s; start one with "
            "deploy/engine.sh (or set DOCKER_HOST for the broker)",
            health.engine_error,
            NO_TOOLS,
        )
        await client.close()
        return None
    if not health.image_present:
        log.warning(
            "the sandbox image %s is not built: commands fail until `potluck sandbox build` "
            "has run",
            health.image,
        )
    log.info(
        "sandboxes: broker at %s, Docker %s, %d sandboxes, ceilings %s",
        client.socket_path,
        health.engine_version,
        health.sandboxes,
        health.ceilings.as_dict(),
    )
    return client
