"""The receipts ledger: signs each exchange into its session's chain and stores it.

The I/O shell around chain.py and versions.py. Appends to one session are serialised by a
lock and by the (session_id, seq) unique key, so two writers can never fork a chain. A
session's chain tip is cached, and rebuilt after a restart from the chain itself (its open
mark names the recipe version), never from room settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from runtime.recipes import Recipe, RecipeError, version_id

from ..store.db import Store
from ..store.models import Publication, ReceiptRow, Room, Session, now
from . import kinds, version_store
from .chain import (
    FORMAT,
    Link,
    RecipeRef,
    Report,
    Tally,
    ending_fields,
    event_format,
    output_commitment,
    receipt,
    verify_chain,
)
from .endings import Ending
from .keys import KeyPair
from .nostr import Event, Signer, parse_event
from .versions import ParentRef, Refused, check_version, pointer_event, version_event

MAX_LINEAGE = 1000  # unsigned ancestors signed along with a version, at most


@dataclass
class _Tip:
    """What the next append of a session needs, cached so an append is one INSERT."""

    room_id: int
    recipe: RecipeRef
    transparent: bool
    relays: tuple[str, ...]
    seq: int  # of the next event
    prev_id: str | None
    prev_created: int = 0  # the previous event's created_at: the next is never earlier
    root_id: str | None = None  # the open mark's id (v2)
    format: int = FORMAT
    hint: str = ""  # relay hint for references to our own events
    exchange: Tally = field(default_factory=Tally)  # since the last exchange boundary
    exchange_start: int = 1  # seq of the first event of the current exchange
    done: Tally = field(default_factory=Tally)  # finished exchanges


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
        self._pending: list[dict[str, Any]] | None = None  # rows of the open batch
        self._pending_pubs: list[dict[str, Any]] = []

    # -- writing ---------------------------------------------------------------------------

    def _room_prefs(self, room_id: int) -> tuple[bool, tuple[str, ...]]:
        """Publishing preferences stay in the room's settings: transparency and relays."""
        with self.store.session() as db:
            room = db.get(Room, room_id)
            settings = (room.settings if room else None) or {}
        relays: tuple[str, ...] = ()
        if settings.get("publish"):
            relays = tuple(settings.get("relays") or self.default_relays)
        return bool(settings.get("transparent")), relays

    def _hint(self, relays: tuple[str, ...]) -> str:
        return (relays or self.default_relays or ("",))[0]

    def _tip(self, session_id: str) -> _Tip:
        tip = self._tips.get(session_id)
        if tip is not None:
            return tip
        with self.store.session() as db:
            row = db.get(Session, session_id)
            if row is None:
                raise LedgerError(f"no session {session_id}")
            stored = db.execute(
                select(ReceiptRow.seq, ReceiptRow.kind, ReceiptRow.event_json)
                .where(ReceiptRow.session_id == session_id)
                .order_by(ReceiptRow.seq)
            ).all()
        if not stored:
            raise LedgerError(f"session {session_id} is not open (no receipts yet)")
        transparent, relays = self._room_prefs(row.room_id)
        first = parse_event(json.loads(stored[0].event_json))
        last = parse_event(json.loads(stored[-1].event_json))
        tip = _Tip(
            room_id=row.room_id,
            recipe=self._recipe_of(first, row.recipe_version_id),
            transparent=transparent,
            relays=relays,
            seq=stored[-1].seq + 1,
            prev_id=last.id,
            prev_created=last.created_at,
            root_id=first.id,
            format=event_format(first),
            hint=self._hint(relays),
        )
        for seq, kind, event_json in stored[1:]:  # the counts a restart must not lose
            try:
                fields = json.loads(json.loads(event_json)["content"])
            except (ValueError, KeyError, TypeError):
                fields = {}  # verify_session names the damage; appends go on
            self._count(tip, seq, kind, fields)
        self._tips[session_id] = tip
        return tip

    def _recipe_of(self, open_mark: Event, version: str) -> RecipeRef:
        """The recipe a chain runs, as its open mark names it."""
        address = open_mark.tag_value("a") or ""
        parts = address.split(":", 2)
        author, name = (parts[1], parts[2]) if len(parts) == 3 else (self.signer.pubkey, "")
        if event_format(open_mark) == 1:
            return RecipeRef(name, open_mark.tag_value("recipe") or version, author)
        link = open_mark.tag("e") or ("e", "", "")
        return RecipeRef(
            name,
            open_mark.tag_value("recipe") or version,
            author,
            link[1],
            link[2] if len(link) > 2 else "",
        )

    @staticmethod
    def _count(tip: _Tip, seq: int, kind: int, fields: dict[str, Any]) -> None:
        if kind == kinds.EXCHANGE_END:
            tip.done.merge(tip.exchange)
            tip.done.exchanges += 1
            tip.exchange, tip.exchange_start = Tally(), seq + 1
        elif kind != kinds.SESSION_MARK and isinstance(fields, dict):
            tip.exchange.add(kind, fields)

    def _append(
        self,
        session_id: str,
        kind: int,
        fields: dict,
        text: str | None,
        salt: bytes | None = None,
    ) -> Event:
        with self._lock:
            tip = self._tip(session_id)
            salt = secrets.token_bytes(32) if salt is None else salt
            # A wall clock stepped back (NTP, a restored VM, `date -s`) must not make an
            # honest chain read as reordered: a receipt is never older than the one before.
            created = max(int(self.clock()), tip.prev_created)
            event = receipt(
                self.signer,
                Link(
                    session_id,
                    tip.seq,
                    tip.prev_id,
                    tip.recipe,
                    tip.root_id,
                    tip.format,
                    tip.hint,
                ),
                kind,
                fields,
                text=text,
                salt=salt,
                transparent=tip.transparent,
                created_at=created,
            )
            stamp = now()
            row = {
                "id": event.id,
                "session_id": session_id,
                "room_id": tip.room_id,
                "seq": tip.seq,
                "kind": kind,
                "event_json": event.to_json(),
                "plaintext": text,
                "salt": salt.hex() if text is not None else None,
                "created_at": stamp,
            }
            pubs = [_publication(event.id, relay, stamp) for relay in tip.relays]
            if self._pending is not None:  # inside batch(): written once, at its end
                self._pending.append(row)
                self._pending_pubs += pubs
            else:
                with self.store.write() as conn:
                    _insert(conn, [row], pubs)
            if tip.seq == 0:
                tip.root_id = event.id
            else:
                self._count(tip, tip.seq, kind, fields)
            tip.seq, tip.prev_id, tip.prev_created = tip.seq + 1, event.id, created
            return event

    @contextmanager
    def batch(self) -> Iterator[Connection]:
        """Receipts appended inside share one commit (e.g. the receipts of one exchange), and
        so do the caller's own statements run on the connection it yields: the message and
        its receipt are stored together or not at all. The receipts go in as one multi-row
        INSERT when the block ends. On failure the cached chain tips are dropped and
        reloaded."""
        with self._lock:
            outer = self._pending is not None
            if not outer:
                self._pending, self._pending_pubs = [], []
            try:
                with self.store.write() as conn:
                    if not outer and conn.dialect.name == "postgresql":
                        # Commit without waiting for the WAL flush: a crash may lose the
                        # last fraction of a second of exchanges (messages and receipts
                        # alike, never one without the other; the chain just ends earlier),
                        # and an exchange no longer waits on a disk flush.
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                    yield conn
                    if not outer and self._pending:
                        _insert(conn, self._pending, self._pending_pubs)
            except BaseException:
                self._tips.clear()
                raise
            finally:
                if not outer:
                    self._pending, self._pending_pubs = None, []

    def open(self, session_id: str, recipe_name: str, version_id: str | None = None) -> Event:
        """First link of a session's chain; names the exact recipe version event it runs
        (signed here if this install has none for it). `version_id` defaults to the one the
        session row records, and must agree with it."""
        with self._lock, self.store.session() as db:
            row = db.get(Session, session_id)
            if row is None:
                raise LedgerError(f"no session {session_id}")
            if version_id is not None and version_id != row.recipe_version_id:
                raise LedgerError(
                    f"session {session_id} runs version {row.recipe_version_id[:7]}, "
                    f"not {version_id[:7]}"
                )
            opened = db.scalar(
                select(func.count())
                .select_from(ReceiptRow)
                .where(ReceiptRow.session_id == session_id)
            )
        with self._lock:
            if opened:
                raise LedgerError(f"session {session_id} is already open")
            vid = row.recipe_version_id
            version, relay = self._version_for(vid)
            name = version.tag_value("name") or ""
            if name != recipe_name:
                raise LedgerError(f"version {vid[:7]} is recipe {name!r}, not {recipe_name!r}")
            transparent, relays = self._room_prefs(row.room_id)
            hint = self._hint(relays)
            tip = _Tip(
                room_id=row.room_id,
                recipe=RecipeRef(name, vid, version.pubkey, version.id, relay or hint),
                transparent=transparent,
                relays=relays,
                seq=0,
                prev_id=None,
                hint=hint,
            )
            self._tips[session_id] = tip
            try:
                with self.store.write() as conn:
                    event = self._append(session_id, kinds.SESSION_MARK, {"mark": "open"}, None)
                    if relays:  # the version the receipts name travels with them
                        pointer = version_store.latest_pointer(self.store, version.pubkey, name)
                        named = [version.id]
                        if pointer is not None and pointer.tag_value("e") == version.id:
                            named.append(pointer.id)
                        _queue(conn, named, relays)
            except BaseException:
                self._tips.pop(session_id, None)
                raise
            return event

    def _version_for(self, vid: str) -> tuple[Event, str | None]:
        found = version_store.find_version(self.store, vid, self.signer.pubkey)
        if found is not None:
            return found
        from ..library import Library

        try:
            saved = Library(self.store).get(vid)
        except RecipeError:
            raise LedgerError(f"no recipe version {vid[:7]} in this install") from None
        return self.recipe_version(saved), None

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
        """A tool call: its command committed as any text is, and its output as a digest.
        In a transparent room the digest is the output's plain SHA-256 (the room shows its
        texts anyway); otherwise it is salted (chain.output_commitment), with a salt of its
        own (`output_salt`), because a plain hash of a short output is the output to anyone
        who tries the few candidates."""
        with self._lock:
            tip = self._tip(session_id)
            salt = secrets.token_bytes(32)
            fields: dict[str, Any] = {
                "agent": agent,
                "tool": tool,
                "exit_code": exit_code,
                "wall_ms": wall_ms,
                "output_bytes": len(output.encode()),
                "killed": killed,
            }
            if tip.transparent:
                fields["output_sha256"] = hashlib.sha256(output.encode()).hexdigest()
            else:
                output_salt = self.keys.output_salt(salt)
                fields["output_commitment"] = output_commitment(output_salt, output)
            return self._append(session_id, kinds.TOOL_CALL, fields, command, salt)

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

    def end_exchange(self, session_id: str, ending: Ending, detail: str = "") -> Event:
        """How one exchange (a conductor run answering a person) ended, with the counts of
        its receipts (turns, tokens, cost, models, tool results), which a verifier
        recomputes from the events since the previous exchange."""
        with self._lock:
            tip = self._tip(session_id)
            fields = {
                **ending_fields(ending, detail),
                "from_seq": tip.exchange_start,
                **tip.exchange.summary(),
            }
            return self._append(session_id, kinds.EXCHANGE_END, fields, None)

    def close(self, session_id: str, ending: Ending, detail: str = "") -> Event:
        """The last link: how the session ended and its totals, recomputable from the chain."""
        with self._lock:
            tip = self._tip(session_id)
            total = copy.deepcopy(tip.done)
            total.merge(tip.exchange)
            fields: dict[str, Any] = {"mark": "close", **ending_fields(ending, detail)}
            if tip.format == 1:
                fields["reason"] = fields["ending"]
            fields |= {"count": tip.seq + 1, "exchanges": total.exchanges, **total.summary()}
            event = self._append(session_id, kinds.SESSION_MARK, fields, None)
            self._tips.pop(session_id, None)
            return event

    # -- recipe versions -------------------------------------------------------------------

    def recipe_version(self, saved: Any) -> Event:
        """The signed event of a recipe version (a library `Saved` or a `Recipe`): the one
        already stored for it (its original author's, if fetched from elsewhere), or one
        signed now with this install's key. Ancestors in the library that were never signed
        are signed first, so the parent reference names an exact event wherever it can."""
        recipe: Recipe = getattr(saved, "recipe", saved)
        vid = version_id(recipe)
        if getattr(saved, "id", vid) != vid:
            raise ValueError(f"{recipe.name}: the saved id is not the recipe's version id")
        from ..library import Library

        with self._lock:
            found = version_store.find_version(self.store, vid, self.signer.pubkey)
            if found is not None:
                return found[0]
            unsigned = [recipe]
            parent = recipe.forked_from
            while parent and len(unsigned) < MAX_LINEAGE:
                if version_store.find_version(self.store, parent, self.signer.pubkey):
                    break
                try:
                    ancestor = Library(self.store).get(parent).recipe
                except RecipeError:
                    break  # forked from elsewhere, never fetched: its id is all there is
                unsigned.append(ancestor)
                parent = ancestor.forked_from
            event: Event | None = None
            for item in reversed(unsigned):
                event = version_event(
                    self.signer, item, self._parent_ref(item.forked_from), int(self.clock())
                )
                with self.store.write() as conn:
                    version_store.keep(conn, event, "signed")
            assert event is not None
            return event

    def _parent_ref(self, parent_vid: str | None) -> ParentRef | None:
        if parent_vid is None:
            return None
        found = version_store.find_version(self.store, parent_vid, self.signer.pubkey)
        if found is None:
            return ParentRef(parent_vid)
        event, relay = found
        return ParentRef(parent_vid, event.id, event.pubkey, relay or self._hint(()))

    def recipe_pointer(self, name: str, saved: Any = None) -> Event:
        """This install's "latest version" pointer for a recipe: names `saved` (by default
        the library's current version of `name`), signed anew only when that changed. A
        recipe this install runs unchanged from another author has no pointer of ours:
        LedgerError says so."""
        from ..library import Library

        with self._lock:
            version = self.recipe_version(saved or Library(self.store).get(name))
            if version.pubkey != self.signer.pubkey:
                raise LedgerError(
                    f"{name} is {version.pubkey[:12]}…'s recipe, unchanged here: share their "
                    "version event; fork it to publish one of your own"
                )
            last = version_store.latest_pointer(self.store, self.signer.pubkey, name)
            if last is not None and last.tag_value("e") == version.id:
                return last
            created = int(self.clock())
            if last is not None:  # a newer pointer must win at every relay (NIP-01)
                created = max(created, last.created_at + 1)
            pointer = pointer_event(self.signer, version, self._hint(()), created)
            with self.store.write() as conn:
                version_store.keep(conn, pointer, "signed")
            return pointer

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
        if events and event_format(events[0]) == 2:
            chain.problems += self._check_version_of(events[0])
        return chain

    def _check_version_of(self, open_mark: Event) -> list[str]:
        """The recipe version event the open mark names: present, intact, and the version
        the receipts say they ran."""
        link = open_mark.tag("e")
        stored = version_store.get(self.store, link[1]) if link else None
        if stored is None:
            return ["the recipe version event the session names is not in this store"]
        try:
            checked = check_version(stored, author=link[3] if len(link) > 3 else None)
        except Refused as exc:
            return [f"recipe version event: {exc}"]
        if checked.version_id != open_mark.tag_value("recipe"):
            return ["the recipe version event is not the version the receipts name"]
        return []

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

    def output_salt(self, event_id: str) -> bytes:
        """The salt that opens a tool call's `output_commitment`: with it, whoever holds the
        output proves it (chain.output_matches); it opens nothing else."""
        with self.store.session() as db:
            row = db.get(ReceiptRow, event_id)
        if row is None or row.kind != kinds.TOOL_CALL or row.salt is None:
            raise LedgerError(f"no tool call receipt {event_id[:12]}… in this store")
        return self.keys.output_salt(bytes.fromhex(row.salt))

    def count(self) -> int:
        with self.store.session() as db:
            return db.scalar(select(func.count()).select_from(ReceiptRow)) or 0


