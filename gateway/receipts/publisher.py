"""Sends pending receipts to relays until each relay accepts each event.

State lives in the `publications` table, one row per (event, relay): nothing is lost while a
relay is down, and an accepted event is never sent to that relay again. Runs as a periodic
job in the gateway and as `potluck receipts publish`.

Relays are strangers, and the job runs one pass at a time: the relays of a pass are spoken
to side by side, each conversation has one deadline in all, and whatever goes wrong with one
relay (down, silent, chattering without answering, a malformed NIP-11 document, a bug of
ours it triggers) defers that relay's events, with backoff, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.sql.functions import coalesce

from ..store.db import Store
from ..store.models import Publication, ReceiptRow, RecipeEvent, RecordEvent, now
from .keys import KeyPair
from .nostr import Event, parse_event, sign_event
from .relay import AUTH_KIND, RelayClient, RelayError, fetch_info

log = logging.getLogger("potluck.publish")
MAX_BACKOFF_S = 600
BATCH = 200
CONVERSATION = 12  # a relay conversation's deadline, in per-message timeouts (2 min at 10 s)


def backoff(attempts: int) -> timedelta:
    """Exponential with jitter: 2, 4, 8 … seconds, capped at ten minutes."""
    base = min(MAX_BACKOFF_S, 2 ** min(attempts, 10))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


@dataclass
class PublishResult:
    accepted: int = 0
    rejected: int = 0
    deferred: int = 0
    errors: list[str] = field(default_factory=list)


def auth_signer(keys: KeyPair) -> Callable[[str, str], Event]:
    def sign(relay: str, challenge: str) -> Event:
        tags = [["relay", relay], ["challenge", challenge]]
        return sign_event(keys.secret, int(time.time()), AUTH_KIND, tags, "")

    return sign


async def publish_pending(
    store: Store,
    keys: KeyPair,
    *,
    timeout: float = 10.0,
    force: bool = False,
    deadline: float | None = None,
) -> PublishResult:
    """One pass over every relay with due events, side by side; returns what happened.
    `timeout` bounds each wait for a relay (a message, an OK); `deadline` (CONVERSATION
    timeouts by default) each relay's conversation as a whole."""
    result = PublishResult()
    moment = now()
    with store.session() as db:
        query = select(Publication.relay).where(Publication.state == "pending").distinct()
        if not force:
            query = query.where(Publication.next_try_at <= moment)
        relays = list(db.scalars(query))
    budget = timeout * CONVERSATION if deadline is None else deadline
    await asyncio.gather(
        *(_publish_to(store, keys, relay, timeout, budget, force, result) for relay in relays)
    )
    return result


async def _publish_to(
    store: Store,
    keys: KeyPair,
    relay: str,
    timeout: float,
    budget: float,
    force: bool,
    result: PublishResult,
) -> None:
    with store.session() as db:
        # A publication names a receipt, a recipe event (a version the receipts point at,
        # which goes first, so a reader never finds a reference before what it names) or a
        # track-record event (a verdict on a receipt, which goes after the receipts).
        query = (
            select(
                Publication.event_id,
                coalesce(RecipeEvent.event_json, ReceiptRow.event_json, RecordEvent.event_json),
                Publication.attempts,
            )
            .outerjoin(ReceiptRow, ReceiptRow.id == Publication.event_id)
            .outerjoin(RecipeEvent, RecipeEvent.id == Publication.event_id)
            .outerjoin(RecordEvent, RecordEvent.id == Publication.event_id)
            .where(Publication.relay == relay, Publication.state == "pending")
            .order_by(
                RecipeEvent.id.is_(None),
                RecipeEvent.signed_at,
                RecordEvent.id.is_not(None),
                ReceiptRow.created_at,
                ReceiptRow.seq,
                RecordEvent.created_at,
            )
            .limit(BATCH)
        )
        if not force:
            query = query.where(Publication.next_try_at <= now())
        due = [(eid, text, attempts) for eid, text, attempts in db.execute(query) if text]
    if not due:
        return
    limit = asyncio.timeout(budget)
    try:
        async with limit:
            await _converse(store, keys, relay, timeout, due, result)
    except (RelayError, TimeoutError) as exc:
        # Down, dropped, silent or too slow: what was not acknowledged stays pending.
        if limit.expired():
            problem = f"{relay} did not finish within {budget:g}s (the rest waits)"
        else:
            problem = str(exc) or f"{relay} timed out"
        _defer(store, relay, due, problem, result)
        log.warning("%s; will retry", problem)
    except Exception as exc:  # one relay's trouble stays that relay's: the others go on
        _defer(store, relay, due, f"{relay}: {type(exc).__name__}: {exc}", result)
        log.exception("publishing to %s failed; will retry", relay)


async def _converse(
    store: Store,
    keys: KeyPair,
    relay: str,
    timeout: float,
    due: list[tuple[str, str, int]],
    result: PublishResult,
) -> None:
    info = await fetch_info(relay, timeout)
    async with RelayClient(relay, auth_signer(keys), timeout) as client:
        if info.auth_required:
            await client.authenticate()
        else:
            await client.greet()
        for event_id, event_json, attempts in due:
            event = parse_event(json.loads(event_json))
            refusal = info.refuses(event)
            if refusal:
                _mark(store, event_id, relay, "rejected", attempts + 1, refusal)
                result.rejected += 1
                continue
            outcome = await client.publish(event)
            if outcome.stored:
                _mark(store, event_id, relay, "ok", attempts + 1, outcome.message or None)
                result.accepted += 1
            elif outcome.permanent:
                _mark(store, event_id, relay, "rejected", attempts + 1, outcome.message)
                result.rejected += 1
                log.warning("relay %s rejected %s: %s", relay, event_id[:12], outcome.message)
            else:
                _mark(store, event_id, relay, "pending", attempts + 1, outcome.message)
                result.deferred += 1


def _defer(
    store: Store,
    relay: str,
    due: list[tuple[str, str, int]],
    problem: str,
    result: PublishResult,
) -> None:
    """The events of `due` this pass did not settle stay pending, with backoff."""
    result.errors.append(problem)
    with store.session.begin() as db:
        for event_id, _json, attempts in due:
            pub = db.get(Publication, (event_id, relay))
            if pub is not None and pub.state == "pending" and pub.attempts == attempts:
                pub.attempts = attempts + 1
                pub.last_error = problem[:500]
                pub.next_try_at = now() + backoff(attempts + 1)
                pub.updated_at = now()
                result.deferred += 1


def _mark(
    store: Store, event_id: str, relay: str, state: str, attempts: int, message: str | None
) -> None:
    with store.session.begin() as db:
        pub = db.get(Publication, (event_id, relay))
        if pub is None:
            return
        pub.state, pub.attempts, pub.last_error = state, attempts, message
        pub.updated_at = now()
        if state == "pending":
            pub.next_try_at = now() + backoff(attempts)


def publication_counts(store: Store) -> dict[str, int]:
    with store.session() as db:
        rows = db.execute(select(Publication.state, func.count()).group_by(Publication.state))
        return {state: count for state, count in rows}
