"""The `potluck` group, its shared context and `potluck init`; each command family lives in
a module of its own beside this one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runtime.recipes import RecipeError, version_id
from runtime.recipes.files import read_recipe_file
from runtime.text import terminal_safe

from ..config import (
    Config,
    ConfigError,
    default_home,
    load_config,
    make_home,
    tighten_modes,
    write_default_config,
)
from ..library import Library, Saved
from ..receipts.keys import KeyFileError, KeyPair, read_key_file, write_key_file
from ..store.db import Store


class Context:
    """Opened lazily, so `potluck --help` and `recipe validate` touch no database."""

    def __init__(self, home: Path | None) -> None:
        self._home = home
        self._config: Config | None = None
        self._library: Library | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self._home)
        return self._config

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library(Store(self.config.database_url))
            self._library.sync_bundled()
        return self._library

    def keys(self) -> KeyPair:
        return read_key_file(self.config.key_file)


pass_context = click.make_pass_decorator(Context)


def _fail(message: str) -> None:
    # Errors quote what they refuse (a field name, a file's text): shown inert, never obeyed.
    click.secho(terminal_safe(message), fg="red", err=True)
    sys.exit(2)


class PotluckGroup(click.Group):
    """Turns the errors users can cause into a clear message and exit 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RecipeError as exc:
            _fail(str(exc))
        except (ConfigError, KeyFileError) as exc:
            _fail(f"error: {exc}")
        return None


@click.group(cls=PotluckGroup)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="POTLUCK_HOME",
    help="Where config, store and keys live (default ~/.potluck).",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """Potluck: AI recipes for group chats. Build anything. Break nothing."""
    ctx.obj = Context(home)


def _resolve(context: Context, ref: str) -> Saved:
    """A path to a recipe file, or a name[@version] in the library."""
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".json", ".png") and path.exists():
        loaded = read_recipe_file(path)
        return Saved(loaded, version_id(loaded), "file")
    return context.library.get(ref)


@cli.command()
@pass_context
def init(context: Context) -> None:
    """Write a config and a gateway key (mode 0600); set up the store. Safe to run twice."""
    home = context._home or default_home()
    make_home(home)
    config_path = home / "config.toml"
    if config_path.exists():
        click.echo(f"config: {config_path} (kept)")
    else:
        write_default_config(home)
        click.echo(f"config: {config_path} (written, mode 0600)")
    context._home = home
    config = context.config
    if config.key_file.exists():
        pair = read_key_file(config.key_file)
        click.echo(f"key:    {config.key_file} (kept)")
    else:
        pair = KeyPair.generate()
        write_key_file(config.key_file, pair)
        click.echo(f"key:    {config.key_file} (written, mode 0600)")
    click.echo(f"npub:   {pair.npub}")
    count = len(context.library.heads())
    click.echo(f"store:  {config.database_url} ({count} recipes)")
    for change in tighten_modes(config):  # homes made before files were private
        click.echo(f"private: {change}")


def main() -> None:
    try:
        cli(prog_name="potluck")
    except PermissionError as exc:  # a home or file this user may not write: say which
        click.echo(
            f"error: permission denied: {exc.filename or exc}. POTLUCK_HOME must be "
            "writable by the user running potluck (and its key readable only by it).",
            err=True,
        )
        raise SystemExit(1) from None
