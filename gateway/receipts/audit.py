"""What a third party does with a relay and one event id of a published session: fetch the
whole session, its recipe version and its close mark with the documented filters
(filters.py), and verify all of it. Needs no store and no key but the relays'.

Format v2 only: a v1 receipt names its session in a tag relays do not index, so a v1
session cannot be gathered from one id (`potluck receipts export` bundles still verify).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import filters, kinds
from .chain import Report, event_format, verify_chain
from .nostr import Event, check_event
from .relay import RelayClient, RelayError
from .travel import TIMEOUT, Fetched, FetchError, fetch_version, relays_to_ask

PAGE = 1000  # events asked per page; a relay may send fewer
MAX_PAGES = 50  # pages asked of one relay for one session
MAX_EVENTS = 50_000  # events of one session an audit holds, from all relays together


class AuditError(LookupError):
    pass


@dataclass
class Audit:
    """A session as a stranger sees it: every receipt found, the recipe version it ran, and
    the verification report (chain, counts, endings, and the version's own checks)."""

    root_id: str
    gateway_pubkey: str
    events: list[Event]
    version: Fetched | None
    report: Report

    @property
    def closed(self) -> bool:
        return (
            bool(self.events)
            and self.events[-1].kind == kinds.SESSION_MARK
            and (self.events[-1].tag_value("seq") != "0")
        )


async def _collect(relay: str, query: dict | list[dict], timeout: float) -> list[Event]:
    async with RelayClient(relay, timeout=timeout) as client:
        found = await client.collect(query, deadline=timeout)
    if not found.complete:
        raise RelayError(f"{relay} did not finish answering")
    return found.events


def _genuine(event: Event, author: str) -> bool:
    """Signed by the gateway, a receipt, and intact: all an audit keeps from a relay."""
    return event.pubkey == author and event.kind in kinds.RECEIPT_KINDS and not check_event(event)


async def _session_events(
    relay: str, root: str, author: str, timeout: float
) -> tuple[list[Event], list[str]]:
    """Every genuine event of the session on one relay (at most MAX_EVENTS), page by page
    (relays cap answers; `until` walks back in time), and notes on what was left out.

    Only events that verify count: a relay can make up any number of events that name the
    session, but not sign them, so a page of fakes is dropped and ends the walk instead of
    asking for another. A gateway can sign any number, so pages and events are capped."""
    seen: dict[str, Event] = {}
    forged = 0
    until: int | None = None
    notes: list[str] = []
    for _ in range(MAX_PAGES):
        wanted = filters.session(root, author)
        for query in wanted:
            query["limit"] = PAGE
            if until is not None:
                query["until"] = until
        page = await _collect(relay, wanted, timeout)
        fresh = [e for e in page if e.id not in seen]
        genuine = [e for e in fresh if _genuine(e, author)]
        forged += len(fresh) - len(genuine)
        for event in genuine[: MAX_EVENTS - len(seen)]:
            seen[event.id] = event
        if len(seen) >= MAX_EVENTS:
            notes.append(f"{relay}: stopped at {MAX_EVENTS} events; the session may be longer")
            break
        if not genuine or len(page) < PAGE:
            break
        until = min(e.created_at for e in genuine)
    else:
        notes.append(f"{relay}: stopped after {MAX_PAGES} pages; the session may be longer")
    if forged:
        notes.append(
            f"{relay} sent {forged} event(s) naming this session that are not the gateway's "
            "signed receipts (dropped)"
        )
    return list(seen.values()), notes


async def fetch_session(event_id: str, relays: Sequence[str], *, timeout: float = TIMEOUT) -> Audit:
    """The whole session that `event_id` belongs to, verified. AuditError when the event
    is nowhere to be found or is not a v2 receipt."""
    first: Event | None = None
    said: list[str] = []
    for relay in relays:
        try:
            for event in await _collect(relay, filters.by_id(event_id), timeout):
                if check_event(event) is None:
                    first = event
                    break
                said.append(f"{relay} sent a forged copy")
        except RelayError as exc:
            said.append(str(exc))
        if first is not None:
            break
    if first is None:
        raise AuditError(f"event {event_id[:12]}… not found: " + ("; ".join(said) or "no relay"))
    if first.kind not in kinds.RECEIPT_KINDS:
        raise AuditError(f"event {event_id[:12]}… is not a Potluck receipt (kind {first.kind})")
    if event_format(first) != 2:
        raise AuditError(
            "this is a v1 receipt: its session is named in a tag relays do not index; "
            "ask for the session's export bundle instead"
        )
    root = first.id if first.tag_value("seq") == "0" else first.tag_value("E")
    if not root:
        raise AuditError(f"event {event_id[:12]}… names no session root")
    found: dict[str, Event] = {}
    for relay in relays:
        try:
            events, notes = await _session_events(relay, root, first.pubkey, timeout)
        except RelayError as exc:
            said.append(str(exc))
            continue
        said += notes
        for event in events:
            if len(found) >= MAX_EVENTS:
                said.append(f"{relay}: kept {MAX_EVENTS} events in all; the rest left out")
                break
            found.setdefault(event.id, event)
    events = sorted(found.values(), key=_seq)
    report = verify_chain(events, pubkey=first.pubkey)
    version = None
    if events and events[0].tag_value("seq") == "0":
        link = events[0].tag("e")
        try:
            version = await fetch_version(
                link[1],
                relays_to_ask([link[2]] if len(link) > 2 else [], relays),
                author=link[3] if len(link) > 3 else None,
                timeout=timeout,
            )
        except (FetchError, TypeError, IndexError) as exc:
            report.problems.append(f"the recipe version the session ran: {exc}")
        else:
            if version.version_id != events[0].tag_value("recipe"):
                report.problems.append("the recipe version event is not the version named")
    else:
        report.problems.append("the session's open mark is not on these relays")
    report.notes += said
    return Audit(root, first.pubkey, events, version, report)


async def sessions_of_version(
    version_event_id: str, relays: Sequence[str], *, timeout: float = TIMEOUT
) -> list[Event]:
    """The open marks of every session that ran this exact recipe version (any install),
    signature-checked; fetch each with `fetch_session(mark.id, …)`."""
    out: dict[str, Event] = {}
    for relay in relays:
        try:
            marks = await _collect(relay, filters.sessions_of_version(version_event_id), timeout)
        except RelayError:
            continue
        for mark in marks:
            if (
                check_event(mark) is None
                and mark.tag_value("seq") == "0"
                and mark.tag_value("e") == version_event_id
            ):
                out.setdefault(mark.id, mark)
    return sorted(out.values(), key=lambda e: (e.created_at, e.id))


def _seq(event: Event) -> tuple[int, str]:
    try:
        return int(event.tag_value("seq") or ""), event.id
    except ValueError:
        return 1 << 62, event.id
