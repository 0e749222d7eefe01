"""Newer versions of strangers' recipes: a room running a version fetched from elsewhere is
told when its author publishes a newer one, with what changed, and keeps running the
version it pinned until an admin moves it.

Run as a periodic job of `potluck serve`. The notice enters the gateway like any other
event (through the intake, as the scheduler's), keyed by room and version, so a room hears
of each new version once, across restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from runtime.recipes import diff

from .library import Library, Saved
from .receipts import kinds, version_store
from .receipts.nip19 import Address, naddr_encode
from .receipts.travel import FetchError, fetch_recipe
from .store.db import Store
from .store.rooms import attached_versions

log = logging.getLogger("potluck.updates")
Notify = Callable[[str, str, str], Awaitable[None]]  # (room key, text, dedup key)


@dataclass(frozen=True)
class Pinned:
    """A room running a stranger's version."""

    room_key: str
    saved: Saved
    author: str


def pinned_rooms(store: Store, library: Library, own_pubkey: str) -> list[Pinned]:
    """Rooms running a stranger's version: one whose signed event here is another author's
    (fetched and remembered), never this install's own."""
    found = []
    for platform, room, version in attached_versions(store):
        authors = {e.pubkey for e, _ in version_store.version_events(store, version)}
        if authors and own_pubkey not in authors:
            found.append(Pinned(f"{platform}:{room}", library.get(version), sorted(authors)[0]))
    return found


def announcement(old: Saved, new: Saved) -> str:
    """What the room is told. Pure."""
    changes = "\n".join(f"  {c.render()}" for c in diff(old.recipe, new.recipe)) or "  (no changes)"
    return (
        f"{old.recipe.name} has a newer version by its author: {new.ref}\n{changes}\n"
        f"This room keeps running {old.ref}; an admin moves it with /recipe use {new.ref}"
    )


async def check_updates(
    store: Store,
    library: Library,
    relays: Sequence[str],
    own_pubkey: str,
    notify: Notify,
) -> int:
    """Ask the relays for each pinned recipe's latest version; tell each room once about a
    newer one (kept here, never attached). Returns how many rooms were told."""
    if not relays:
        return 0
    told = 0
    latest: dict[tuple[str, str], Saved | None] = {}
    for pinned in pinned_rooms(store, library, own_pubkey):
        key = (pinned.author, pinned.saved.recipe.name)
        if key not in latest:
            address = Address(pinned.saved.recipe.name, pinned.author, kinds.RECIPE_LATEST)
            try:
                fetched = await fetch_recipe(naddr_encode(address), relays)
            except FetchError as exc:
                log.info("no newer version of %s known: %s", pinned.saved.ref, exc)
                latest[key] = None
                continue
            version_store.remember(store, fetched.event, fetched.relay)
            latest[key] = library.keep(fetched.recipe, "fetched")
        new = latest[key]
        if new is None or new.id == pinned.saved.id or _older(library, new, pinned.saved):
            continue
        await notify(pinned.room_key, announcement(pinned.saved, new), new.id[:16])
        told += 1
    return told


def _older(library: Library, candidate: Saved, current: Saved) -> bool:
    """Whether `candidate` is an ancestor of what the room runs (a room that moved ahead,
    e.g. to its own fork of a later version, is not told of an older one)."""
    return any(
        isinstance(item, Saved) and item.id == candidate.id
        for item in library.lineage(current.id)[1:]
    )
