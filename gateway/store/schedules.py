"""Rooms' schedules in the store: plain rows, one per `/schedule add`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from .db import Store
from .models import Schedule


@dataclass(frozen=True)
class Saved:
    room: str
    schedule_id: str
    when: str
    recipe: str
    text: str
    next_run: datetime | None


def _saved(row: Schedule) -> Saved:
    return Saved(row.room, row.schedule_id, row.when, row.recipe, row.text, row.next_run)


def add(store: Store, saved: Saved) -> None:
    with store.session.begin() as db:
        db.add(
            Schedule(
                room=saved.room,
                schedule_id=saved.schedule_id,
                when=saved.when,
                recipe=saved.recipe,
                text=saved.text,
                next_run=saved.next_run,
            )
        )


def every(store: Store) -> list[Saved]:
    with store.session() as db:
        return [_saved(row) for row in db.scalars(select(Schedule).order_by(Schedule.id))]


def remove(store: Store, room: str, schedule_id: str) -> bool:
    with store.session.begin() as db:
        gone = db.execute(
            delete(Schedule).where(Schedule.room == room, Schedule.schedule_id == schedule_id)
        )
        return bool(gone.rowcount)


def set_next_run(store: Store, room: str, schedule_id: str, next_run: datetime | None) -> None:
    """Where the schedule stands: the run a restart must make (or report missed) next."""
    with store.session.begin() as db:
        db.execute(
            update(Schedule)
            .where(Schedule.room == room, Schedule.schedule_id == schedule_id)
            .values(next_run=next_run)
        )