def _publication(event_id: str, relay: str, stamp: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "relay": relay,
        "state": "pending",
        "attempts": 0,
        "next_try_at": stamp,
        "updated_at": stamp,
    }


_RECEIPT_COLUMNS = (
    "id",
    "session_id",
    "room_id",
    "seq",
    "kind",
    "event_json",
    "plaintext",
    "salt",
    "created_at",
)


def _insert(conn: Connection, rows: list[dict], pubs: list[dict]) -> None:
    """The receipts of a batch in one driver-level executemany: the statement is fixed, so
    SQLAlchemy's per-call compile and type processing (a third of a small commit's cost)
    buys nothing here."""
    columns = ",".join(_RECEIPT_COLUMNS)
    if conn.dialect.name == "sqlite":
        marks = ",".join("?" * len(_RECEIPT_COLUMNS))
        conn.exec_driver_sql(
            f"INSERT INTO receipts ({columns}) VALUES ({marks})",
            [(*(row[c] for c in _RECEIPT_COLUMNS[:-1]), _sqlite_time(row)) for row in rows],
        )
    elif conn.dialect.name == "postgresql":  # one statement, one round trip, for all rows
        marks = "(" + ",".join(["%s"] * len(_RECEIPT_COLUMNS)) + ")"
        conn.exec_driver_sql(
            f"INSERT INTO receipts ({columns}) VALUES " + ",".join([marks] * len(rows)),
            tuple(row[c] for row in rows for c in _RECEIPT_COLUMNS),
        )
    else:
        conn.execute(insert(ReceiptRow), rows)
    if pubs:
        conn.execute(insert(Publication), pubs)


def _sqlite_time(row: dict[str, Any]) -> str:
    """`created_at` as SQLAlchemy's SQLite dialect stores a DATETIME: ISO text, no zone."""
    stamp: datetime = row["created_at"]
    return stamp.strftime("%Y-%m-%d %H:%M:%S.%f")


def _queue(conn: Connection, event_ids: list[str], relays: tuple[str, ...]) -> None:
    """Publish these (recipe) events to these relays too, unless already queued there."""
    stamp = now()
    for event_id in event_ids:
        for relay in relays:
            known = conn.execute(
                select(Publication.state).where(
                    Publication.event_id == event_id, Publication.relay == relay
                )
            ).first()
            if known is None:
                conn.execute(insert(Publication), [_publication(event_id, relay, stamp)])
