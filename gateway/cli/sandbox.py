"""`potluck sandbox …`: the broker that holds the engine, and what an operator asks of it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from .app import Context, _fail, cli, pass_context
from .output import emit_data

# -- sandbox -----------------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """Run the sandbox broker, build its image, check what the engine enforces, reset a room."""


def _docker():  # type: ignore[no-untyped-def]
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _fail(
            f"no Docker engine answers ({exc.__class__.__name__}); start one with "
            "`deploy/engine.sh` (installs docker.io and starts dockerd), or set DOCKER_HOST"
        )
    return client


def _through_broker(context: Context, work):  # type: ignore[no-untyped-def]
    """Run `work(client)` against this install's broker (started for the command if none
    runs), then let go of it."""
    from runtime.sandbox import SandboxError

    from ..sandboxes import connect

    async def go():  # type: ignore[no-untyped-def]
        client = await connect(context.config)
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except (SandboxError, ValueError) as exc:
        _fail(f"error: {exc}")


@sandbox.command("broker")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to listen (default: [sandbox] broker, else HOME/state/broker.sock).",
)
@click.option(
    "--mode",
    default="660",
    show_default=True,
    help="The socket's permissions, octal: 660 lets the socket's group (potluck) connect.",
)
@click.option(
    "--grace",
    default=10.0,
    show_default=True,
    help="On SIGTERM, seconds requests in flight may finish before they are cancelled.",
)
@click.option(
    "--max-connections",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Requests served at once; more are told the broker is busy.",
)
@click.option("--owned", is_flag=True, help="Stop when stdin closes (the gateway's own broker).")
@pass_context
def sandbox_broker(
    context: Context,
    socket_path: Path | None,
    mode: str,
    grace: float,
    max_connections: int,
    owned: bool,
) -> None:
    """Hold the Docker engine's socket and offer sandboxes, by intent, on a Unix socket.
    The only Potluck process that talks to the engine (see deploy/)."""
    from runtime.sandbox.broker import BrokerError, serve
    from runtime.sandbox.containers import Sandboxes
    from runtime.sandbox.engine import EngineError

    from .. import logs

    config = context.config
    try:
        permissions = int(mode, 8)
    except ValueError:
        _fail(f"error: --mode {mode!r} is not octal (e.g. 660)")
    if permissions & ~0o770:
        _fail(f"error: --mode {mode}: the broker's socket is never open to others (use 660)")
    path = socket_path or config.sandbox.broker or config.home / "state" / "broker.sock"
    logs.setup(config)
    try:
        boxes = Sandboxes(
            config.home / "state", install=config.install_id, ceilings=config.sandbox.ceilings
        )
        status = asyncio.run(
            serve(
                boxes,
                path,
                mode=permissions,
                grace_s=grace,
                owned=owned,
                max_connections=max_connections,
            )
        )
    except (BrokerError, EngineError) as exc:
        _fail(f"error: {exc}")
    sys.exit(status)


@sandbox.command("build")
def sandbox_build() -> None:
    """Build the default image from Debian's mirror (no registry); skipped when current."""
    from runtime.sandbox.image import ensure_image

    try:
        tag = ensure_image(_docker(), progress=click.echo)
    except (PermissionError, RuntimeError) as exc:
        _fail(f"error: {exc}")
    click.secho(f"sandbox image ready: {tag} (also tagged potluck-sandbox:default)", fg="green")


@sandbox.command("probe")
@pass_context
def sandbox_probe(context: Context) -> None:
    """Start a throwaway sandbox and report which limits this kernel really enforces."""

    async def work(client):  # type: ignore[no-untyped-def]
        return await client.probe()

    for line in _through_broker(context, work).lines():
        click.secho(line, fg="green" if line.startswith("in force") else "yellow")


@sandbox.command("exec")
@click.argument("room")
@click.argument("command")
@pass_context
def sandbox_exec(context: Context, room: str, command: str) -> None:
    """Run COMMAND in ROOM's sandbox (ROOM as platform:room-id), as an agent would."""

    async def work(client):  # type: ignore[no-untyped-def]
        return await client.exec(room, command)

    result = _through_broker(context, work)
    emit_data(result.stdout)  # what a sandboxed process printed: hostile to a terminal
    emit_data(result.stderr, err=True)
    click.secho(result.summary(), dim=True, err=True)
    sys.exit(result.exit_code if 0 <= result.exit_code < 256 else 1)


@sandbox.command("reset")
@click.argument("room")
@pass_context
def sandbox_reset(context: Context, room: str) -> None:
    """Remove ROOM's container and workspace; the next command starts clean."""

    async def work(client):  # type: ignore[no-untyped-def]
        await client.reset(room)

    _through_broker(context, work)
    click.echo(f"sandbox for {room}: reset (container and workspace removed)")


@sandbox.command("list")
@pass_context
def sandbox_list(context: Context) -> None:
    """This install's sandboxes (the broker's own; nothing else on the engine)."""

    async def work(client):  # type: ignore[no-untyped-def]
        return await client.health(), await client.list()

    health, found = _through_broker(context, work)
    ceilings = health.ceilings.as_dict()
    click.echo(
        f"broker: install {health.install}, Docker {health.engine_version or 'unreachable'}, "
        f"image {health.image}, ceilings "
        + ", ".join(f"{k} {v}" for k, v in ceilings.items() if k != "image")
    )
    for entry in found:
        container, state = entry.get("container", "?"), entry.get("state", "?")
        click.echo(f"{container:<12}  {state:<8}  {entry.get('room', '?')}")
    if not found:
        click.echo("(no sandboxes)")
