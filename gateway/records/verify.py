"""`potluck recipe record --verify LINK`: what a stranger does with a published record and
the relays. Needs no store and no key.

It fetches the record (NIP-85 assertion) by its link, the recipe version it is about, every
session it counts (by the documented filters, gateway/receipts/audit.py) and the verdicts
and judgements on them; checks every id, signature and chain; looks for sessions of the
version signed by the same install that the record leaves out; recomputes every figure the
events allow (assertion.recompute, the publisher's own function) and names each one that
does not match. Figures resting on the install's word alone are listed as claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..receipts.audit import AuditError, fetch_session, sessions_of_version
from ..receipts.nip19 import parse_link
from ..receipts.nostr import Event, check_event
from ..receipts.relay import RelayClient, RelayError
from ..receipts.travel import TIMEOUT, FetchError, fetch_version, forks, relays_to_ask
from ..receipts.versions import Refused
from .assertion import Claim, Comparison, differences, read_assertion, recompute
from .events import ASSERTION, CHALLENGE, DELETION, LABEL, REACTION
from .figures import Record

CHUNK = 100  # session roots per `#E` filter


class VerifyError(LookupError):
    """The record itself could not be found or read; says why."""


@dataclass
class Verification:
    """What checking a published record found."""

    claim: Claim
    sessions: int = 0  # sessions fetched and counted
    comparison: Comparison = field(default_factory=lambda: Comparison([], [], 0))
    problems: list[str] = field(default_factory=list)  # events that do not hold
    notes: list[str] = field(default_factory=list)
    recount: Record | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.comparison.mismatches


async def _collect(
    relays: Sequence[str], query: dict, timeout: float
) -> tuple[list[Event], list[str]]:
    found: dict[str, Event] = {}
    said: list[str] = []
    for relay in relays:
        try:
            async with RelayClient(relay, timeout=timeout) as client:
                answer = await client.collect(query, deadline=timeout)
        except RelayError as exc:
            said.append(str(exc))
            continue
        if not answer.complete:
            said.append(f"{relay} did not finish answering")
        for event in answer.events:
            found.setdefault(event.id, event)
    return list(found.values()), said


async def fetch_claim(
    link: str, relays: Sequence[str], *, timeout: float = TIMEOUT
) -> tuple[Claim, list[str]]:
    """The record a link points at (`nevent`/`note`/hex id, or an `naddr` of kind 30383),
    and the relays to ask for the rest: the link's hints, then the configured ones."""
    try:
        parsed = parse_link(link)
    except ValueError as exc:
        raise VerifyError(str(exc).replace("recipe link", "record link")) from None
    if parsed.event is not None:
        where = relays_to_ask(parsed.event.relays, relays)
        query: dict = {"ids": [parsed.event.event_id]}
    else:
        address = parsed.address
        assert address is not None
        if address.kind != ASSERTION:
            raise VerifyError(f"the link is an address of kind {address.kind}, not a record")
        where = relays_to_ask(address.relays, relays)
        query = {"kinds": [ASSERTION], "authors": [address.pubkey], "#d": [address.identifier]}
    if not where:
        raise VerifyError("no relays to ask: configure some, or use a link with relay hints")
    events, said = await _collect(where, query, timeout)
    refused: list[str] = []
    for event in sorted(events, key=lambda e: -e.created_at):
        try:
            return read_assertion(event), where
        except Refused as exc:
            refused.append(str(exc))
    raise VerifyError("no readable record found: " + ("; ".join(refused + said) or "not there"))


