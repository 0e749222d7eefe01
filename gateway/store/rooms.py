"""Rooms and their sessions in the store: one attached recipe version, one live session."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from .db import Store
from .models import Room, Session, now


def ensure_room(store: Store, platform: str, platform_room_id: str, title: str = "") -> int:
    """The room's id, creating the row on first sight."""
    with store.session.begin() as db:
        room = db.scalar(
            select(Room).where(Room.platform == platform, Room.platform_room_id == platform_room_id)
        )
        if room is None:
            room = Room(
                platform=platform, platform_room_id=platform_room_id, title=title, settings={}
            )
            db.add(room)
            db.flush()
        return room.id


def update_settings(store: Store, room_id: int, **changes: object) -> dict:
    with store.session.begin() as db:
        room = db.get(Room, room_id)
        room.settings = {**(room.settings or {}), **changes}
        return dict(room.settings)


def attach(store: Store, room_id: int, version_id: str) -> None:
    with store.session.begin() as db:
        db.get(Room, room_id).recipe_version_id = version_id


def start_session(store: Store, room_id: int, version_id: str, live: bool = True) -> str:
    """A new live session; the room's previous live session, if any, is ended. With
    live=False, a side session (a scheduled run) that leaves the room's own alone."""
    session_id = str(uuid.uuid4())
    with store.session.begin() as db:
        if live:
            for old in db.scalars(
                select(Session).where(Session.room_id == room_id, Session.status == "live")
            ):
                old.status, old.ended_at = "ended", now()
        db.add(
            Session(
                id=session_id,
                room_id=room_id,
                recipe_version_id=version_id,
                status="live" if live else "side",
            )
        )
    return session_id


def end_session(store: Store, session_id: str, status: str = "ended") -> None:
    with store.session.begin() as db:
        session = db.get(Session, session_id)
        if session is not None and session.status in ("live", "side"):
            session.status, session.ended_at = status, now()


def find_room(store: Store, spec: str) -> int | None:
    """`platform:room-id`, or a numeric room id."""
    if spec.isdigit():
        return int(spec)
    platform, _, room = spec.partition(":")
    with store.session() as db:
        return db.scalar(
            select(Room.id).where(Room.platform == platform, Room.platform_room_id == room)
        )


def room_recipe(store: Store, room_id: int) -> tuple[str | None, Session | None]:
    """The version attached to a room, and its live session if there is one."""
    with store.session() as db:
        room = db.get(Room, room_id)
        live = db.scalar(
            select(Session).where(Session.room_id == room_id, Session.status == "live")
        )
        return (room.recipe_version_id if room else None), live


def room_ids(store: Store, platform: str) -> dict[int, str]:
    """Every room of a platform the store knows: id → the platform's room id."""
    with store.session() as db:
        return {
            r.id: r.platform_room_id
            for r in db.scalars(select(Room).where(Room.platform == platform))
        }


def attached_versions(store: Store) -> list[tuple[str, str, str]]:
    """(platform, platform room id, attached version id) of every room with a recipe."""
    with store.session() as db:
        rows = db.execute(
            select(Room.platform, Room.platform_room_id, Room.recipe_version_id).where(
                Room.recipe_version_id.is_not(None)
            )
        ).all()
    return [(platform, room, version) for platform, room, version in rows]
