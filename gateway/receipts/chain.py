"""Receipts of a session as a hash-linked chain of signed events. Pure, no I/O.

Every receipt is signed in commitment form: the content carries a salted hash of the text,
never the text, unless the room chose full transparency. The same signed event is then
safe to keep locally and to publish later, and `reveal` proves a text by its salt. The
plaintext and salt stay in the local store.

Content is JSON with ASCII escapes, so it never holds raw control characters, where NIP-01
("escape seven characters, the rest verbatim") and common JSON encoders would disagree on
the id.

Two formats verify here, event by event (gateway/receipts/__init__.py describes both): v1
(content `"v": 1`, the chain link an `e` tag marked "prev") and v2 (a `["format", "2"]`
tag, NIP-22-style scope tags, exchange ends, closed endings and counts a reader recomputes).
A session keeps the format it was opened in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import kinds
from .endings import MAX_DETAIL, NAMESPACE, Ending
from .nostr import Event, Signer, check_event

FORMAT = 2  # new sessions are signed in this format
FORMATS = (1, 2)
FORMAT_TAG = "format"


def commitment(salt: bytes, text: str) -> str:
    return hashlib.sha256(b"potluck/commitment/1\x00" + salt + text.encode("utf-8")).hexdigest()


def output_commitment(salt: bytes, output: str) -> str:
    """A tool call's output as a commitment-form receipt signs it (`output_commitment`):
    salted, so a short output (a PIN, a yes, a number) cannot be guessed from the relay,
    and in a domain of its own, so it never equals a text's commitment. Its salt is not the
    command's (KeyPair.output_salt): revealing the command does not open the output.
    Transparent receipts, and commitment-form ones signed before, carry `output_sha256`,
    the output's plain SHA-256."""
    return hashlib.sha256(b"potluck/output/1\x00" + salt + output.encode("utf-8")).hexdigest()


def output_matches(event: Event, output: str, salt: bytes | None = None) -> bool:
    """True when this is the output a tool-call receipt signed: against its salted
    `output_commitment` (the salt is needed), or the plain `output_sha256` of transparent
    and older receipts."""
    try:
        fields = json.loads(event.content)
    except ValueError:
        return False
    if not isinstance(fields, dict):
        return False
    salted, plain = fields.get("output_commitment"), fields.get("output_sha256")
    if isinstance(salted, str) and salt is not None:
        return hmac.compare_digest(salted, output_commitment(salt, output))
    if isinstance(plain, str) and salted is None:
        return hmac.compare_digest(plain, hashlib.sha256(output.encode("utf-8")).hexdigest())
    return False


def reveal_matches(event: Event, text: str, salt: bytes) -> bool:
    """True when this text and salt are what the event committed to."""
    try:
        claimed = json.loads(event.content).get("commitment")
    except (ValueError, AttributeError):
        return False
    return isinstance(claimed, str) and hmac.compare_digest(claimed, commitment(salt, text))


def event_format(event: Event) -> int:
    """2 for events carrying the v2 format tag, else 1 (v1 events have no tag)."""
    return 2 if event.tag_value(FORMAT_TAG) == "2" else 1


def latest_address(author_pubkey: str, name: str) -> str:
    """NIP-01 `a` value of a recipe's latest-version pointer."""
    return f"{kinds.RECIPE_LATEST}:{author_pubkey}:{name}"


@dataclass(frozen=True)
class RecipeRef:
    """The recipe version a session runs: by content (version id) and, in v2, by its exact
    signed event and that event's author (who may be another install)."""

    name: str
    version_id: str
    author_pubkey: str
    event_id: str | None = None
    relay: str = ""  # where the version event is likely found

    @property
    def address(self) -> str:
        if self.event_id is None:  # v1: versions were addressable events themselves
            return f"{kinds.RECIPE_VERSION_V1}:{self.author_pubkey}:{self.name}"
        return latest_address(self.author_pubkey, self.name)


@dataclass(frozen=True)
class Link:
    """Where a new receipt goes: its session, its place in the chain, its predecessor."""

    session_id: str
    seq: int
    prev_id: str | None
    recipe: RecipeRef
    root_id: str | None = None  # v2: the open mark's id (None for the open mark itself)
    format: int = FORMAT
    relay: str = ""  # v2: relay hint for references to this gateway's own events