async def verify(link: str, relays: Sequence[str], *, timeout: float = TIMEOUT) -> Verification:
    claim, where = await fetch_claim(link, relays, timeout=timeout)
    found = Verification(claim, problems=list(claim.problems))
    gateway = claim.event.pubkey
    hints = [t[2] for t in claim.event.tags if t[0] == "e" and len(t) > 2]
    everywhere = relays_to_ask([*claim.counted.relays, *hints], where)
    try:
        await fetch_version(
            claim.version_event, everywhere, author=claim.version_author, timeout=timeout
        )
    except FetchError as exc:
        found.problems.append(f"the recipe version it is about: {exc}")
    sessions: dict[str, list[Event]] = {}
    for root, count in claim.counted.sessions:
        where = f"session {root[:12]}…"
        try:
            audit = await fetch_session(root, everywhere, timeout=timeout)
        except AuditError as exc:
            found.problems.append(f"{where}: {exc}")
            continue
        opened = audit.events[0] if audit.events else None
        if opened is None or opened.id != root:
            found.problems.append(f"{where}: its open mark is not on these relays")
            continue
        if opened.pubkey != gateway:
            found.problems.append(f"{where} is signed by {opened.pubkey[:12]}…, not the record's")
            continue
        if opened.tag_value("e") != claim.version_event:
            found.problems.append(
                f"{where} ran another recipe version ({opened.tag_value('recipe') or '?'}"[:90]
                + "), not the one the record is about"
            )
            continue
        found.problems += [f"{where}: {p}" for p in audit.report.problems]
        if len(audit.events) < count:
            found.problems.append(
                f"{where}: the record counts {count} receipts, the relays have {len(audit.events)}"
            )
        sessions[root] = audit.events[:count]
    found.sessions = len(sessions)
    marks = await sessions_of_version(claim.version_event, everywhere, timeout=timeout)
    ours = {m.id for m in marks if m.pubkey == gateway}
    listed = {root for root, _ in claim.counted.sessions}
    for left_out in sorted(ours - listed):
        found.problems.append(
            f"session {left_out[:12]}… of this version, signed by the same install, is on "
            "the relays but the record leaves it out"
        )
    if len(ours) > claim.counted.run:
        found.problems.append(
            f"the record says the install ran {claim.counted.run} sessions of this version; "
            f"the relays hold {len(ours)}"
        )
    unpublished = claim.counted.run - len(listed)
    if unpublished > 0:
        found.notes.append(
            f"the install says it ran {claim.counted.run} sessions of this version; "
            f"{len(listed)} are counted, {unpublished} not published"
        )
    verdicts, labels = await _verdicts(sorted(sessions), everywhere, timeout, found)
    recount = recompute(
        sessions,
        [e for e in verdicts if e.pubkey == gateway or check_event(e) is not None],
        labels,
        gateway=gateway,
        until=claim.counted.until,
    )
    strangers = sum(1 for e in verdicts if e.pubkey != gateway and check_event(e) is None)
    if strangers:
        found.notes.append(f"{strangers} verdicts signed by other keys are not counted")
    found.problems += recount.problems
    found.recount = recount.record
    found.comparison = differences(
        claim.figures, recount.record.to_dict(), texts_public=recount.texts_public
    )
    try:
        others = await forks(claim.version_event, everywhere, timeout=timeout)
    except FetchError:
        others = []
    by_others = [f for f in others if f.author_pubkey != claim.version_author]
    found.notes.append(f"forks of this version by others on these relays: {len(by_others)}")
    return found


async def _verdicts(
    roots: list[str], relays: Sequence[str], timeout: float, found: Verification
) -> tuple[list[Event], list[Event]]:
    """Every verdict, deletion and judgement naming these sessions, from any key."""
    verdicts: dict[str, Event] = {}
    labels: dict[str, Event] = {}
    for start in range(0, len(roots), CHUNK):
        chunk = roots[start : start + CHUNK]
        events, said = await _collect(relays, {"kinds": [REACTION, DELETION], "#E": chunk}, timeout)
        verdicts.update((e.id, e) for e in events)
        marked, more = await _collect(
            relays, {"kinds": [LABEL], "#E": chunk, "#L": [CHALLENGE]}, timeout
        )
        labels.update((e.id, e) for e in marked)
        found.notes += said + more
    return list(verdicts.values()), list(labels.values())
