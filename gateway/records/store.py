"""Track records from this install's store: the thin I/O shell around figures.py.

A version's receipts are read once, in session and seq order, as (session, seq, kind,
stored event, text, id) items: figures.compute reads each receipt's content where it lies in
the stored JSON, without parsing the whole event (the store keeps events exactly as signed),
and the text an agent turn commits to comes from the store, where it lives beside its salt.
Votes come from the votes table, which holds the vote each signed reaction event left
standing; labels from the judge's signed label events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select

from ..library import Library, Saved
from ..receipts import kinds
from ..receipts.nostr import parse_event
from ..store.db import Store
from ..store.models import ReceiptRow, RecipeVersion, RecordEvent, Session, Vote
from .events import CHALLENGE, LABEL, judge_name
from .figures import Item, LabelFact, Record, VoteFact, compute


@dataclass(frozen=True)
class Scope:
    """Which sessions a record counts: every session of these versions, or exactly these
    sessions up to these many events each (a published record's commitment)."""

    version_ids: tuple[str, ...] = ()
    events: dict[str, int] | None = None  # session id → receipts counted


def sessions_of(store: Store, version_ids: Sequence[str]) -> list[Session]:
    with store.session() as db:
        return list(
            db.scalars(
                select(Session)
                .where(Session.recipe_version_id.in_(list(version_ids)))
                .order_by(Session.started_at, Session.id)
            )
        )


def items(store: Store, scope: Scope) -> Iterator[Item]:
    """The receipts a record reads, each session's in seq order, each with its whole stored
    event (figures.compute reads the content where it lies: `stored=True`)."""
    # Only what is read crosses from the database: an agent turn's text (not its event),
    # the other receipts' events, and the ids of exchange ends (which judges label).
    turn = ReceiptRow.kind == kinds.AGENT_TURN
    query = select(
        ReceiptRow.session_id,
        ReceiptRow.seq,
        ReceiptRow.kind,
        case((turn, ""), else_=ReceiptRow.event_json),
        case((turn, ReceiptRow.plaintext), else_=None),
        case((ReceiptRow.kind == kinds.EXCHANGE_END, ReceiptRow.id), else_=""),
    ).order_by(ReceiptRow.session_id, ReceiptRow.seq)
    if scope.events is not None:
        query = query.where(ReceiptRow.session_id.in_(list(scope.events)))
    else:
        query = query.join(Session, Session.id == ReceiptRow.session_id).where(
            Session.recipe_version_id.in_(list(scope.version_ids))
        )
    limits = scope.events
    with store.engine.connect() as conn:
        rows = conn.execute(query)
        if limits is None:
            yield from rows  # type: ignore[misc]
            return
        for row in rows:
            if row[1] < limits[row[0]]:
                yield row  # type: ignore[misc]


def votes(store: Store, session_ids: Iterable[str]) -> list[VoteFact]:
    wanted = list(session_ids)
    with store.session() as db:
        rows = db.execute(
            select(Vote.session_id, Vote.voter, Vote.value, Vote.insider).where(
                Vote.session_id.in_(wanted)
            )
        ).all()
    return [VoteFact(s, v, value, bool(insider)) for s, v, value, insider in rows]


def labels(store: Store, session_ids: Iterable[str]) -> list[LabelFact]:
    wanted = list(session_ids)
    with store.session() as db:
        rows = db.scalars(
            select(RecordEvent.event_json).where(
                RecordEvent.session_id.in_(wanted), RecordEvent.kind == LABEL
            )
        ).all()
    out = []
    for text in rows:
        event = parse_event(json.loads(text))
        label = event.tag("l")
        if event.tag_value("L") == CHALLENGE and label is not None and len(label) > 1:
            out.append(LabelFact(event.tag_value("e") or "", label[1], judge_name(event)))
    return out


def record(store: Store, scope: Scope) -> Record:
    """The record of a scope: receipts, votes and labels of its sessions, and its rooms."""
    if scope.events is not None:
        session_ids = list(scope.events)
        with store.session() as db:
            rooms = db.scalar(
                select(func.count(func.distinct(Session.room_id))).where(
                    Session.id.in_(session_ids)
                )
            )
    else:
        found = sessions_of(store, scope.version_ids)
        session_ids = [s.id for s in found]
        rooms = len({s.room_id for s in found})
    result = compute(
        items(store, scope),
        votes=votes(store, session_ids),
        labels=labels(store, session_ids),
        stored=True,
    )
    result.rooms = rooms or 0
    return result


# -- which versions a record covers ------------------------------------------------------------


def descendants(store: Store, version_ids: Iterable[str]) -> list[str]:
    """These versions and every version forked or edited from them, in this library."""
    found = list(dict.fromkeys(version_ids))
    frontier = list(found)
    with store.session() as db:
        while frontier:
            children = db.scalars(
                select(RecipeVersion.id).where(RecipeVersion.forked_from.in_(frontier))
            ).all()
            frontier = [c for c in children if c not in found]
            found += frontier
    return found


def versions_of(store: Store, name: str) -> list[str]:
    """Every version of a recipe name this library holds, oldest first."""
    with store.session() as db:
        return list(
            db.scalars(
                select(RecipeVersion.id)
                .where(RecipeVersion.name == name)
                .order_by(RecipeVersion.created_at, RecipeVersion.id)
            )
        )


@dataclass
class Family:
    """A recipe's record: one version's, and rolled up over the recipe's versions and forks,
    with each version's own beside it."""

    saved: Saved
    version: Record
    rolled_up: Record
    versions: list[tuple[str, str, Record]]  # (ref, version id, record), with sessions only


def family(library: Library, ref: str) -> Family:
    """`ref` is NAME (its current version) or NAME@VERSION."""
    saved = library.get(ref)
    store = library.store
    own = record(store, Scope((saved.id,)))
    every = descendants(store, versions_of(store, saved.recipe.name) or [saved.id])
    rolled = record(store, Scope(tuple(every)))
    per_version = []
    for vid in every:
        one = own if vid == saved.id else record(store, Scope((vid,)))
        if one.sessions:
            per_version.append((library.get(vid).ref, vid, one))
    return Family(saved, own, rolled, per_version)
