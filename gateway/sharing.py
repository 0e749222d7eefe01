"""Recipes between installs: publish this install's versions to its relays, and take in a
stranger's by its link. The CLI, the chat commands and the web room's Discover view all
come here; the relay protocol itself is gateway/receipts/travel.py.

A fetched recipe is a stranger's input. It is checked by travel (id, signature, schema, a
version id that matches its content, no text that looks like a secret) and then only ever
*kept* (gateway/library.py `keep`): it never replaces the recipe this install already knows
by that name. What it asks of the sandbox is capped by the install's ceilings and its
models get keys only where the install's config says (runtime/models/keys.py); `describe`
says all of it before anyone attaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.recipes import Recipe, short_ref

from .library import Library, Saved
from .receipts import kinds, version_store
from .receipts.keys import KeyPair
from .receipts.ledger import Ledger, LedgerError
from .receipts.nip19 import Address, EventPointer, naddr_encode, nevent_encode, npub_encode
from .receipts.nostr import Event
from .receipts.travel import (
    Fetched,
    FetchError,
    Found,
    Lineage,
    Published,
    fetch_recipe,
    lineage,
    publish_recipe,
)
from .receipts.versions import check_version

__all__ = ["FetchError", "Shared", "Taken", "describe", "history", "publish", "take"]


@dataclass(frozen=True)
class Shared:
    """A version as published: its links, and what each relay said."""

    saved: Saved
    event: Event
    nevent: str
    naddr: str | None  # this install's "latest" pointer, when the recipe is its own
    results: dict[str, Published]

    @property
    def accepted(self) -> list[str]:
        return [relay for relay, result in self.results.items() if result.ok]

    def report(self) -> str:
        lines = [f"{self.saved.ref}: {self.nevent}"]
        if self.naddr:
            lines.append(f"latest version of {self.saved.recipe.name}: {self.naddr}")
        for relay, result in sorted(self.results.items()):
            state = "stored" if result.ok else (result.error or "; ".join(result.refused))
            lines.append(f"  {relay}: {state}")
        return "\n".join(lines)


def link_of(event: Event, relays: Sequence[str]) -> str:
    """The `nevent` of a version event, with up to two relay hints and its author."""
    return nevent_encode(
        EventPointer(event.id, tuple(relays[:2]), event.pubkey, kinds.RECIPE_VERSION)
    )


async def publish(
    library: Library, ledger: Ledger, relays: Sequence[str], ref: str, keys: KeyPair
) -> Shared:
    """Sign (once) and send a version, and this install's pointer to it when the recipe is
    its own, to `relays`. A stranger's unchanged recipe goes out under its author's event."""
    if not relays:
        raise FetchError(
            "no relays to publish to: list some under [receipts] relays in the install's config"
        )
    saved = library.get(ref)
    event = ledger.recipe_version(saved)
    events = _lineage_events(ledger, event)  # its ancestors too: a lineage with no gaps
    naddr = None
    if event.pubkey == ledger.keys.pubkey:
        # the version published is this install's latest of that name, on the relays (a
        # room's own edit included: publishing it is choosing it); the local head, which
        # other rooms attach by name, does not move
        try:
            pointer = ledger.recipe_pointer(saved.recipe.name, saved)
        except LedgerError:
            pointer = None
        if pointer is not None:
            events.append(pointer)
            naddr = naddr_encode(
                Address(saved.recipe.name, pointer.pubkey, kinds.RECIPE_LATEST, tuple(relays[:2]))
            )
    results = await publish_recipe(events, relays, keys=keys)
    return Shared(saved, event, link_of(event, relays), naddr, results)


def link_of_found(found: Found) -> str:
    """The `nevent` of a version found on relays (Discover)."""
    return nevent_encode(
        EventPointer(
            found.version_event_id,
            tuple(sorted(found.relays))[:2],
            found.author_pubkey,
            kinds.RECIPE_VERSION,
        )
    )


def _lineage_events(ledger: Ledger, event: Event, limit: int = 64) -> list[Event]:
    """A version event and the stored events of its ancestors (this install's own, and
    strangers' as they were fetched), oldest first: published together, so whoever fetches
    the version can walk its lineage without a gap."""
    chain = [event]
    parent = check_version(event).forked_from
    while parent is not None and len(chain) < limit:
        found = version_store.find_version(ledger.store, parent.version_id, ledger.keys.pubkey)
        if found is None:
            break
        chain.append(found[0])
        parent = check_version(found[0]).forked_from
    return list(reversed(chain))


def shared_link(library: Library, ledger: Ledger, relays: Sequence[str], ref: str) -> str | None:
    """The link of a version already signed (published or fetched), or None."""
    saved = library.get(ref)
    found = version_store.find_version(ledger.store, saved.id, ledger.keys.pubkey)
    if found is None:
        return None
    event, relay = found
    return link_of(event, [r for r in [relay, *relays] if r])


@dataclass(frozen=True)
class Taken:
    """A stranger's version, checked and kept here (not made the head of its name)."""

    saved: Saved
    fetched: Fetched


async def take(
    library: Library, link: str, relays: Sequence[str], *, from_chat: bool = False
) -> Taken:
    """Fetch the version a link names, check it, and keep it beside this install's own
    recipes; FetchError (or RecipeError) says why not. A link from a chat room is fetched
    from the configured relays and public `wss` hints only."""
    fetched = await fetch_recipe(link, relays, public_hints=from_chat)
    saved = library.keep(fetched.recipe, "fetched")
    version_store.remember(library.store, fetched.event, fetched.relay)
    return Taken(saved, fetched)


def describe(recipe: Recipe, *, signer: str | None = None, capped: Sequence[str] = ()) -> str:
    """What a recipe will do, for a person deciding whether to attach it: agents, models,
    tools, the sandbox it asks for (and what this install caps), who signed it, what it
    was forked from."""
    lines = [f"{short_ref(recipe)} — {recipe.title}"]
    if recipe.description:
        lines.append(recipe.description.splitlines()[0][:300])
    if signer:
        lines.append(f"signed by {npub_encode(signer)}")
    if recipe.forked_from:
        lines.append(f"forked from version {recipe.forked_from[:12]}…")
    protocol = recipe.protocol
    lines.append(
        f"protocol: {protocol.kind}, up to {protocol.max_turns} turns, "
        f"{protocol.max_rounds} rounds; answers {recipe.trigger.replace('_', ' ')}"
    )
    for agent in recipe.agents:
        models = " → ".join([agent.model, *agent.fallbacks])
        where = (
            f" at {agent.api_base} (no key of this install goes there)" if agent.api_base else ""
        )
        tools = f"; tools: {', '.join(agent.tools)}" if agent.tools else ""
        lines.append(f"  {agent.name}: {models}{where}{tools}")
    if any(agent.tools for agent in recipe.agents):
        box = recipe.sandbox
        lines.append(
            f"sandbox asked: memory {box.memory}, cpus {box.cpus:g}, pids {box.pids}, "
            f"{box.exec_timeout_s} s per command, no network"
        )
        if capped:
            lines.append("capped by this install: " + "; ".join(capped))
    lines.append(
        f"limits: ${recipe.limits.max_cost_usd:.2f}, {recipe.limits.max_tokens} tokens a session"
    )
    return "\n".join(lines)


async def history(
    library: Library, relays: Sequence[str], ref: str, *, from_chat: bool = False
) -> list[str]:
    """A version's lineage: through this install's library, then, where a parent is not
    here, across installs as far as the relays know, saying where the trail goes cold."""
    chain = library.lineage(ref)
    lines = []
    for depth, item in enumerate(chain):
        arrow = "  " * depth + ("← " if depth else "")
        if isinstance(item, Saved):
            lines.append(f"{arrow}{item.ref}  {item.origin}  {item.recipe.title}")
            continue
        # a parent this install does not have: ask the relays, from the child's event
        child = chain[depth - 1]
        assert isinstance(child, Saved)
        found = version_store.find_version(library.store, child.id, "")
        if found is None or not relays:
            why = "no relays configured" if not relays else "its version event is not here"
            lines.append(f"{arrow}{item[:7]} (not in this store; {why}: the trail ends here)")
            break
        try:
            child_event = Fetched.of(check_version(found[0]), found[1] or "")
            walked: Lineage = await lineage(child_event, relays, public_hints=from_chat)
        except FetchError as exc:
            lines.append(f"{arrow}{item[:7]} (the relays could not say more: {exc})")
            break
        for step, version in enumerate(walked.versions[1:], start=depth):
            who = npub_encode(version.author_pubkey)[:16] + "…"
            lines.append(
                "  " * step
                + f"← {version.recipe.name}@{version.version_id[:7]}  by {who}  "
                + version.recipe.title
            )
        lines.append("  " * (depth + len(walked.versions) - 1) + f"({walked.reason})")
        break
    return lines
