"""/recipe publish and /recipe share, and what /recipe use|fork do with a link: recipes
between installs, over the install's relays (gateway/sharing.py).

A link pasted in a room is a stranger's input: the recipe it names is fetched from the
configured relays (and public `wss` hints only), checked, kept beside this install's own,
and shown — agents, models, tools, sandbox, signer, parent — before anyone attaches it.
"""

from __future__ import annotations

from ..receipts.nip19 import parse_link
from ..sharing import FetchError, Taken, describe, publish, shared_link, take
from .context import Request
from .table import handles


def is_link(text: str) -> bool:
    try:
        parse_link(text)
    except ValueError:
        return False
    return True


async def fetched(req: Request, link: str) -> Taken:
    relays = req.services.config.relays
    try:
        return await take(req.services.library, link, relays, from_chat=True)
    except FetchError as exc:
        raise FetchError(f"could not fetch that recipe: {exc}") from None


def taken_summary(req: Request, taken: Taken) -> str:
    return describe(taken.saved.recipe, signer=taken.fetched.author_pubkey)


@handles("recipe publish")
async def recipe_publish(req: Request) -> None:
    services = req.services
    ref = req.args[0] if req.args else req.conversation().saved.id
    relays = services.config.relays
    try:
        shared = await publish(services.library, services.ledger, relays, ref, services.ledger.keys)
    except FetchError as exc:
        await req.say(str(exc))
        return
    await req.say(shared.report())


@handles("recipe share")
async def recipe_share(req: Request) -> None:
    services = req.services
    ref = req.args[0] if req.args else req.conversation().saved.id
    link = shared_link(services.library, services.ledger, services.config.relays, ref)
    if link is None:
        await req.say(
            f"{services.library.get(ref).ref} has not been published yet; "
            "a room admin can send it with /recipe publish"
        )
        return
    await req.say(link)
