"""People's reactions and which agent turn each platform message shows: the only place that
writes them.

A reaction is stored before anything acts on it, under the unique (platform, room, event id)
key, so a redelivered one is a no-op and a crash loses nothing: after a restart, what was
stored but not handled is handed back (`unfinished`). The outlet writes which receipt a
platform message shows (`shown`) as a turn is shown, so a reaction on that message can name
the turn it judges.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from adapters.base import Reaction

from .db import Store
from .models import ReactionRow, TurnMessage

THREAD_MARKS = (":", "|")  # how adapters name a topic (chat:topic) or thread (room|root)


@dataclass(frozen=True)
class Shown:
    """The agent turn a platform message shows, and where."""

    room: str
    receipt_id: str
    session_id: str


class Reactions:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- which turn a message shows ---------------------------------------------------------

    def shown(
        self, platform: str, room: str, message_ids: list[str], receipt_id: str, session_id: str
    ) -> None:
        """These platform messages show this agent turn (its receipt's id)."""
        rows = [
            {
                "platform": platform,
                "room": room[:255],
                "message_id": message_id[:255],
                "receipt_id": receipt_id,
                "session_id": session_id,
            }
            for message_id in dict.fromkeys(message_ids)
            if message_id
        ]
        if not rows:
            return
        try:
            with self.store.write() as conn:
                conn.execute(insert(TurnMessage), rows)
        except IntegrityError:  # shown again (a resend after a restart): the first stands
            pass

    def turn_of(self, reaction: Reaction) -> Shown | None:
        """The agent turn the reacted message shows, or None when it shows none (a person's
        message, a notice, a message from before the bot kept track)."""
        rooms = [reaction.room]
        with self.store.session() as db:
            query = select(TurnMessage).where(
                TurnMessage.platform == reaction.platform,
                TurnMessage.message_id == reaction.target,
            )
            if reaction.whole_chat:
                query = query.where(
                    or_(
                        TurnMessage.room == reaction.room,
                        *(TurnMessage.room.startswith(reaction.room + m) for m in THREAD_MARKS),
                    )
                )
            else:
                query = query.where(TurnMessage.room.in_(rooms))
            row = db.scalars(query.order_by(TurnMessage.id).limit(1)).first()
        return None if row is None else Shown(row.room, row.receipt_id, row.session_id)

    # -- reactions ---------------------------------------------------------------------------

    def record(self, room_id: int, reaction: Reaction) -> int | None:
        """The new reaction's id, or None when this event was stored before."""
        try:
            with self.store.write() as conn:
                return conn.execute(
                    insert(ReactionRow).returning(ReactionRow.id),
                    {
                        "room_id": room_id,
                        "platform": reaction.platform,
                        "room": reaction.room[:255],
                        "event_id": reaction.event_id[:255],
                        "sender": reaction.sender[:255],
                        "target": reaction.target[:255],
                        "emoji": reaction.emoji[:64],
                        "added": reaction.added,
                        "undoes": reaction.undoes[:255] if reaction.undoes else None,
                        "vote": reaction.vote,
                        "live": False,
                        "state": "received",
                    },
                ).scalar_one()
        except IntegrityError:
            return None

    def set_state(self, row_id: int, state: str, reason: str | None = None) -> None:
        """received → processing → counted | ignored | failed."""
        values: dict[str, object] = {"state": state}
        if reason is not None:
            values["reason"] = reason[:500]
        with self.store.write() as conn:
            conn.execute(update(ReactionRow).where(ReactionRow.id == row_id).values(**values))

    def mark(self, row_id: int, state: str) -> None:
        """The room worker's marks: processing, failed; "handled" leaves the state the
        verdict gave it (counted, ignored) as it is."""
        if state != "handled":
            self.set_state(row_id, state)

    def get(self, row_id: int) -> ReactionRow | None:
        with self.store.session() as db:
            return db.get(ReactionRow, row_id)

    def undone(self, platform: str, room: str, event_id: str) -> ReactionRow | None:
        """The stored reaction an undo names (by its platform event id)."""
        with self.store.session() as db:
            return db.scalars(
                select(ReactionRow).where(
                    ReactionRow.platform == platform,
                    ReactionRow.event_id == event_id,
                    or_(
                        ReactionRow.room == room,
                        *(ReactionRow.room.startswith(room + m) for m in THREAD_MARKS),
                    ),
                )
            ).first()

    def unfinished(self, room_ids: list[int]) -> list[ReactionRow]:
        """Reactions stored but never handled, or handled when the gateway died, in order."""
        with self.store.session() as db:
            return list(
                db.scalars(
                    select(ReactionRow)
                    .where(
                        ReactionRow.room_id.in_(room_ids),
                        ReactionRow.state.in_(("received", "processing")),
                    )
                    .order_by(ReactionRow.id)
                )
            )