def _content(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def ending_fields(ending: Ending | str, detail: str) -> dict[str, Any]:
    """The signed form of an ending: a closed value, and bounded free text beside it."""
    return {"ending": Ending.parse(ending).value, "detail": str(detail)[:MAX_DETAIL]}


def receipt(
    signer: Signer,
    link: Link,
    kind: int,
    fields: dict[str, Any],
    *,
    text: str | None,
    salt: bytes,
    transparent: bool,
    created_at: int,
) -> Event:
    """Sign one receipt. `fields` is metadata (agent, model, tokens…); `text` is committed."""
    if kind not in kinds.RECEIPT_KINDS:
        raise ValueError(f"kind {kind} is not a receipt kind")
    body: dict[str, Any] = dict(fields) if link.format == 2 else {"v": 1, **fields}
    if text is not None:
        body["commitment"] = commitment(salt, text)
        body["chars"] = len(text)
        if transparent:
            body["text"] = text
    alt = ["alt", f"Potluck receipt: {kinds.NAMES[kind]}"]
    if link.format == 1:
        tags = [
            ["session", link.session_id],
            ["seq", str(link.seq)],
            ["a", link.recipe.address],
            ["recipe", link.recipe.version_id],
            alt,
        ]
        if link.prev_id is not None:
            tags.insert(2, ["e", link.prev_id, "", "prev"])
        return signer.sign(created_at, kind, tags, _content(body))
    recipe = link.recipe
    tags = [[FORMAT_TAG, "2"], ["session", link.session_id], ["seq", str(link.seq)]]
    if link.seq == 0:
        if recipe.event_id is None:
            raise ValueError("a v2 session opens on a signed recipe version event")
        # The open mark answers the recipe version it runs (NIP-22 style: `e` the parent
        # item, `k` its kind, `p` its author), so `#e`/`#p` find a version's sessions.
        tags += [
            ["e", recipe.event_id, recipe.relay, recipe.author_pubkey],
            ["k", str(kinds.RECIPE_VERSION)],
            ["p", recipe.author_pubkey, recipe.relay],
        ]
    else:
        if link.root_id is None or link.prev_id is None:
            raise ValueError("a v2 receipt after the open mark needs its root and predecessor")
        # Root scope (the session's open mark) in uppercase, parent item (the chain link)
        # in lowercase, as NIP-22 threads do; the 4th element is the author (NIP-01).
        tags += [
            ["E", link.root_id, link.relay, signer.pubkey],
            ["e", link.prev_id, link.relay, signer.pubkey],
        ]
    tags += [["a", recipe.address, recipe.relay], ["recipe", recipe.version_id], alt]
    if "ending" in body:  # NIP-32 self-labels: endings countable with #L/#l filters
        tags += [["L", NAMESPACE], ["l", str(body["ending"]), NAMESPACE]]
    return signer.sign(created_at, kind, tags, _content(body))


# -- counts a reader recomputes ------------------------------------------------------------


@dataclass
class Tally:
    """What a stretch of a chain holds: the counts exchange ends and close marks sign, and
    that a verifier recomputes from the events themselves."""

    persons: int = 0
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    models: set[str] = field(default_factory=set)
    tool_calls: int = 0
    tool_ok: int = 0
    tool_timeouts: int = 0
    tool_failed: int = 0
    tool_ms: int = 0
    exchanges: int = 0

    def add(self, kind: int, fields: dict[str, Any]) -> None:
        if kind == kinds.PERSON_MESSAGE:
            self.persons += 1
        elif kind == kinds.AGENT_TURN:
            self.turns += 1
            self.tokens_in += _int(fields.get("tokens_in"))
            self.tokens_out += _int(fields.get("tokens_out"))
            self.cost_usd += _float(fields.get("cost_usd"))
            self.models.add(str(fields.get("model", "")))
        elif kind == kinds.TOOL_CALL:
            self.tool_calls += 1
            self.tool_ms += _int(fields.get("wall_ms"))
            if fields.get("killed") == "timeout":
                self.tool_timeouts += 1
            elif fields.get("exit_code") == 0 and not fields.get("killed"):
                self.tool_ok += 1
            else:
                self.tool_failed += 1
        elif kind == kinds.EXCHANGE_END:
            self.exchanges += 1

    def summary(self) -> dict[str, Any]:
        return {
            "persons": self.persons,
            "turns": self.turns,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": round(self.cost_usd, 8),
            "models": sorted(self.models),
            "tool_calls": self.tool_calls,
            "tool_ok": self.tool_ok,
            "tool_timeouts": self.tool_timeouts,
            "tool_failed": self.tool_failed,
            "tool_ms": self.tool_ms,
        }

    def merge(self, other: Tally) -> None:
        for name in ("persons", "turns", "tokens_in", "tokens_out", "tool_calls", "tool_ok"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("tool_timeouts", "tool_failed", "tool_ms", "exchanges"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost_usd += other.cost_usd
        self.models |= other.models


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _float(value: Any) -> float:
    return float(value) if type(value) in (int, float) else 0.0


def summary_mismatches(claimed: dict[str, Any], tally: Tally) -> list[str]:
    """The signed counts that differ from what the events show, each named."""
    wrong = []
    for key, value in tally.summary().items():
        got = claimed.get(key)
        if key == "cost_usd":
            same = type(got) in (int, float) and abs(float(got) - value) < 5e-9
        else:
            same = got == value
        if not same:
            wrong.append(f"{key} says {got!r}, the events show {value!r}")
    return wrong


# -- verifying -----------------------------------------------------------------------------


@dataclass
class Report:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    formats: Counter[int] = field(default_factory=Counter)  # events per format

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def format_label(self) -> str:
        """The formats seen ("format v2", "format v1" or the mix), for a verify report."""
        if not self.formats:
            return "no events"
        if len(self.formats) == 1:
            return f"format v{next(iter(self.formats))}"
        return "mixed formats: " + ", ".join(
            f"{count} v{fmt}" for fmt, count in sorted(self.formats.items())
        )


def _fields(event: Event) -> dict[str, Any] | None:
    try:
        fields = json.loads(event.content)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def verify_chain(
    events: list[Event],
    *,
    pubkey: str | None = None,
    reveals: dict[str, tuple[str, bytes]] | None = None,
) -> Report:
    """Check ids, signatures and links of one session's receipts, in stored order.

    A missing event breaks `seq` and the links; a reordered one breaks `seq`; an altered one
    breaks its id or signature; in v2 a count that does not match the events it sums, an
    ending outside the closed set or an event after the close mark is named too. Each
    problem names the event and what is wrong with it.
    """
    report = Report()
    expected_pubkey = pubkey or (events[0].pubkey if events else None)
    session = events[0].tag_value("session") if events else None
    chain_format = event_format(events[0]) if events else FORMAT
    root = _root_of(events) if chain_format == 2 else None
    stretch, whole = Tally(), Tally()
    stretch_start = 1
    previous: Event | None = None
    closed = False
    for index, event in enumerate(events):
        report.checked += 1
        fmt = event_format(event)
        report.formats[fmt] += 1
        label = f"#{index} ({event.id[:12]}…, {kinds.NAMES.get(event.kind, event.kind)})"
        problems: list[str] = []
        if (problem := check_event(event)) is not None:
            problems.append(problem)
        if event.pubkey != expected_pubkey:
            problems.append(f"signed by another key ({event.pubkey[:12]}…)")
        if event.kind not in kinds.RECEIPT_KINDS:
            problems.append(f"kind {event.kind} is not a receipt")
        if event.tag_value("session") != session:
            problems.append("belongs to another session")
        seq = event.tag_value("seq")
        if seq != str(index):
            problems.append(f"seq is {seq}, expected {index} (an event is missing or out of order)")
        if fmt != chain_format:
            problems.append(f"a v{fmt} event in a v{chain_format} chain")
        if closed:
            problems.append("comes after the session's close mark")
        if previous is not None and event.created_at < previous.created_at:
            problems.append("created before the event it follows")
        if reveals and event.id in reveals:
            text, salt = reveals[event.id]
            if not reveal_matches(event, text, salt):
                problems.append("stored text does not match its commitment")
        if fmt == 1:
            problems += _links_v1(event, previous)
        else:
            problems += _links_v2(event, previous, events[0], root, index)
            fields = _fields(event) or {}
            if event.kind == kinds.EXCHANGE_END:
                problems += _counts(fields, stretch, "exchange")
                expected_from = stretch_start
                if fields.get("from_seq") != expected_from:
                    problems.append(
                        f"exchange starts at seq {fields.get('from_seq')!r}, "
                        f"expected {expected_from}"
                    )
                problems += _ending(event, fields)
                whole.merge(stretch)
                whole.exchanges += 1
                stretch, stretch_start = Tally(), index + 1
            elif _is_close(event):
                whole.merge(stretch)
                problems += _counts(fields, whole, "session")
                if fields.get("count") != index + 1:
                    problems.append(f"count says {fields.get('count')!r}, expected {index + 1}")
                if fields.get("exchanges") != whole.exchanges:
                    problems.append(
                        f"exchanges says {fields.get('exchanges')!r}, the events show "
                        f"{whole.exchanges}"
                    )
                problems += _ending(event, fields)
            elif index > 0:
                stretch.add(event.kind, fields)
        report.problems += [f"{label}: {p}" for p in problems]
        closed = closed or _is_close(event)
        previous = event
    if events and not _is_close(events[-1]):
        report.notes.append("no closing mark: the session is still live, or its end is missing")
    return report


def _root_of(events: list[Event]) -> str | None:
    """The open mark's id: the first event's own id if it is the open mark, else the root
    the events name (so a chain whose start is missing still checks its other links)."""
    if events and events[0].tag_value("seq") == "0":
        return events[0].id
    roots = Counter(e.tag_value("E") for e in events)
    return roots.most_common(1)[0][0] if roots else None


def _links_v1(event: Event, previous: Event | None) -> list[str]:
    prev = event.tag_value("e")
    if previous is None and prev is not None:
        return [f"links to {prev[:12]}…, which is not in the chain (the chain's start is missing)"]
    if previous is not None and prev != previous.id:
        return [
            f"links to {str(prev)[:12]}…, expected {previous.id[:12]}… "
            "(an event is missing or out of order)"
        ]
    return []


def _links_v2(
    event: Event, previous: Event | None, first: Event, root: str | None, index: int
) -> list[str]:
    problems = []
    if event.tag_value("a") != first.tag_value("a") or (
        event.tag_value("recipe") != first.tag_value("recipe")
    ):
        problems.append("names another recipe version than the session's")
    if event.tag_value("seq") == "0":
        if not _is_open(event):
            problems.append("the first event is not an open mark")
        version = event.tag("e")
        if version is None or event.tag_value("k") != str(kinds.RECIPE_VERSION):
            problems.append("the open mark does not reference its recipe version event")
        elif len(version) < 4 or version[3] != event.tag_value("p"):
            problems.append("the open mark's recipe reference lacks its author")
        if event.tag("E") is not None:
            problems.append("the open mark names a root: it is not the start of the chain")
        return problems
    if previous is None:
        prev = event.tag_value("e")
        problems.append(
            f"links to {str(prev)[:12]}…, which is not in the chain (the chain's start is missing)"
        )
    else:
        link = event.tag("e")
        if link is None or link[1] != previous.id:
            got = link[1][:12] if link and len(link) > 1 else None
            problems.append(
                f"links to {got}…, expected {previous.id[:12]}… "
                "(an event is missing or out of order)"
            )
        elif len(link) < 4 or link[3] != event.pubkey:
            problems.append("its chain link does not name its author (NIP-01 `e`, 4th element)")
    if event.tag_value("E") != root:
        problems.append(f"names root {str(event.tag_value('E'))[:12]}…, not this session's")
    return problems


def _counts(fields: dict[str, Any], tally: Tally, what: str) -> list[str]:
    return [f"{what} {m}" for m in summary_mismatches(fields, tally)]


def _ending(event: Event, fields: dict[str, Any]) -> list[str]:
    try:
        ending = Ending.parse(fields.get("ending"))
    except ValueError as exc:
        return [str(exc)]
    label = event.tag("l")
    if event.tag_value("L") != NAMESPACE or label is None or label[1:3] != (ending, NAMESPACE):
        return [f"its NIP-32 label does not say {ending.value}"]
    return []


def _is_open(event: Event) -> bool:
    return event.kind == kinds.SESSION_MARK and (_fields(event) or {}).get("mark") == "open"


def _is_close(event: Event) -> bool:
    return event.kind == kinds.SESSION_MARK and (_fields(event) or {}).get("mark") == "close"
