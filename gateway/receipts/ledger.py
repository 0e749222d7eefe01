"""The receipts ledger: signs each exchange into its session's chain and stores it.

The I/O shell around chain.py. Appends to one session are serialised by a lock and by the
(session_id, seq) unique key, so two writers can never fork a chain.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from ..store.db import Store
from ..store.models import Publication, ReceiptRow, RecipeVersion, Room, Session, now
from . import kinds
from .chain import Link, RecipeRef, Report, receipt, recipe_event, verify_chain
from .keys import KeyPair
from .nostr import Event, Signer, parse_event


@dataclass
class _Tip:
    """What the next append of a session needs, cached so an append is one INSERT."""

    room_id: int
    recipe: RecipeRef
    transparent: bool
    relays: tuple[str, ...]
    seq: int  # of the next event
    prev_id: str | None


class LedgerError(LookupError):
    pass


class Ledger:
    def __init__(
        self,
        store: Store,
        keys: KeyPair,
        clock: Callable[[], float] = time.time,
        default_relays: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.keys = keys
        self.signer = Signer(keys.secret)
        self.clock = clock
        self.default_relays = default_relays
        self._tips: dict[str, _Tip] = {}
        self._lock = threading.RLock()
        self._insert_receipt = insert(ReceiptRow)

    # -- writing ---------------------------------------------------------------------------

    def _tip(self, session_id: str) -> _Tip:
        tip = self._tips.get(session_id)
        if tip is not None:
            return tip
        with self.store.session() as db:
            row = db.get(Session, session_id)
            if row is None:
                raise LedgerError(f"no session {session_id}")
            room = db.get(Room, row.room_id)
            settings = room.settings or {}
            version = db.get(RecipeVersion, row.recipe_version_id)
            last = db.execute(
                select(ReceiptRow.seq, ReceiptRow.id)
                .where(ReceiptRow.session_id == session_id)
                .order_by(ReceiptRow.seq.desc())
                .limit(1)
            ).first()
        relays: tuple[str, ...] = ()
        if settings.get("publish"):
            relays = tuple(settings.get("relays") or self.default_relays)
        tip = _Tip(
            room_id=row.room_id,
            recipe=RecipeRef(
                version.name if version else "", row.recipe_version_id, self.signer.pubkey
            ),
            transparent=bool(settings.get("transparent")),
            relays=relays,
            seq=0 if last is None else last.seq + 1,
            prev_id=None if last is None else last.id,
        )
        self._tips[session_id] = tip
        return tip

    def _append(self, session_id: str, kind: int, fields: dict, text: str | None) -> Event:
        with self._lock:
            tip = self._tip(session_id)
            salt = secrets.token_bytes(32)
            event = receipt(
                self.signer,
                Link(session_id, tip.seq, tip.prev_id, tip.recipe),
                kind,
                fields,
                text=text,
                salt=salt,
                transparent=tip.transparent,
                created_at=int(self.clock()),
            )
            with self.store.write() as conn:
                conn.execute(
                    self._insert_receipt,
                    {
                        "id": event.id,
                        "session_id": session_id,
                        "room_id": tip.room_id,
                        "seq": tip.seq,
                        "kind": kind,
                        "event_json": event.to_json(),
                        "plaintext": text,
                        "salt": salt.hex() if text is not None else None,
                        "created_at": now(),
                    },
                )
                if tip.relays:
                    conn.execute(
                        insert(Publication),
                        [
                            {
                                "event_id": event.id,
                                "relay": relay,
                                "state": "pending",
                                "attempts": 0,
                                "next_try_at": now(),
                                "updated_at": now(),
                            }
                            for relay in tip.relays
                        ],
                    )
            tip.seq, tip.prev_id = tip.seq + 1, event.id
            return event

    @contextmanager
    def batch(self) -> Iterator[Connection]:
        """Receipts appended inside share one commit (e.g. the receipts of one exchange), and
        so do the caller's own statements run on the connection it yields: the message and
        its receipt are stored together or not at all. On failure the cached chain tips are
        dropped and reloaded."""
        with self._lock:
            try:
                with self.store.write() as conn:
                    yield conn
            except BaseException:
                self._tips.clear()
                raise

    def open(self, session_id: str, recipe_name: str, version_id: str) -> Event:
        """First link of a session's chain; names the recipe version it runs (read from the
        session's row: the name and version are given for the reader of this call)."""
        self._tips.pop(session_id, None)
        return self._append(session_id, kinds.SESSION_MARK, {"mark": "open"}, None)

    def person(self, session_id: str, platform_user: str, text: str) -> Event:
        sender = self.keys.pseudonym("person", platform_user)
        return self._append(session_id, kinds.PERSON_MESSAGE, {"sender": sender}, text)

    def turn(
        self,
        session_id: str,
        *,
        agent: str,
        model: str,
        text: str,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        finish: str = "stop",
    ) -> Event:
        fields = {
            "agent": agent,
            "model": model,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": round(cost_usd, 8),
            "finish": finish,
        }
        return self._append(session_id, kinds.AGENT_TURN, fields, text)

    def tool(
        self,
        session_id: str,
        *,
        agent: str,
        tool: str,
        command: str,
        exit_code: int,
        output: str,
        wall_ms: int,
        killed: str | None = None,
    ) -> Event:
        fields = {
            "agent": agent,
            "tool": tool,
            "exit_code": exit_code,
            "wall_ms": wall_ms,
            "output_sha256": hashlib.sha256(output.encode()).hexdigest(),
            "output_bytes": len(output.encode()),
            "killed": killed,
        }
        return self._append(session_id, kinds.TOOL_CALL, fields, command)

    def record_turn(self, session_id: str, turn: Any) -> Event:
        """A conductor `Turn` as a receipt."""
        return self.turn(
            session_id,
            agent=turn.agent,
            model=turn.model,
            text=turn.text,
            tokens_in=turn.tokens_in,
            tokens_out=turn.tokens_out,
            cost_usd=turn.cost_usd,
            finish=turn.finish,
        )

    def record_tool(self, session_id: str, agent: str, outcome: Any) -> Event:
        """A tool call's `ToolOutcome` as a receipt: the command, and a digest of the output."""
        return self.tool(
            session_id,
            agent=agent,
            tool=outcome.call.name,
            command=outcome.command,
            exit_code=outcome.exit_code,
            output=outcome.output,
            wall_ms=outcome.wall_ms,
            killed=outcome.killed,
        )

    def end_exchange(self, session_id: str, ending: str, detail: str = "") -> Event:
        """How one exchange (the agents answering one message) ended."""
        fields = {"mark": "exchange", "ending": str(ending), "detail": detail[:300]}
        return self._append(session_id, kinds.SESSION_MARK, fields, None)

    def close(self, session_id: str, ending: str, detail: str = "") -> Event:
        tip = self._tip(session_id)
        event = self._append(
            session_id,
            kinds.SESSION_MARK,
            {"mark": "close", "reason": str(ending), "detail": detail[:300], "count": tip.seq + 1},
            None,
        )
        self._tips.pop(session_id, None)
        return event

    def sign_recipe(
        self, name: str, version_id: str, canonical_json: str, forked_from: str | None, title: str
    ) -> Event:
        return recipe_event(
            self.signer,
            RecipeRef(name, version_id, self.signer.pubkey),
            canonical_json,
            forked_from,
            title,
            int(self.clock()),
        )

    # -- reading ---------------------------------------------------------------------------

    def rows(self, session_id: str) -> list[ReceiptRow]:
        with self.store.session() as db:
            return list(
                db.scalars(
                    select(ReceiptRow)
                    .where(ReceiptRow.session_id == session_id)
                    .order_by(ReceiptRow.seq)
                )
            )

    def events(self, session_id: str) -> list[Event]:
        return [parse_event(json.loads(row.event_json)) for row in self.rows(session_id)]

    def verify_session(self, session_id: str) -> Report:
        rows = self.rows(session_id)
        if not rows:
            return Report(problems=[f"session {session_id} has no receipts"])
        events, reveals, report = [], {}, Report()
        for row in rows:
            try:
                event = parse_event(json.loads(row.event_json))
            except ValueError as exc:
                report.problems.append(f"#{row.seq} ({row.id[:12]}…): unreadable: {exc}")
                continue
            if event.id != row.id:
                report.problems.append(
                    f"#{row.seq}: stored under id {row.id[:12]}… but the "
                    f"event says {event.id[:12]}…"
                )
            events.append(event)
            if row.plaintext is not None and row.salt is not None:
                reveals[event.id] = (row.plaintext, bytes.fromhex(row.salt))
        chain = verify_chain(events, pubkey=self.signer.pubkey, reveals=reveals)
        chain.problems[:0] = report.problems
        return chain

    def sessions_of_room(self, room_id: int) -> list[str]:
        with self.store.session() as db:
            return list(
                db.scalars(
                    select(Session.id)
                    .where(Session.room_id == room_id)
                    .order_by(Session.started_at)
                )
            )

    def export(self, session_id: str) -> Iterator[str]:
        """JSON lines of plain NIP-01 events, readable by any Nostr tool."""
        for row in self.rows(session_id):
            yield row.event_json

    def reveal(self, event_id: str) -> tuple[Event, str, bytes]:
        with self.store.session() as db:
            row = db.get(ReceiptRow, event_id)
        if row is None or row.plaintext is None or row.salt is None:
            raise LedgerError(f"no committed text stored for event {event_id[:12]}…")
        return parse_event(json.loads(row.event_json)), row.plaintext, bytes.fromhex(row.salt)

    def count(self) -> int:
        with self.store.session() as db:
            return db.scalar(select(func.count()).select_from(ReceiptRow)) or 0
