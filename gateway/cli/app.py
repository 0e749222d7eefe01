"""The `potluck` group, its shared context and `potluck init`; each command family lives in
a module of its own beside this one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runtime.models.discover import KNOWN_SERVERS as KNOWN
from runtime.recipes import RecipeError, version_id
from runtime.recipes.files import read_recipe_file
from runtime.text import terminal_safe

from ..config import (
    Config,
    ConfigError,
    add_models_section,
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
@click.option(
    "--api-base",
    help="An OpenAI-compatible model server to use, e.g. http://127.0.0.1:11434/v1.",
)
@click.option("--model", help="The model to use there (default: the first it lists).")
@click.option("--no-detect", is_flag=True, help="Do not look for model servers or API keys.")
@pass_context
def init(context: Context, api_base: str | None, model: str | None, no_detect: bool) -> None:
    """Write a config and a gateway key (mode 0600); set up the store; find a better model
    than the embedded one (a local model server, an API key). Safe to run twice."""
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
    _better_model(config, api_base, model, no_detect)


def _better_model(config: Config, api_base: str | None, model: str | None, no_detect: bool) -> None:
    """Offer the best model found as the install's fallback ([models] in the config)."""
    import asyncio

    from runtime.models.discover import discover

    if config.models.fallback:
        where = f" at {config.models.api_base}" if config.models.api_base else ""
        click.echo(f"models: {config.models.fallback}{where} (kept; [models] in config.toml)")
        return
    if no_detect and not (api_base or model):
        click.echo("models: the embedded model only (--no-detect)")
        return
    found = asyncio.run(
        discover(api_base, () if no_detect else KNOWN, env=None if not no_detect else {})
    )
    for item in found:
        said = item.model if item.usable else item.problem
        extra = (
            f" ({len(item.choices)} models: {', '.join(item.choices[:5])})" if item.choices else ""
        )
        click.echo(terminal_safe(f"found:  {item.what}: {said}{extra}", one_line=True))
    chosen = next((f for f in found if f.usable), None)
    if model:
        base = api_base or (chosen.api_base if chosen else None)
        model = model if "/" in model or not base else f"openai/{model}"
    elif chosen is not None:
        model, base = chosen.model, chosen.api_base
    if not model:
        click.echo(
            "models: only the tiny embedded model answers. For better answers start a local "
            "model server (e.g. Ollama: `ollama pull llama3.2`) or set an API key "
            "(OPENAI_API_KEY, ...), then run `potluck init` again"
        )
        return
    try:
        done = add_models_section(config.config_file, model, base)
    except ConfigError as exc:
        _fail(f"error: {exc}")
        return
    click.echo(
        terminal_safe(
            f"models: {done}: used for recipes whose models are unavailable and before the "
            "embedded model",
            one_line=True,
        )
    )


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
