"""The NIP-01 `REQ` filters that find Potluck's events on any relay. Pure, no I/O.

Relays index single-letter tags only (NIP-01: "all single-letter key tags are expected to be
indexed", first value only), so format v2 puts every reference a reader follows in one:

- any event by id: `{"ids": [ID]}`
- a whole session, from its open mark's id R (one REQ, two filters):
  `{"ids": [R]}` and `{"#E": [R], "authors": [GW], "kinds": [4740, 4741, 4742, 4743, 4744]}`
- the session of any receipt X: fetch X by id; R is its `E` tag (X itself if X is the open
  mark, `seq` 0)
- the recipe version a session ran: the open mark's `e` tag V, `{"ids": [V]}`
- its close mark and exchange endings: in the session above, or
  `{"#E": [R], "kinds": [4743, 4744], "#L": ["potluck.ending"]}`
- a recipe version's sessions: `{"kinds": [4743], "#e": [V]}` gives their open marks
- sessions of any version of a recipe: `{"kinds": [4743], "#a": ["34745:AUTHOR:NAME"]}`
- sessions anyone ran with an author's recipes: `{"kinds": [4743], "#p": [AUTHOR]}`
- endings of a recipe's sessions, counted without reading content:
  `{"kinds": [4743, 4744], "#a": ["34745:AUTHOR:NAME"], "#l": ["completed", …]}`
- a version by its version id (the SHA-256 of its content): `{"kinds": [4745], "#x": [VID]}`
- every version of a recipe: `{"kinds": [4745], "#a": ["34745:AUTHOR:NAME"]}`
- a recipe's latest version: `{"kinds": [34745], "authors": [AUTHOR], "#d": [NAME]}`, whose
  `e` tag names the version event
- forks and edits of a version: `{"kinds": [4745], "#e": [V]}`
- recipes by name or topic (Discover): `{"kinds": [34745], "#d": [NAME]}`,
  `{"kinds": [34745, 4745], "#t": [TAG]}`

GW is the gateway key that signed the receipts (the `pubkey` of any of them). Results are
untrusted until checked: `matches` re-applies a filter locally, so an event a relay sends
for another query is ignored, and callers verify ids and signatures themselves.
"""

from __future__ import annotations

from typing import Any

from . import kinds
from .chain import latest_address
from .endings import NAMESPACE, Ending
from .nostr import Event

Filter = dict[str, Any]
RECEIPTS = sorted(kinds.RECEIPT_KINDS)


def by_id(*event_ids: str) -> Filter:
    return {"ids": list(event_ids)}


def session(root_id: str, gateway_pubkey: str) -> list[Filter]:
    """The open mark and every later receipt of its session (one REQ, two filters)."""
    return [
        by_id(root_id),
        {"#E": [root_id], "authors": [gateway_pubkey], "kinds": RECEIPTS},
    ]


def sessions_of_version(version_event_id: str) -> Filter:
    return {"kinds": [kinds.SESSION_MARK], "#e": [version_event_id]}


def sessions_of_recipe(author_pubkey: str, name: str) -> Filter:
    return {"kinds": [kinds.SESSION_MARK], "#a": [latest_address(author_pubkey, name)]}


def sessions_with_recipes_of(author_pubkey: str) -> Filter:
    return {"kinds": [kinds.SESSION_MARK], "#p": [author_pubkey]}


def endings(author_pubkey: str, name: str, *which: Ending) -> Filter:
    found: Filter = {
        "kinds": [kinds.SESSION_MARK, kinds.EXCHANGE_END],
        "#a": [latest_address(author_pubkey, name)],
        "#L": [NAMESPACE],
    }
    if which:
        found["#l"] = [e.value for e in which]
    return found


def version_by_id(version_id: str) -> Filter:
    return {"kinds": [kinds.RECIPE_VERSION], "#x": [version_id]}


def versions_of(author_pubkey: str, name: str) -> Filter:
    return {"kinds": [kinds.RECIPE_VERSION], "#a": [latest_address(author_pubkey, name)]}


def latest(author_pubkey: str, name: str) -> Filter:
    return {"kinds": [kinds.RECIPE_LATEST], "authors": [author_pubkey], "#d": [name]}


def forks_of(version_event_id: str) -> Filter:
    return {"kinds": [kinds.RECIPE_VERSION], "#e": [version_event_id]}


def by_name(name: str) -> Filter:
    return {"kinds": [kinds.RECIPE_LATEST], "#d": [name]}


def by_topic(tag: str) -> Filter:
    return {"kinds": [kinds.RECIPE_LATEST, kinds.RECIPE_VERSION], "#t": [tag]}


def matches(filter_: Filter, event: Event) -> bool:
    """NIP-01 filter semantics, applied locally to what a relay sent."""
    if "ids" in filter_ and event.id not in filter_["ids"]:
        return False
    if "authors" in filter_ and event.pubkey not in filter_["authors"]:
        return False
    if "kinds" in filter_ and event.kind not in filter_["kinds"]:
        return False
    if "since" in filter_ and event.created_at < filter_["since"]:
        return False
    if "until" in filter_ and event.created_at > filter_["until"]:
        return False
    for key, wanted in filter_.items():
        if key.startswith("#") and len(key) == 2:
            values = {t[1] for t in event.tags if len(t) > 1 and t[0] == key[1]}
            if not values & set(wanted):
                return False
    return True


def matches_any(filters: list[Filter], event: Event) -> bool:
    return any(matches(f, event) for f in filters)
