"""`potluck doctor`, `backup` and `restore`: running a home server."""

from __future__ import annotations

from pathlib import Path

import click

from .app import Context, _fail, cli, pass_context
from .output import say


@cli.command("doctor")
@click.option("--no-sandbox", is_flag=True, help="Skip the Docker engine and sandbox probe.")
@pass_context
def doctor_command(context: Context, no_sandbox: bool) -> None:
    """Check what a home server needs (engine, limits, image, key, config, tokens, relays,
    model, disk) and say exactly what to fix. Exits 1 if anything fails."""
    import asyncio

    from .. import doctor
    from ..config import ConfigError

    try:
        config = context.config
    except ConfigError as exc:
        click.echo(doctor.Check("config", doctor.FAIL, str(exc)).line())
        raise SystemExit(1) from None
    click.echo(f"potluck doctor: {config.home}")
    checks = asyncio.run(doctor.run(config, sandbox=not no_sandbox))
    for check in checks:
        colour = {doctor.OK: "green", doctor.WARN: "yellow", doctor.FAIL: "red"}[check.status]
        click.secho(check.line(), fg=colour)
    failed = [c for c in checks if c.status == doctor.FAIL]
    warned = [c for c in checks if c.status == doctor.WARN]
    click.echo(f"{len(checks)} checks: {len(failed)} failed, {len(warned)} warnings")
    if failed:
        raise SystemExit(1)


@cli.command("backup")
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@pass_context
def backup_command(context: Context, output: Path) -> None:
    """The store, the gateway key and config in one archive (mode 0600); safe while serving."""
    from ..backup import BackupError, backup

    try:
        manifest = backup(context.config, output)
    except (BackupError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"backup of the {manifest.database} store and keys → {output} (keep it private)")


@cli.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing store and key (kept aside).")
@pass_context
def restore_command(context: Context, archive: Path, force: bool) -> None:
    """Put a backup back: checked member by member first; refuses while the gateway runs."""
    from ..backup import BackupError, restore

    try:
        manifest = restore(context.config, archive, force)
    except (BackupError, OSError) as exc:
        _fail(str(exc))
    say(f"restored the {manifest.database} store and keys from {manifest.created}")
