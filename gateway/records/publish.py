"""`potluck recipe record --publish`: a version's track record as a signed assertion, made
from exactly what this install has published, so anyone with the relays can check it.

Only receipts a relay has accepted can be counted: for each session of the version whose
open mark is out, the record counts its receipts up to the first one not yet accepted (a
chain has no holes), and the verdicts and judgements on them that are out too. The figures
are recomputed from the install's own copies of those events by the very function a reader
runs on what the relays send (assertion.recompute); the install adds only what it alone
knows, and the record says so: the text its final turns committed to (for outcome
diversity) and its rooms.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select

from ..receipts import version_store
from ..receipts.ledger import Ledger
from ..receipts.nostr import Event, parse_event
from ..receipts.publisher import publish_pending
from ..receipts.travel import Published, publish_recipe
from ..store.db import Store
from ..store.models import Publication, ReceiptRow, RecordEvent, Session, now
from .assertion import Counted, Recount, assertion_event, is_v2, recompute
from .events import ASSERTION, DELETION, LABEL, REACTION


class RecordError(LookupError):
    """Nothing publishable, or the install's own events do not hold; says which."""


@dataclass
class Prepared:
    event: Event  # the signed assertion
    recount: Recount
    counted: Counted
    version: Event


def _ok():  # type: ignore[no-untyped-def]
    return select(Publication.event_id).where(Publication.state == "ok")


def published_sessions(
    store, version_id: str
) -> tuple[dict[str, list[Event]], dict[str, str], int]:  # type: ignore[no-untyped-def]
    """Each published session of the version (by its open mark's id): its receipts up to
    the first not yet accepted by a relay; the committed texts of its agent turns; and how
    many sessions the install ran with the version in all."""
    with store.session() as db:
        run = (
            db.scalar(
                select(func.count())
                .select_from(Session)
                .where(Session.recipe_version_id == version_id)
            )
            or 0
        )
        rows = db.execute(
            select(
                ReceiptRow.session_id,
                ReceiptRow.seq,
                ReceiptRow.event_json,
                ReceiptRow.plaintext,
                ReceiptRow.id.in_(_ok()).label("ok"),
            )
            .join(Session, Session.id == ReceiptRow.session_id)
            .where(Session.recipe_version_id == version_id)
            .order_by(ReceiptRow.session_id, ReceiptRow.seq)
        ).all()
    sessions: dict[str, list[Event]] = {}
    texts: dict[str, str] = {}
    stopped: set[str] = set()
    by_session: dict[str, list[Event]] = {}
    for session_id, seq, event_json, plaintext, ok in rows:
        if session_id in stopped:
            continue
        if not ok or seq != len(by_session.get(session_id, [])):
            stopped.add(session_id)  # the published prefix ends here
            continue
        event = parse_event(json.loads(event_json))
        by_session.setdefault(session_id, []).append(event)
        if plaintext is not None:
            texts[event.id] = plaintext
    for events in by_session.values():
        if is_v2(events):
            sessions[events[0].id] = events
    return sessions, texts, run


def _record_events(store: Store, roots: dict[str, str], kinds: tuple[int, ...]) -> list[Event]:
    """This install's published verdicts or labels on these sessions (by session id)."""
    with store.session() as db:
        rows = db.scalars(
            select(RecordEvent.event_json).where(
                RecordEvent.session_id.in_(list(roots)),
                RecordEvent.kind.in_(kinds),
                RecordEvent.id.in_(_ok()),
            )
        ).all()
    return [parse_event(json.loads(text)) for text in rows]


def prepare(ledger: Ledger, version_id: str) -> Prepared:
    """The assertion this install can sign for a version now, from what it has published."""
    store = ledger.store
    found = version_store.find_version(store, version_id, ledger.signer.pubkey)
    if found is None:
        raise RecordError(
            f"version {version_id[:7]} has no signed version event here: no room has "
            "published a session on it"
        )
    version, relay = found
    sessions, texts, run = published_sessions(store, version_id)
    if not sessions:
        raise RecordError(
            f"no session on {version.tag_value('name')}@{version_id[:7]} has been published "
            "yet: a record can count only what others can check (rooms opt in to publishing)"
        )
    by_id = {events[0].tag_value("session") or "": root for root, events in sessions.items()}
    until = int(ledger.clock())
    recount = recompute(
        sessions,
        _record_events(store, by_id, (REACTION, DELETION)),
        _record_events(store, by_id, (LABEL,)),
        gateway=ledger.signer.pubkey,
        until=until,
        texts=texts,
    )
    if recount.problems:
        raise RecordError("this install's own events do not hold: " + "; ".join(recount.problems))
    with store.session() as db:
        recount.record.rooms = db.scalar(
            select(func.count(func.distinct(Session.room_id))).where(Session.id.in_(list(by_id)))
        )
    with store.session() as db:
        relays = db.scalars(
            select(Publication.relay)
            .where(Publication.event_id.in_(list(sessions)), Publication.state == "ok")
            .distinct()
        ).all()
    counted = Counted(
        tuple(sorted((root, len(ev)) for root, ev in sessions.items())),
        run,
        until,
        tuple(sorted(relays)),
    )
    event = assertion_event(
        ledger.signer,
        version,
        recount.record,
        counted,
        relay=relay or next(iter(ledger.default_relays), ""),
        created_at=until,
    )
    return Prepared(event, recount, counted, version)


async def publish(
    ledger: Ledger, version_id: str, relays: Sequence[str]
) -> tuple[Prepared, dict[str, Published]]:
    """Send what is still pending (so the record counts it), then sign and send the
    record."""
    if not relays:
        raise RecordError("no relays: configure [receipts] relays, or give --relay")
    await publish_pending(ledger.store, ledger.keys, force=True)
    prepared = prepare(ledger, version_id)
    with ledger.store.write() as conn:
        conn.execute(
            insert(RecordEvent),
            {
                "id": prepared.event.id,
                "kind": ASSERTION,
                "session_id": None,
                "subject": prepared.version.id,
                "event_json": prepared.event.to_json(),
                "created_at": now(),
            },
        )
    sent = await publish_recipe([prepared.event], list(relays), keys=ledger.keys)
    return prepared, sent
