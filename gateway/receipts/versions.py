"""Recipe versions as Nostr events (format v2): build them, and check one from a stranger.
Pure, no I/O.

A version is a *regular* event (kind 4745): relays keep every one, so a version a receipt
points at stays fetchable by id after newer ones are published. Its content is the
recipe's canonical JSON, byte for byte, so the version id is the SHA-256 of the content and
anyone can recompute it. A separate *addressable* pointer (kind 34745, `d` = recipe name)
names the author's latest version.

A fetched event is a stranger's input: `check_version` refuses oversize events, forged ids
and signatures, content that is not a valid recipe (the schema also refuses text that looks
like a secret), content that is not canonical, and tags that disagree with the content, each
with a reason a person can act on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from runtime.recipes import Recipe, RecipeError, validate_data, version_id
from runtime.recipes.loader import MAX_BYTES
from runtime.recipes.version import SHORT, canonical_bytes

from . import kinds
from .chain import FORMAT_TAG, latest_address
from .nostr import Event, Signer, check_event

MAX_EVENT_BYTES = 2 * MAX_BYTES  # a version's JSON: its content escaped, plus tags
MAX_TAGS = 64
MAX_TAG_VALUE = 1024  # characters in any one tag element


@dataclass(frozen=True)
class ParentRef:
    """The version a recipe was forked or edited from: always its version id; its exact
    event, author and a relay where known."""

    version_id: str
    event_id: str | None = None
    author_pubkey: str | None = None
    relay: str = ""


def version_event(
    signer: Signer,
    recipe: Recipe,
    parent: ParentRef | None,
    created_at: int,
) -> Event:
    """One recipe version, signed. `parent` must be the recipe's own `forked_from`."""
    content = canonical_bytes(recipe).decode("utf-8")
    vid = hashlib.sha256(content.encode("utf-8")).hexdigest()
    if (parent.version_id if parent else None) != recipe.forked_from:
        raise ValueError("the parent reference must name the recipe's forked_from version")
    tags = [
        [FORMAT_TAG, "2"],
        ["name", recipe.name],
        ["x", vid],  # the version id: SHA-256 of the content (as NIP-94's `x`), indexed
        ["title", recipe.title],
        ["a", latest_address(signer.pubkey, recipe.name)],  # `#a` lists a recipe's versions
    ]
    tags += [["t", tag] for tag in recipe.tags]
    if parent is not None:
        tags.append(["forked_from", parent.version_id])
        if parent.event_id and parent.author_pubkey:
            # NIP-01 `e` (4th element: the author) and NIP-22's `k`/`p` for the parent
            # version, so `#e` finds a version's forks and `#p` its author's reach.
            tags += [
                ["e", parent.event_id, parent.relay, parent.author_pubkey],
                ["k", str(kinds.RECIPE_VERSION)],
                ["p", parent.author_pubkey, parent.relay],
            ]
    tags.append(["alt", f"Potluck recipe {recipe.name}@{vid[:SHORT]}: {recipe.title}"[:200]])
    return signer.sign(created_at, kinds.RECIPE_VERSION, tags, content)


def pointer_event(signer: Signer, version: Event, relay: str, created_at: int) -> Event:
    """The addressable "latest version" pointer of a recipe, naming one of its versions."""
    if version.pubkey != signer.pubkey:
        raise ValueError("a pointer names its own author's version, not another's")
    name = version.tag_value("name") or ""
    tags = [
        [FORMAT_TAG, "2"],
        ["d", name],
        ["e", version.id, relay, version.pubkey],
        ["k", str(kinds.RECIPE_VERSION)],
        ["x", version.tag_value("x") or ""],
        ["title", version.tag_value("title") or ""],
    ]
    tags += [["t", t[1]] for t in version.tags if t[0] == "t" and len(t) > 1]
    tags.append(["alt", f"Potluck recipe {name}: latest version"])
    return signer.sign(created_at, kinds.RECIPE_LATEST, tags, "")


# -- checking what a relay sent ------------------------------------------------------------


class Refused(ValueError):
    """An event that is not what it claims; the message says why, for a person to read."""


@dataclass(frozen=True)
class Version:
    """A checked recipe version event."""

    recipe: Recipe
    version_id: str
    author_pubkey: str
    event: Event
    forked_from: ParentRef | None


