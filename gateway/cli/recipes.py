"""`potluck recipe …`: list, show, validate, fork, edit, diff, history, export, import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.recipes import RecipeError, diff, json_schema, short_ref, to_yaml
from runtime.recipes.files import read_recipe_file

from .app import Context, _resolve, cli, pass_context


@cli.group()
def recipe() -> None:
    """List, show, validate, fork, edit, diff, export and import recipes."""


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
