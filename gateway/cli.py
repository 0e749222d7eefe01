"""The `potluck` command line: a thin shell over the library, the store and the receipts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.recipes import RecipeError, diff, json_schema, short_ref, to_yaml, version_id
from runtime.recipes.files import read_recipe_file

from .config import Config, ConfigError, default_home, load_config, write_default_config
from .library import Library, Saved
from .receipts.keys import KeyFileError, KeyPair, read_key_file, write_key_file
from .store.db import Store


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
    click.secho(message, fg="red", err=True)
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


@cli.command()
@pass_context
def init(context: Context) -> None:
    """Write a config and a gateway key (mode 0600); set up the store. Safe to run twice."""
    home = context._home or default_home()
    home.mkdir(parents=True, exist_ok=True)
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


@cli.group()
def recipe() -> None:
    """List, show, validate, fork, edit, diff, export and import recipes."""


def _resolve(context: Context, ref: str) -> Saved:
    """A path to a recipe file, or a name[@version] in the library."""
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".json", ".png") and path.exists():
        loaded = read_recipe_file(path)
        return Saved(loaded, version_id(loaded), "file")
    return context.library.get(ref)


@recipe.command("list")
@pass_context
def recipe_list(context: Context) -> None:
    """Bundled and local recipes, with their current versions."""
    heads = context.library.heads()
    width = max((len(s.ref) for s in heads), default=10)
    for saved in heads:
        agents = ", ".join(a.name for a in saved.recipe.agents)
        click.echo(f"{saved.ref:<{width}}  {saved.origin:<7}  {saved.recipe.title}  [{agents}]")


@recipe.command("show")
@click.argument("ref")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the recipe file itself.")
@pass_context
def recipe_show(context: Context, ref: str, as_yaml: bool) -> None:
    """One recipe: version, lineage, agents and protocol."""
    saved = _resolve(context, ref)
    if as_yaml:
        click.echo(to_yaml(saved.recipe), nl=False)
        return
    r = saved.recipe
    click.secho(f"{saved.ref}  {r.title}", bold=True)
    click.echo(f"version: {saved.id}")
    if r.forked_from:
        click.echo(f"forked from: {r.forked_from[:7]}")
    if r.description:
        click.echo(r.description)
    click.echo(
        f"protocol: {r.protocol.kind}, up to {r.protocol.max_turns} turns, "
        f"{r.protocol.max_rounds} rounds; trigger: {r.trigger}"
    )
    click.echo(f"limits: ${r.limits.max_cost_usd:.2f}, {r.limits.max_tokens} tokens per session")
    for agent in r.agents:
        fallbacks = f" (fallbacks: {', '.join(agent.fallbacks)})" if agent.fallbacks else ""
        tools = f" tools: {', '.join(agent.tools)}" if agent.tools else ""
        click.echo(f"  - {agent.name}: {agent.model}{fallbacks}{tools}")


@recipe.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def recipe_validate(files: tuple[Path, ...]) -> None:
    """Check recipe files; every problem is printed with its file, line and field."""
    failed = 0
    for path in files:
        try:
            loaded = read_recipe_file(path)
        except RecipeError as exc:
            failed += 1
            click.secho(str(exc), fg="red", err=True)
        else:
            click.echo(f"{path}: ok ({short_ref(loaded)})")
    if failed:
        sys.exit(1)


@recipe.command("fork")
@click.argument("ref")
@click.argument("new_name")
@click.option("--author", default=None)
@pass_context
def recipe_fork(context: Context, ref: str, new_name: str, author: str | None) -> None:
    """Copy a recipe under a new name; its lineage points at the exact parent version."""
    parent = _resolve(context, ref)
    if parent.origin == "file":
        context.library.save(parent.recipe, "import")
    saved = context.library.fork(parent.id if parent.origin == "file" else ref, new_name, author)
    click.echo(f"{saved.ref} forked from {parent.ref}")


@recipe.command("set")
@click.argument("ref")
@click.argument("path")
@click.argument("value")
@pass_context
def recipe_set(context: Context, ref: str, path: str, value: str) -> None:
    """Change one field, e.g. `set my-review agents.architect.model openai/gpt-5`."""
    before = context.library.get(ref)
    saved = context.library.set(ref, path, value)
    click.echo(f"{before.ref} → {saved.ref}")
    for change in diff(before.recipe, saved.recipe):
        click.echo("  " + change.render())


@recipe.command("diff")
@click.argument("old")
@click.argument("new")
@pass_context
def recipe_diff(context: Context, old: str, new: str) -> None:
    """What changed from one version (or file) to another, field by field."""
    a, b = _resolve(context, old), _resolve(context, new)
    changes = diff(a.recipe, b.recipe)
    click.echo(f"{a.ref} → {b.ref}: {len(changes)} change(s)")
    for change in changes:
        line = change.render()
        colour = {"+": "green", "-": "red"}.get(line[0], "yellow")
        click.secho(line, fg=colour)


@recipe.command("history")
@click.argument("ref")
@pass_context
def recipe_history(context: Context, ref: str) -> None:
    """The lineage of a version, back to its origin."""
    for index, item in enumerate(context.library.lineage(ref)):
        arrow = "  " if index == 0 else "← "
        if isinstance(item, str):
            click.echo(f"{arrow}{item[:7]} (not in this store: forked from elsewhere)")
        else:
            click.echo(f"{arrow}{item.ref}  {item.origin}  {item.recipe.title}")


@recipe.command("export")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write.")
@pass_context
def recipe_export(context: Context, ref: str, output: Path | None) -> None:
    """Write a recipe as a YAML file to share; its version id travels with its content."""
    saved = _resolve(context, ref)
    text = to_yaml(saved.recipe)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"{saved.ref} → {output}")


@recipe.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_context
def recipe_import(context: Context, file: Path) -> None:
    """Add a recipe file, or a SillyTavern character card (.json/.png), to the library."""
    loaded = read_recipe_file(file)
    saved = context.library.save(loaded, "import")
    click.echo(f"imported {saved.ref}  {loaded.title}")


@recipe.command("schema")
def recipe_schema() -> None:
    """The recipe JSON Schema, for editors and other tools."""
    click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


def main() -> None:
    cli(prog_name="potluck")