def check_shape(event: Event, *, kind: int | None = None, author: str | None = None) -> None:
    """Size, kind, author, id and signature; Refused says which one failed."""
    size = len(event.to_json().encode("utf-8"))
    if size > MAX_EVENT_BYTES:
        raise Refused(f"event {event.id[:12]}… is {size} bytes, over the {MAX_EVENT_BYTES} cap")
    if len(event.tags) > MAX_TAGS:
        raise Refused(f"event {event.id[:12]}… has {len(event.tags)} tags, over {MAX_TAGS}")
    if any(len(value) > MAX_TAG_VALUE for tag in event.tags for value in tag):
        raise Refused(f"event {event.id[:12]}… has a tag value over {MAX_TAG_VALUE} characters")
    if kind is not None and event.kind != kind:
        name = kinds.NAMES.get(event.kind, f"kind {event.kind}")
        raise Refused(f"event {event.id[:12]}… is a {name}, not a {kinds.NAMES.get(kind, kind)}")
    if author is not None and event.pubkey != author:
        raise Refused(
            f"event {event.id[:12]}… is signed by {event.pubkey[:12]}…, not by the author "
            f"the link names ({author[:12]}…)"
        )
    if (problem := check_event(event)) is not None:
        raise Refused(f"event {event.id[:12]}… is forged or damaged: {problem}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Refused(f"the recipe's JSON has the key {key!r} twice")
        seen[key] = value
    return seen


def check_version(event: Event, *, author: str | None = None) -> Version:
    """A recipe version event from anywhere, checked all the way down, or Refused."""
    check_shape(event, kind=kinds.RECIPE_VERSION, author=author)
    if event.tag_value(FORMAT_TAG) != "2":
        raise Refused(f"event {event.id[:12]}… is not in Potluck's event format 2")
    raw = event.content.encode("utf-8")
    if len(raw) > MAX_BYTES:
        raise Refused(f"the recipe is {len(raw)} bytes, over the {MAX_BYTES // 1024} KiB cap")
    try:
        data = json.loads(event.content, object_pairs_hook=_no_duplicates)
    except Refused:
        raise
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the content is not JSON: {exc}") from None
    try:
        recipe = validate_data(data, f"event {event.id[:12]}…")
    except RecipeError as exc:
        raise Refused(f"the content is not a valid recipe: {exc}") from None
    vid = version_id(recipe)
    if canonical_bytes(recipe) != raw:
        raise Refused("the content is not the recipe's canonical form, so its id cannot match")
    if event.tag_value("x") != vid:
        raise Refused(
            f"the content is version {vid[:SHORT]}, but the event's version tag says "
            f"{str(event.tag_value('x'))[:SHORT]}"
        )
    if event.tag_value("name") != recipe.name:
        raise Refused(f"the name tag says {event.tag_value('name')!r}, the recipe {recipe.name!r}")
    if event.tag_value("forked_from") != recipe.forked_from:
        raise Refused("the forked_from tag disagrees with the recipe's own forked_from")
    parent = None
    if recipe.forked_from:
        link = event.tag("e")
        if link is not None and (len(link) < 4 or not _hex64(link[1]) or not _hex64(link[3])):
            raise Refused("the parent reference is not a NIP-01 `e` tag with its author")
        parent = ParentRef(
            recipe.forked_from,
            link[1] if link else None,
            link[3] if link else None,
            _relay(link[2]) if link else "",
        )
    return Version(recipe, vid, event.pubkey, event, parent)


@dataclass(frozen=True)
class Pointer:
    name: str
    author_pubkey: str
    version_event_id: str
    version_id: str
    relay: str
    event: Event


def check_pointer(event: Event, *, author: str, name: str) -> Pointer:
    """A "latest version" pointer for exactly this author and name, or Refused."""
    check_shape(event, kind=kinds.RECIPE_LATEST, author=author)
    if event.tag_value("d") != name:
        raise Refused(f"the pointer is for {event.tag_value('d')!r}, not {name!r}")
    link = event.tag("e")
    if link is None or not _hex64(link[1]):
        raise Refused("the pointer names no version event")
    if len(link) > 3 and link[3] != author:
        raise Refused("the pointer names a version by another author")
    return Pointer(
        name,
        author,
        link[1],
        event.tag_value("x") or "",
        _relay(link[2] if len(link) > 2 else ""),
        event,
    )


def _hex64(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _relay(url: str) -> str:
    """A relay hint from a stranger's tag: a ws(s) URL of sane length, or nothing."""
    url = url.strip()
    return url if url.startswith(("wss://", "ws://")) and len(url) <= 255 else ""
