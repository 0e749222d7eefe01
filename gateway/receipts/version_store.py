"""Recipe events in the store: this install's signed versions and pointers, and versions
fetched from relays, kept exactly as signed (the JSON text is what verifies)."""

from __future__ import annotations

import json

from sqlalchemy import Connection, insert, select

from ..store.db import Store
from ..store.models import RecipeEvent, now
from . import kinds
from .nostr import Event, parse_event


def row_values(event: Event, origin: str, relay: str | None = None) -> dict:
    version_id = event.tag_value("x") or ""
    name = event.tag_value("name") or event.tag_value("d") or ""
    return {
        "id": event.id,
        "kind": event.kind,
        "pubkey": event.pubkey,
        "version_id": version_id,
        "name": name[:64],
        "signed_at": event.created_at,
        "origin": origin,
        "relay": (relay or None) and relay[:255],
        "event_json": event.to_json(),
        "created_at": now(),
    }


def keep(conn: Connection, event: Event, origin: str, relay: str | None = None) -> bool:
    """Store an event once (by id); False if it was already there."""
    if conn.execute(select(RecipeEvent.id).where(RecipeEvent.id == event.id)).first():
        return False
    conn.execute(insert(RecipeEvent), [row_values(event, origin, relay)])
    return True


def remember(store: Store, event: Event, relay: str | None = None) -> bool:
    """Keep a version (or pointer) fetched from a relay, checked by the caller
    (travel.fetch_recipe does), so a fork or a session can name its exact event."""
    if event.kind not in (kinds.RECIPE_VERSION, kinds.RECIPE_LATEST):
        raise ValueError(f"kind {event.kind} is not a recipe event")
    with store.write() as conn:
        return keep(conn, event, "fetched", relay)


def _event(row: RecipeEvent) -> Event:
    return parse_event(json.loads(row.event_json))


def version_events(store: Store, version_id: str) -> list[tuple[Event, str | None]]:
    """Every stored event of this version (any author), oldest first, with its relay."""
    with store.session() as db:
        rows = db.scalars(
            select(RecipeEvent)
            .where(RecipeEvent.version_id == version_id, RecipeEvent.kind == kinds.RECIPE_VERSION)
            .order_by(RecipeEvent.signed_at, RecipeEvent.id)
        ).all()
    return [(_event(row), row.relay) for row in rows]


def find_version(store: Store, version_id: str, own_pubkey: str) -> tuple[Event, str | None] | None:
    """The event that stands for this version: its original author's (the earliest by
    another key, which this install fetched), else this install's own signature."""
    found = version_events(store, version_id)
    foreign = [item for item in found if item[0].pubkey != own_pubkey]
    own = [item for item in found if item[0].pubkey == own_pubkey]
    return (foreign or own or [None])[0]


def get(store: Store, event_id: str) -> Event | None:
    with store.session() as db:
        row = db.get(RecipeEvent, event_id)
    return None if row is None else _event(row)


def latest_pointer(store: Store, pubkey: str, name: str) -> Event | None:
    with store.session() as db:
        row = db.scalars(
            select(RecipeEvent)
            .where(
                RecipeEvent.kind == kinds.RECIPE_LATEST,
                RecipeEvent.pubkey == pubkey,
                RecipeEvent.name == name,
            )
            .order_by(RecipeEvent.signed_at.desc(), RecipeEvent.id)
            .limit(1)
        ).first()
    return None if row is None else _event(row)
