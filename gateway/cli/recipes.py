"""`potluck recipe …`: list, show, validate, fork, edit, diff, history, export, import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.recipes import RecipeError, diff, json_schema, short_ref, to_yaml
from runtime.recipes.files import read_recipe_file

from .app import Context, _resolve, cli, pass_context
from .output import emit_data, one_line, say

# Recipes come from strangers (imported cards, files, chat rooms): everything printed here
# goes through `say`, and fields shown within a line are kept to that line.


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
        title = one_line(saved.recipe.title)
        say(f"{one_line(saved.ref):<{width}}  {saved.origin:<7}  {title}  [{one_line(agents)}]")


@recipe.command("show")
@click.argument("ref")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the recipe file itself.")
@pass_context
def recipe_show(context: Context, ref: str, as_yaml: bool) -> None:
    """One recipe: version, lineage, agents and protocol."""
    saved = _resolve(context, ref)
    if as_yaml:
        say(to_yaml(saved.recipe), nl=False)
        return
    r = saved.recipe
    say(f"{one_line(saved.ref)}  {one_line(r.title)}", bold=True)
    say(f"version: {saved.id}")
    if r.forked_from:
        say(f"forked from: {r.forked_from[:7]}")
    if r.author:
        say(f"by: {one_line(r.author)}")
    if r.description:
        say(r.description)
    say(
        f"protocol: {r.protocol.kind}, up to {r.protocol.max_turns} turns, "
        f"{r.protocol.max_rounds} rounds; trigger: {r.trigger}"
    )
    say(f"limits: ${r.limits.max_cost_usd:.2f}, {r.limits.max_tokens} tokens per session")
    for agent in r.agents:
        fallbacks = f" (fallbacks: {', '.join(agent.fallbacks)})" if agent.fallbacks else ""
        tools = f" tools: {', '.join(agent.tools)}" if agent.tools else ""
        say(f"  - {one_line(agent.name)}: {one_line(agent.model + fallbacks + tools)}")


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
            say(str(exc), fg="red", err=True)
        else:
            say(f"{path}: ok ({short_ref(loaded)})")
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
    say(f"{saved.ref} forked from {parent.ref}")


@recipe.command("set")
@click.argument("ref")
@click.argument("path")
@click.argument("value")
@pass_context
def recipe_set(context: Context, ref: str, path: str, value: str) -> None:
    """Change one field, e.g. `set my-review agents.architect.model openai/gpt-5`."""
    before = context.library.get(ref)
    saved = context.library.set(ref, path, value)
    say(f"{before.ref} → {saved.ref}")
    for change in diff(before.recipe, saved.recipe):
        say("  " + change.render())


@recipe.command("diff")
@click.argument("old")
@click.argument("new")
@pass_context
def recipe_diff(context: Context, old: str, new: str) -> None:
    """What changed from one version (or file) to another, field by field."""
    a, b = _resolve(context, old), _resolve(context, new)
    changes = diff(a.recipe, b.recipe)
    say(f"{a.ref} → {b.ref}: {len(changes)} change(s)")
    for change in changes:
        line = change.render()
        colour = {"+": "green", "-": "red"}.get(line[0], "yellow")
        say(line, fg=colour)


@recipe.command("history")
@click.argument("ref")
@pass_context
def recipe_history(context: Context, ref: str) -> None:
    """The lineage of a version, back to its origin: through this install's library, then
    across installs as far as the configured relays know."""
    import asyncio

    from ..sharing import history

    for line in asyncio.run(history(context.library, context.config.relays, ref)):
        say(one_line(line))


@recipe.command("export")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write.")
@pass_context
def recipe_export(context: Context, ref: str, output: Path | None) -> None:
    """Write a recipe as a YAML file to share; its version id travels with its content."""
    saved = _resolve(context, ref)
    text = to_yaml(saved.recipe)
    if output is None:
        emit_data(text)
        return
    output.write_text(text, encoding="utf-8")
    say(f"{saved.ref} → {output}")


@recipe.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_context
def recipe_import(context: Context, file: Path) -> None:
    """Add a recipe file, or a SillyTavern character card (.json/.png), to the library."""
    loaded = read_recipe_file(file)
    saved = context.library.save(loaded, "import")
    say(f"imported {saved.ref}  {one_line(loaded.title)}")


@recipe.command("schema")
def recipe_schema() -> None:
    """The recipe JSON Schema, for editors and other tools."""
    click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))
