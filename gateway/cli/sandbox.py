"""`potluck sandbox …` and the engine-side service that holds the Docker socket."""

from __future__ import annotations

import sys

import click

from .app import Context, _fail, cli, pass_context

# -- sandbox -----------------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """Build the sandbox image, check what the engine enforces, reset a room's sandbox."""


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


def _sandboxes(context: Context):  # type: ignore[no-untyped-def]
    from runtime.sandbox import Sandboxes

    config = context.config
    return Sandboxes(config.home / "state", install=config.install_id, client=_docker())


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
    import asyncio

    from runtime.sandbox import SandboxError

    boxes = _sandboxes(context)

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await boxes.probe()
        finally:
            await boxes.close()

    try:
        result = asyncio.run(go())
    except SandboxError as exc:
        _fail(f"error: {exc}")
    for line in result.lines():
        click.secho(line, fg="green" if line.startswith("in force") else "yellow")


@sandbox.command("exec")
@click.argument("room")
@click.argument("command")
@pass_context
def sandbox_exec(context: Context, room: str, command: str) -> None:
    """Run COMMAND in ROOM's sandbox (ROOM as platform:room-id), as an agent would."""
    import asyncio

    from runtime.sandbox import SandboxError

    boxes = _sandboxes(context)

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await boxes.exec(room, command)
        finally:
            await boxes.close(stop=False)

    try:
        result = asyncio.run(go())
    except SandboxError as exc:
        _fail(f"error: {exc}")
    click.echo(result.stdout, nl=False)
    click.echo(result.stderr, nl=False, err=True)
    click.secho(result.summary(), dim=True, err=True)
    sys.exit(result.exit_code if 0 <= result.exit_code < 256 else 1)


@sandbox.command("reset")
@click.argument("room")
@pass_context
def sandbox_reset(context: Context, room: str) -> None:
    """Remove ROOM's container and workspace; the next command starts clean."""
    import asyncio

    boxes = _sandboxes(context)

    async def go() -> None:
        try:
            await boxes.reset(room)
        finally:
            await boxes.close(stop=False)

    asyncio.run(go())
    click.echo(f"sandbox for {room}: reset (container and workspace removed)")


@sandbox.command("list")
@pass_context
def sandbox_list(context: Context) -> None:
    """This install's sandbox containers and workspaces (nothing else on the engine)."""
    boxes = _sandboxes(context)
    for container in boxes.ours():
        room = container.labels.get("io.potluck.room", "?")
        click.echo(f"container  {container.short_id}  {container.status:<8}  {room}")
    for volume in boxes.ours("workspace"):
        click.echo(f"workspace  {volume.name}  {volume.attrs['Labels'].get('io.potluck.room')}")


@cli.command("docker-proxy")
@click.option(
    "--listen",
    default="127.0.0.1:2375",
    show_default=True,
    help="HOST:PORT, or unix:PATH (mode 0660: give its group to the gateway's user).",
)
@click.option("--socket", "socket_path", default="/var/run/docker.sock", show_default=True)
def docker_proxy_command(listen: str, socket_path: str) -> None:
    """Forward only the Docker calls sandboxes need (see deploy/compose.yaml). The gateway
    then gets DOCKER_HOST=tcp://HOST:PORT instead of the socket, which is root on the host."""
    import asyncio
    import logging

    from ..docker_proxy import serve, serve_unix

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        if listen.startswith("unix:"):
            server = await serve_unix(listen.removeprefix("unix:"), socket_path)
        else:
            host, _, port = listen.rpartition(":")
            server = await serve(host or "127.0.0.1", int(port), socket_path)
        click.echo(f"docker proxy on {listen} → {socket_path}", err=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
