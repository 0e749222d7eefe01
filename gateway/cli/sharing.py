"""`potluck recipe publish | fetch | discover`: recipes between installs, over the relays in
`[receipts] relays` (see gateway/sharing.py)."""

from __future__ import annotations

import asyncio

import click

from runtime.recipes import RecipeError
from runtime.sandbox.policy import effective

from .app import Context, _fail, pass_context
from .output import one_line, say
from .recipes import recipe


def _relays(context: Context, extra: tuple[str, ...]) -> list[str]:
    return [*extra, *(r for r in context.config.relays if r not in extra)]


@recipe.command("publish")
@click.argument("ref")
@click.option("--relay", "relays", multiple=True, help="A relay to use besides [receipts] relays.")
@pass_context
def recipe_publish(context: Context, ref: str, relays: tuple[str, ...]) -> None:
    """Sign NAME[@VERSION] with this install's key and send it to the relays; prints the
    links another install fetches it by."""
    from ..receipts.ledger import Ledger
    from ..sharing import FetchError, publish

    keys = context.keys()
    ledger = Ledger(context.library.store, keys)
    try:
        shared = asyncio.run(publish(context.library, ledger, _relays(context, relays), ref, keys))
    except FetchError as exc:
        _fail(str(exc))
    say(shared.report())
    if not shared.accepted:
        _fail("no relay stored it; see above")


@recipe.command("fetch")
@click.argument("link")
@click.option("--fork", "fork_as", metavar="NEW-NAME", help="Also fork it under this name.")
@click.option("--relay", "relays", multiple=True, help="A relay to ask besides [receipts] relays.")
@pass_context
def recipe_fetch(context: Context, link: str, fork_as: str | None, relays: tuple[str, ...]) -> None:
    """Fetch a recipe by its nevent/naddr/note link, check it, show what it will do, and keep
    it here (it never replaces a recipe of the same name you already have)."""
    from ..sharing import FetchError, describe, take

    try:
        taken = asyncio.run(take(context.library, link, _relays(context, relays)))
    except FetchError as exc:
        _fail(f"could not fetch it: {exc}")
    ceilings = context.config.sandbox.ceilings
    capped = effective(taken.saved.recipe.sandbox, ceilings)[1]
    say(describe(taken.saved.recipe, signer=taken.fetched.author_pubkey, capped=capped))
    say(f"kept as {one_line(taken.saved.ref)}", fg="green")
    if fork_as:
        try:
            forked = context.library.fork(taken.saved.id, fork_as)
        except RecipeError as exc:
            _fail(str(exc))
        say(f"{forked.ref} forked from {taken.saved.ref}", fg="green")


@recipe.command("discover")
@click.argument("query", required=False)
@click.option("--topic", help="Recipes tagged with this topic.")
@click.option("--relay", "relays", multiple=True, help="A relay to ask besides [receipts] relays.")
@pass_context
def recipe_discover(
    context: Context, query: str | None, topic: str | None, relays: tuple[str, ...]
) -> None:
    """Recipes on the relays, by name or topic, newest first, with their links."""
    from ..receipts.nip19 import npub_encode
    from ..receipts.travel import search
    from ..sharing import FetchError, link_of_found

    where = _relays(context, relays)
    if not where:
        _fail("no relays to ask: list some under [receipts] relays, or pass --relay")
    try:
        found = asyncio.run(search(where, name=query, topic=topic))
    except FetchError as exc:
        _fail(str(exc))
    for item in found:
        say(
            f"{one_line(item.name)}@{item.version_id[:7]}  {one_line(item.title)}  "
            f"by {npub_encode(item.author_pubkey)[:20]}…"
        )
        say(f"  {link_of_found(item)}", dim=True)
    if not found:
        say("nothing found")
