"""A track record as a signed, checkable claim: build it, read one, recompute it. Pure.

A published record is a NIP-85 assertion about one event (kind 30383, addressable, so an
install's newer record of a version replaces its older one at every relay): `d` is the
recipe version event's id, and the main figures are flat result tags (`exchanges`,
`completed`, `thumbs_up`…) any client can show. The content holds every figure and a
commitment to exactly what was counted:

- `sessions`: each counted session as [its open mark's id, how many of its receipts] (a live
  session keeps growing; the count fixes where the record stopped reading it);
- `sessions_sha256`: the hash of that list, so it cannot be read two ways;
- `sessions_run`: how many sessions this install ran with the version in all, published or
  not, so a reader sees how many were left out (private rooms, or withheld);
- `until`: verdicts and judgements signed up to then are counted;
- `relays`: where the counted sessions were published (hints for a reader).

`recompute` is what both the publisher (from its own copies of what it published) and any
reader (from relays) run on the same events, so an honest record always matches; the
figures that rest on text the receipts only commit to (outcome diversity, unless every
final turn was published in full) and the rooms (which receipts do not name) are the
install's word, and are marked "claimed".
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..receipts import kinds
from ..receipts.chain import FORMAT_TAG, event_format
from ..receipts.nostr import Event, Signer, check_event
from ..receipts.versions import MAX_TAG_VALUE, MAX_TAGS, Refused
from .events import ASSERTION, labels_of, live_votes, parse_json_object
from .figures import Record, compute

RECORD_FORMAT = 1
MAX_SESSIONS = 1500  # sessions one assertion lists (about 110 kB of content)
MAX_CONTENT = 256 * 1024
MAX_RELAYS = 8
CLAIMED_ALWAYS = ("reach.rooms",)  # receipts do not say which room a session ran in
TEXT_FIGURES = "diversity."  # rests on the text of final turns
# Result tags (NIP-85's flat tags) and where each sits in the figures.
RESULT_TAGS = {
    "sessions": "sessions.n",
    "exchanges": "exchanges.n",
    "completed": "exchanges.endings.completed",
    "tool_calls": "tools.calls",
    "tool_ok": "tools.ok",
    "thumbs_up": "verdicts.up",
    "thumbs_down": "verdicts.down",
    "people": "reach.people",
}


@dataclass(frozen=True)
class Counted:
    """Which sessions a record counts, and how far into each."""

    sessions: tuple[tuple[str, int], ...]  # (open mark id, receipts counted), sorted
    run: int  # sessions the install ran with the version in all
    until: int
    relays: tuple[str, ...] = ()  # where those sessions were published

    @property
    def digest(self) -> str:
        return sessions_digest(self.sessions)


def sessions_digest(sessions: Iterable[tuple[str, int]]) -> str:
    text = "\n".join(f"{root}:{count}" for root, count in sessions)
    return hashlib.sha256(text.encode()).hexdigest()


def flatten(figures: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as dotted names: {"exchanges": {"n": 3}} → {"exchanges.n": 3}."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def assertion_event(
    signer: Signer,
    version: Event,
    record: Record,
    counted: Counted,
    *,
    relay: str = "",
    created_at: int,
) -> Event:
    """A record of one recipe version, signed by the install whose sessions it counts."""
    if len(counted.sessions) > MAX_SESSIONS:
        raise ValueError(
            f"{len(counted.sessions)} sessions are more than one record lists ({MAX_SESSIONS})"
        )
    figures = record.to_dict()
    content = {
        "potluck_record": RECORD_FORMAT,
        "version": {
            "event": version.id,
            "id": version.tag_value("x") or "",
            "name": version.tag_value("name") or "",
            "author": version.pubkey,
        },
        "figures": figures,
        "sessions": [list(s) for s in counted.sessions],
        "sessions_sha256": counted.digest,
        "sessions_run": counted.run,
        "until": counted.until,
        "relays": list(counted.relays[:MAX_RELAYS]),
    }
    flat = flatten(figures)
    completion = record.completion.value
    tags = [
        [FORMAT_TAG, "2"],
        ["d", version.id],
        ["e", version.id, relay, version.pubkey],
        ["k", str(kinds.RECIPE_VERSION)],
        ["p", version.pubkey, relay],
        ["a", version.tag_value("a") or "", relay],
        *([name, str(flat[path])] for name, path in RESULT_TAGS.items()),
        ["sessions_run", str(counted.run)],
        ["strawman", "1" if record.diversity and record.diversity.flagged else "0"],
        [
            "alt",
            f"Potluck track record of {version.tag_value('name')}@"
            f"{(version.tag_value('x') or '')[:7]}: "
            + (
                f"{completion:.0%} of {record.exchanges} exchanges completed"
                if completion is not None
                else "no exchanges yet"
            ),
        ],
    ]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return signer.sign(created_at, ASSERTION, tags, text)


# -- reading one -------------------------------------------------------------------------------


@dataclass
class Claim:
    """A record as its author signed it."""

    event: Event
    version_event: str
    version_author: str
    figures: dict[str, Any]
    counted: Counted
    problems: list[str] = field(default_factory=list)  # what is wrong with the claim itself


def _hex64(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def read_assertion(event: Event) -> Claim:
    """A record event from a stranger, checked for shape; Refused says why it cannot be
    read at all, `problems` what in it does not add up."""
    if event.kind != ASSERTION:
        raise Refused(f"event {event.id[:12]}… is kind {event.kind}, not a track record")
    if len(event.content.encode()) > MAX_CONTENT:
        raise Refused(f"the record's content is over {MAX_CONTENT // 1024} kB")
    if len(event.tags) > MAX_TAGS or any(len(v) > MAX_TAG_VALUE for t in event.tags for v in t):
        raise Refused(f"the record has over {MAX_TAGS} tags, or a tag value that long")
    if (problem := check_event(event)) is not None:
        raise Refused(f"the record {event.id[:12]}… is forged or damaged: {problem}")
    try:
        content = parse_json_object(event.content)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the record's content is not a JSON object: {exc}") from None
    if content.get("potluck_record") != RECORD_FORMAT:
        raise Refused("not a Potluck track record (format 1)")
    version = content.get("version")
    figures = content.get("figures")
    raw = content.get("sessions")
    if not isinstance(version, dict) or not isinstance(figures, dict) or not isinstance(raw, list):
        raise Refused("the record lacks its version, figures or sessions")
    sessions: list[tuple[str, int]] = []
    for entry in raw[: MAX_SESSIONS + 1]:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not _hex64(entry[0])
            or type(entry[1]) is not int
            or entry[1] < 1
        ):
            raise Refused(f"a counted session is not [open mark id, count]: {str(entry)[:80]}")
        sessions.append((entry[0], entry[1]))
    if len(raw) > MAX_SESSIONS:
        raise Refused(f"the record lists more than {MAX_SESSIONS} sessions")
    run, until = content.get("sessions_run"), content.get("until")
    if type(run) is not int or type(until) is not int:
        raise Refused("the record lacks sessions_run or until")
    if not _hex64(version.get("event")) or not _hex64(version.get("author")):
        raise Refused("the record names no recipe version event and author")
    relays = content.get("relays", [])
    if not isinstance(relays, list):
        raise Refused("the record's relays are not a list")
    hints = tuple(
        r for r in relays[:MAX_RELAYS] if isinstance(r, str) and r.startswith(("ws://", "wss://"))
    )
    claim = Claim(
        event,
        version["event"],
        version["author"],
        figures,
        Counted(tuple(sessions), run, until, hints),
    )
    if event.tag_value("d") != claim.version_event:
        claim.problems.append("its d tag names another version than its content")
    if sorted(sessions) != sessions or len(set(s for s, _ in sessions)) != len(sessions):
        claim.problems.append("its sessions are not listed once each, in order")
    if content.get("sessions_sha256") != claim.counted.digest:
        claim.problems.append("its sessions_sha256 is not the hash of the sessions it lists")
    if run < len(sessions):
        claim.problems.append(f"it says {run} sessions were run, but counts {len(sessions)}")
    flat = flatten(figures)
    for name, path in RESULT_TAGS.items():
        tag = event.tag_value(name)
        if tag is not None and tag != str(flat.get(path)):
            claim.problems.append(f"its {name} tag says {tag}, its figures {flat.get(path)}")
    return claim


# -- recomputing it ----------------------------------------------------------------------------


@dataclass
class Recount:
    """A record recomputed from events, and what in the events does not hold."""

    record: Record
    problems: list[str]
    texts_public: bool  # every counted final turn's text was in its event


def recompute(
    sessions: Mapping[str, list[Event]],
    verdicts: Iterable[Event],
    labels: Iterable[Event],
    *,
    gateway: str,
    until: int,
    texts: Mapping[str, str] | None = None,
) -> Recount:
    """The record of these sessions' events (each already cut to the count the record
    names), verdicts and labels, all signed by `gateway`. `texts` (receipt id → text) stands
    in for text the events only commit to: the publisher's own plaintext."""
    items = []
    turns: dict[str, str] = {}
    public = True
    for root in sorted(sessions):
        for event in sessions[root]:
            fields_text = None
            if event.kind == kinds.AGENT_TURN:
                turns[event.id] = event.tag_value("session") or ""
                fields_text = _text(event)
                if fields_text is None:
                    public = False
                    fields_text = (texts or {}).get(event.id)
            items.append(
                (
                    event.tag_value("session") or root,
                    _seq(event),
                    event.kind,
                    event.content,
                    fields_text,
                    event.id,
                )
            )
    exchanges = {i[5] for i in items if i[2] == kinds.EXCHANGE_END}
    voted = live_votes(verdicts, gateway=gateway, turns=turns, until=until)
    judged = labels_of(
        [e for e in labels if e.created_at <= until], gateway=gateway, exchanges=exchanges
    )
    record = compute(items, votes=voted.votes, labels=judged.labels, installs=1)
    return Recount(record, voted.problems + judged.problems, public)


