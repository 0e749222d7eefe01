"""People's and agents' messages, and the adapters' cursors: the only place that writes them.

An incoming event is stored before anything acts on it, under the unique (room, event id)
key, so a redelivered event is a no-op and a crash loses nothing: after a restart, what was
stored but not handled is handed back (`unfinished`).
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from adapters.base import Incoming

from .db import Store
from .models import AdapterCursor, Message, now


class Messages:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record_incoming(
        self, room_id: int, incoming: Incoming, *, addressed: bool, session_id: str | None = None
    ) -> int | None:
        """The new message's id, or None when this event was stored before (redelivered)."""
        try:
            with self.store.write() as conn:
                return conn.execute(
                    insert(Message).returning(Message.id),
                    {
                        "room_id": room_id,
                        "session_id": session_id,
                        "platform_event_id": incoming.event_id,
                        "direction": "in",
                        "sender": incoming.sender_name[:255],
                        "sender_id": incoming.sender[:255],
                        "addressed": addressed,
                        "text": incoming.text,
                        "state": "received",
                    },
                ).scalar_one()
        except IntegrityError:
            return None

    def set_state(self, message_id: int, state: str) -> None:
        """received → processing → handled | failed | cut."""
        with self.store.write() as conn:
            conn.execute(update(Message).where(Message.id == message_id).values(state=state))

    @staticmethod
    def join_session(conn: Connection, room_id: int, event_id: str, session_id: str) -> None:
        """A person's stored message becomes part of a session (in the caller's commit)."""
        conn.execute(
            update(Message)
            .where(Message.platform_event_id == event_id, Message.room_id == room_id)
            .values(session_id=session_id)
        )

    @staticmethod
    def record_agent(
        conn: Connection, room_id: int, session_id: str, agent: str, text: str
    ) -> None:
        """An agent's finished turn (in the caller's commit, beside its receipt)."""
        conn.execute(
            insert(Message),
            {
                "room_id": room_id,
                "session_id": session_id,
                "direction": "out",
                "sender": agent,
                "text": text,
                "state": "sent",
            },
        )

    def unfinished(self, room_ids: list[int]) -> list[Message]:
        """People's messages stored but never handled (received) or handled when the gateway
        died (processing), oldest first."""
        with self.store.session() as db:
            return list(
                db.scalars(
                    select(Message)
                    .where(
                        Message.room_id.in_(room_ids),
                        Message.direction == "in",
                        Message.state.in_(("received", "processing")),
                    )
                    .order_by(Message.id)
                )
            )

    def of_session(self, session_id: str) -> list[Message]:
        with self.store.session() as db:
            return list(
                db.scalars(
                    select(Message).where(Message.session_id == session_id).order_by(Message.id)
                )
            )

    # -- adapters' positions ---------------------------------------------------------------

    def cursor(self, adapter: str) -> str | None:
        with self.store.session() as db:
            row = db.get(AdapterCursor, adapter)
            return row.cursor if row else None

    def save_cursor(self, adapter: str, cursor: str) -> None:
        with self.store.session.begin() as db:
            row = db.get(AdapterCursor, adapter)
            if row is None:
                db.add(AdapterCursor(adapter=adapter, cursor=cursor))
            else:
                row.cursor, row.updated_at = cursor, now()
