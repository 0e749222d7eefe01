"""/recipe …: what a room runs, and the recipes themselves.

A room admin's edit (`/recipe set`) makes a version that only this room runs: the recipe's
head, which every other room's `/recipe use NAME` reads, moves only by the install's owner
(the web room's editor, `potluck recipe set`), so one room cannot change another's recipe.
"""

from __future__ import annotations

import asyncio

from adapters.base import Attachment
from runtime.recipes import diff, short_ref, to_yaml
from runtime.recipes.files import recipe_from_bytes

from ..budgets import capped_words
from ..library import Saved
from ..sharing import history
from .context import Request
from .records import record_line
from .sharing import fetched, is_link, taken_summary
from .table import handles


async def _attach(req: Request, saved: Saved, why: str) -> None:
    room = req.room
    room.conversation = req.services.exchange.switch(room.room_id, room.conversation, saved, why)
    await _sandbox_limits(req, saved)


async def _sandbox_limits(req: Request, saved: Saved) -> None:
    """A recipe may only ask for less than the install allows: say what this one asked for
    beyond it (capped), or that its tools cannot run here at all."""
    limits = saved.recipe.limits
    spend = capped_words(limits.max_tokens, limits.max_cost_usd, req.services.budgets.ceiling)
    if spend:
        await req.say(
            "(this install caps the recipe's session budget: " + "; ".join(spend) + "; "
            "the gateway's owner sets [budgets] session_usd / session_tokens)"
        )
    if not any(agent.tools for agent in saved.recipe.agents):
        return
    sandboxes = req.services.sandboxes
    if sandboxes is None:
        await req.say(
            "(this gateway has no sandbox engine: the agents' tools are unavailable here, so "
            "they answer without running anything)"
        )
        return
    capped = await sandboxes.capped(saved.recipe.sandbox)
    if capped:
        await req.say("(this install caps the recipe's sandbox: " + "; ".join(capped) + ")")


@handles("recipe list")
async def recipe_list(req: Request) -> None:
    await req.say(
        "\n".join(
            f"{s.ref} — {s.recipe.title} [{', '.join(a.name for a in s.recipe.agents)}]"
            for s in req.services.library.heads()
        )
    )


@handles("recipe show")
async def recipe_show(req: Request) -> None:
    saved = req.services.library.get(req.args[0]) if req.args else req.conversation().saved
    agents = "\n".join(f"  {a.name}: {a.model}" for a in saved.recipe.agents)
    await req.say(
        f"{saved.ref} — {saved.recipe.title}\n{saved.recipe.description}\n"
        f"protocol: {saved.recipe.protocol.kind}\nagents:\n{agents}\n"
        + record_line(req.services, saved)
    )


@handles("recipe use")
async def recipe_use(req: Request) -> None:
    library = req.services.library
    if not req.args:
        heads = library.heads()
        await req.say(
            "Pick a recipe (or type /recipe use NAME):\n"
            + "\n".join(
                f"  {s.recipe.name} — {s.recipe.title} ({record_line(req.services, s)})"
                for s in heads
            ),
            choices=tuple((s.recipe.title, f"/recipe use {s.recipe.name}") for s in heads),
        )
        return
    if is_link(req.args[0]):  # a stranger's recipe: fetched, checked, shown before use
        taken = await fetched(req, req.args[0])
        await req.say(
            taken_summary(req, taken) + f"\nAttach it here with /recipe use {taken.saved.ref}",
            choices=(("Attach it", f"/recipe use {taken.saved.ref}"),),
        )
        return
    saved = library.get(req.args[0])
    await _attach(req, saved, "another recipe was attached")
    names = ", ".join(a.name for a in saved.recipe.agents)
    await req.say(f"this room now runs {saved.ref} ({saved.recipe.title}): {names}")


@handles("recipe fork")
async def recipe_fork(req: Request) -> None:
    source, new_name = req.args
    if is_link(source):
        taken = await fetched(req, source)
        await req.say(
            taken_summary(req, taken)
            + f"\nFork it here with /recipe fork {taken.saved.ref} {new_name}",
            choices=(("Fork it", f"/recipe fork {taken.saved.ref} {new_name}"),),
        )
        return
    saved = req.services.library.fork(source, new_name)
    await _attach(req, saved, "the room forked its recipe")
    await req.say(
        f"forked {source} as {saved.ref}; this room now runs the fork. "
        "Edit it with /recipe set PATH VALUE"
    )


@handles("recipe set")
async def recipe_set(req: Request) -> None:
    current = req.conversation().saved
    path, _, value = req.command.raw_args.partition(" ")
    library = req.services.library
    edited = library.set_in_room(current.id, path, value.strip())
    await _attach(req, edited, "the room edited its recipe")
    changes = "\n".join(f"  {c.render()}" for c in diff(current.recipe, edited.recipe))
    await req.say(
        f"{edited.ref}:\n{changes}\nThis edit runs in this room only; elsewhere it is "
        f"/recipe use {edited.ref}"
    )


@handles("recipe diff")
async def recipe_diff(req: Request) -> None:
    library = req.services.library
    a, b = library.get(req.args[0]), library.get(req.args[1])
    await req.say("\n".join(c.render() for c in diff(a.recipe, b.recipe)) or "no differences")


@handles("recipe history")
async def recipe_history(req: Request) -> None:
    ref = req.args[0] if req.args else req.conversation().saved.id
    relays = req.services.config.relays
    await req.say("\n".join(await history(req.services.library, relays, ref, from_chat=True)))


@handles("recipe export")
async def recipe_export(req: Request) -> None:
    saved = req.services.library.get(req.args[0]) if req.args else req.conversation().saved
    document = to_yaml(saved.recipe)
    if req.capabilities.files:
        file = Attachment(f"{saved.recipe.name}.yaml", "application/yaml", document.encode())
        await req.say(f"{saved.ref}: {saved.recipe.title}", attachments=(file,))
    else:
        await req.say(f"{short_ref(saved.recipe)}.yaml:\n{document}")


@handles("recipe import")
async def recipe_import(req: Request) -> None:
    if not req.incoming.attachments:
        await req.say(
            "attach the recipe file to the /recipe import message "
            "(.yaml, or a SillyTavern card .json/.png)"
        )
        return
    file = req.incoming.attachments[0]
    library = req.services.library
    # a card of several MiB is parsed off the event loop: every other room keeps going
    recipe = await asyncio.to_thread(recipe_from_bytes, file.data, file.name)
    existed = library.has(recipe.name)
    saved = library.keep(recipe, "import")
    if existed and library.get(recipe.name).id != saved.id:
        # a room's import never replaces the recipe other rooms get by this name
        await req.say(
            f"imported {saved.ref} ({saved.recipe.title}) beside the existing {recipe.name}; "
            f"attach it with /recipe use {saved.ref}"
        )
        return
    await req.say(
        f"imported {saved.ref} ({saved.recipe.title}); "
        f"attach it with /recipe use {saved.recipe.name}"
    )