def _text(event: Event) -> str | None:
    try:
        fields = json.loads(event.content)
    except ValueError:
        return None
    text = fields.get("text") if isinstance(fields, dict) else None
    return text if isinstance(text, str) else None


def _seq(event: Event) -> int:
    try:
        return int(event.tag_value("seq") or "")
    except ValueError:
        return -1


def is_v2(events: list[Event]) -> bool:
    return bool(events) and event_format(events[0]) == 2


@dataclass
class Comparison:
    mismatches: list[str]
    claimed: list[str]  # figures only the install can vouch for
    matched: int


def differences(
    claimed: Mapping[str, Any], actual: Mapping[str, Any], *, texts_public: bool
) -> Comparison:
    """Every figure of the claim against the recount: matched, does not match (named, with
    both values), or claimed (not recomputable from public events)."""
    mine, theirs = flatten(claimed), flatten(actual)
    result = Comparison([], [], 0)
    for name in sorted(set(mine) | set(theirs)):
        if name in CLAIMED_ALWAYS:
            result.claimed.append(f"{name} = {mine.get(name)} (receipts do not name rooms)")
            continue
        if name.startswith(TEXT_FIGURES) and not texts_public:
            if name == "diversity.mean":
                result.claimed.append(
                    f"diversity = {mine.get(name)} (final turns' text is under commitment)"
                )
            continue
        if name not in mine:
            result.mismatches.append(
                f"{name}: the record leaves it out; the events show {theirs[name]!r}"
            )
        elif name not in theirs:
            result.mismatches.append(
                f"{name}: the record says {mine[name]!r}, which no event supports"
            )
        elif not _same(mine[name], theirs[name]):
            result.mismatches.append(
                f"{name}: the record says {mine[name]!r}, the events show {theirs[name]!r}"
            )
        else:
            result.matched += 1
    return result


def _same(a: Any, b: Any) -> bool:
    if type(a) in (int, float) and type(b) in (int, float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b
