"""A track record computed from receipts: pure, one pass over a version's events.

What is counted, and in which unit (a chat room's session is long-lived and holds many
exchanges, so the two are kept apart):

- **exchanges** (one run of the agents answering a person, closed by an exchange-end
  event): how each ended (the closed set of endings), completion (ended by the recipe's
  own stop condition) as a rate, and per exchange its tokens, turns and money, and which
  models actually answered (fallbacks included: the exchange end names them).
- **sessions** (a room's conversation on one recipe version, from its open mark): how many,
  how the closed ones ended, and per session its tokens, turns and money so far.
- **tool calls**: success (exit 0 and not killed), time-outs, failures, median time.
- **verdicts**: people's 👍/👎, one counted vote per person per session; votes by insiders
  (room admins, who choose what a room runs, and the install's owner) are counted apart.
- **reach**: people who spoke, people who voted, installs whose sessions are counted.
- **diversity**: how alike the final turns of different sessions are (likeness.py).
- **challenge**: the share of judged exchanges a judge labelled "challenged", per judge.

The input is each receipt's content (its JSON text) and, where known, the text it commits
to; counts are read from the signed exchange ends, which verification recomputes from the
events (gateway/receipts/chain.py), so a record computed from verified chains is as true as
the chains. Tool calls and people's pseudonyms are read with anchored patterns, falling back
to full parsing: a record of 100,000 receipts costs about as much as reading them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.conductor import Ending

from ..receipts import kinds
from .likeness import Diversity, diversity
from .stats import Rate, Spread

# One receipt as a record reads it: (session id, seq, kind, content JSON (or the whole
# stored event: see `compute`), committed text or None, event id).
Item = tuple[str, int, int, str, str | None, str]


def _patterns(q: str, head: str, tail: str) -> tuple[re.Pattern[str], ...]:
    """A tool call's results, a person's pseudonym and an exchange end's figures, read from
    a content whose quotes are written `q`, found after `head` and before `tail`. Keys are
    sorted (chain._content) and written `"key":` with no space, and a quote inside a string
    value is always escaped, so these match real keys only; an exchange end is matched
    whole. A tool call's output digest is `output_commitment` (salted) or, in transparent
    rooms and receipts signed before it, `output_sha256`. Anything else (a detail with
    escapes in it, a key added later) falls back to parsing the JSON."""
    text = r"[^\"\\]*"  # a string value with no escapes in it
    number = r"-?[0-9][0-9.eE+-]*"
    tool = re.compile(
        f"{q}exit_code{q}:(-?\\d+|null),{q}killed{q}:(null|{q}[a-z_]*{q}),"
        f"{q}output_bytes{q}:\\d+,{q}output_(?:commitment|sha256){q}:{q}[0-9a-f]{{64}}{q},"
        f"(?:{q}text{q}:{q}{text}{q},)?{q}tool{q}:{q}{text}{q},"
        f"{q}wall_ms{q}:(-?\\d+)}}{tail}"
    )
    sender = re.compile(f"{q}sender{q}:{q}([0-9a-f]{{64}}){q}")
    end = re.compile(
        f"{head}{{{q}cost_usd{q}:({number}),{q}detail{q}:{q}{text}{q},"
        f"{q}ending{q}:{q}([a-z_]+){q},{q}from_seq{q}:\\d+,"
        f"{q}models{q}:\\[((?:{q}{text}{q},?)*)\\],{q}persons{q}:\\d+,"
        f"{q}tokens_in{q}:(\\d+),{q}tokens_out{q}:(\\d+),"
        f"(?:{q}tool_[a-z_]+{q}:\\d+,)*{q}turns{q}:(\\d+)}}{tail}"
    )
    name = re.compile(f"{q}({text}){q}")
    return tool, sender, end, name


# A content as signed (plain), or a whole stored event (stored), where the content is a JSON
# string escaped once more between `,"content":"` and `","sig":"…"}` (nostr.Signer's layout;
# a tag value cannot hold those unescaped, and the tags of receipts are ids, numbers and
# slugs).
_PATTERNS = {
    False: _patterns('"', "^", "$"),
    True: _patterns(r'\\"', r',"content":"', r'","sig":"'),
}
# An escape other than \" or \\ in an escaped content (a newline in a detail, say): decode
# it the slow, exact way.
_OTHER_ESCAPE = re.compile(r'\\[^"\\]')


def unescape(escaped: str) -> str:
    """A JSON string's body (without its quotes) decoded: the content of a stored event."""
    if _OTHER_ESCAPE.search(escaped) is None:
        return escaped.replace("\\\\", "\x00").replace('\\"', '"').replace("\x00", "\\")
    decoded = json.loads('"' + escaped + '"')
    return decoded if isinstance(decoded, str) else ""


def stored_content(event_json: str) -> str:
    """The content of an event stored as JSON: cut out where it has Signer's layout (content
    last but the signature), else parsed."""
    start = event_json.find(_CONTENT)
    end = len(event_json) - _SIG_TAIL
    if start > 0 and event_json.startswith(_SIG, end) and event_json[end - 1] == '"':
        return unescape(event_json[start + len(_CONTENT) : end - 1])
    content = json.loads(event_json).get("content", "")
    return content if isinstance(content, str) else ""


_CONTENT = ',"content":"'
_SIG = ',"sig":"'
_SIG_TAIL = len(_SIG) + 128 + len('"}')


ENDINGS = tuple(e.value for e in Ending)


@dataclass(frozen=True)
class VoteFact:
    """A counted vote: the session it is in, the person (a salted hash), +1 or -1, and
    whether the person is an insider (a room admin or the install's owner)."""

    session: str
    voter: str
    value: int
    insider: bool


@dataclass(frozen=True)
class LabelFact:
    """A judge's label on one exchange (its exchange-end event id)."""

    exchange: str
    label: str  # "challenged" | "agreed"
    judge: str  # the judge model as configured, and its prompt's version


@dataclass
class Record:
    """Every figure of a track record; `to_dict` is what is shown, published and compared."""

    sessions: int = 0
    sessions_closed: int = 0
    session_endings: Counter[str] = field(default_factory=Counter)
    exchanges: int = 0
    endings: Counter[str] = field(default_factory=Counter)
    tool_calls: int = 0
    tool_ok: int = 0
    tool_timeouts: int = 0
    tool_failed: int = 0
    tool_ms: Spread = field(default_factory=lambda: Spread(0, None, None))
    per_exchange: dict[str, Spread] = field(default_factory=dict)
    per_session: dict[str, Spread] = field(default_factory=dict)
    models: Counter[str] = field(default_factory=Counter)
    up: int = 0
    down: int = 0
    insider_up: int = 0
    insider_down: int = 0
    people: int = 0
    voters: int = 0
    installs: int = 0
    rooms: int | None = None  # known to the install only: claimed in a published record
    diversity: Diversity | None = None
    challenge: dict[str, Rate] = field(default_factory=dict)
    skipped_v1: int = 0  # sessions in receipts format v1 (no exchange ends): not counted
    # The raw values behind the spreads, for comparisons (not published).
    samples: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def completion(self) -> Rate:
        return Rate(self.endings[Ending.COMPLETED.value], self.exchanges)

    @property
    def tool_success(self) -> Rate:
        return Rate(self.tool_ok, self.tool_calls)

    @property
    def tool_timeout(self) -> Rate:
        return Rate(self.tool_timeouts, self.tool_calls)

    @property
    def approval(self) -> Rate:
        """People's 👍 among their counted votes (insiders apart)."""
        return Rate(self.up, self.up + self.down)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": {
                "n": self.sessions,
                "closed": self.sessions_closed,
                "endings": {e: self.session_endings[e] for e in ENDINGS},
                **{k: v.to_dict() for k, v in self.per_session.items()},
            },
            "exchanges": {
                "n": self.exchanges,
                "endings": {e: self.endings[e] for e in ENDINGS},
                "completion": self.completion.to_dict(),
                **{k: v.to_dict() for k, v in self.per_exchange.items()},
                "models": dict(sorted(self.models.items())),
            },
            "tools": {
                "calls": self.tool_calls,
                "ok": self.tool_ok,
                "timeouts": self.tool_timeouts,
                "failed": self.tool_failed,
                "success": self.tool_success.to_dict(),
                "timeout": self.tool_timeout.to_dict(),
                "ms": self.tool_ms.to_dict(),
            },
            "verdicts": {
                "up": self.up,
                "down": self.down,
                "approval": self.approval.to_dict(),
                "insiders": {"up": self.insider_up, "down": self.insider_down},
            },
            "reach": {
                "people": self.people,
                "voters": self.voters,
                "installs": self.installs,
                "rooms": self.rooms,
            },
            "diversity": (self.diversity or diversity([])).to_dict(),
            "challenge": {judge: rate.to_dict() for judge, rate in sorted(self.challenge.items())},
            "skipped_v1": self.skipped_v1,
        }


def _fields(content: str) -> dict[str, Any]:
    try:
        fields = json.loads(content)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _number(value: Any) -> float:
    return float(value) if type(value) in (int, float) else 0.0


class _Session:
    __slots__ = ("cost", "exchanges", "final", "tokens", "turns", "v1")

    def __init__(self) -> None:
        self.tokens = 0.0
        self.turns = 0.0
        self.cost = 0.0
        self.exchanges = 0
        self.final: str | None = None  # the latest agent turn's text in this exchange
        self.v1 = False


def compute(
    items: Iterable[Item],
    *,
    votes: Iterable[VoteFact] = (),
    labels: Iterable[LabelFact] = (),
    installs: int = 1,
    stored: bool = False,
) -> Record:
    """The record of these receipts (each session's, in seq order), votes and labels.
    `stored`: each item holds its whole event as the store keeps it (JSON text) instead of
    its content, which is then read where it lies."""
    record = Record(installs=installs)
    tool_at, sender_at, end_at, name_at = _PATTERNS[stored]
    decode = stored_content if stored else str
    sessions: dict[str, _Session] = {}
    tokens: list[float] = []
    turns: list[float] = []
    costs: list[float] = []
    tool_ms: list[float] = []
    people: set[str] = set()
    finals: list[tuple[str, str]] = []
    exchange_ids: set[str] = set()
    endings: list[str] = []
    model_sets: dict[str, int] = {}  # the models an exchange names, as written: how often
    current = _Session()
    current_id: str | None = None
    turn, tool, person, end = (
        kinds.AGENT_TURN,
        kinds.TOOL_CALL,
        kinds.PERSON_MESSAGE,
        kinds.EXCHANGE_END,
    )
    for session_id, _seq, kind, content, text, event_id in items:
        if session_id != current_id:
            current_id = session_id
            current = sessions.get(session_id) or sessions.setdefault(session_id, _Session())
        if kind == turn:
            current.final = text
        elif kind == tool:
            if current.v1:
                continue
            found = tool_at.search(content)
            if found is None:
                fields = _fields(decode(content))
                ms, exit_code, why = fields.get("wall_ms"), fields.get("exit_code"), None
                why = fields.get("killed")
            else:
                code, killed, wall = found.groups()
                ms = int(wall)
                exit_code = None if code == "null" else int(code)
                why = None if killed == "null" else killed.strip('\\"')
            record.tool_calls += 1
            tool_ms.append(ms if type(ms) is int else 0)
            if why == "timeout":
                record.tool_timeouts += 1
            elif exit_code == 0 and not why:
                record.tool_ok += 1
            else:
                record.tool_failed += 1
        elif kind == person:
            found = sender_at.search(content)
            sender = found.group(1) if found else _fields(decode(content)).get("sender")
            if isinstance(sender, str):
                people.add(sender)
        elif kind == end:
            if current.v1:
                continue
            match = end_at.search(content)
            if match is not None:
                cost_text, ending, names, tokens_in, tokens_out, turns_text = match.groups()
                spent = float(tokens_in) + float(tokens_out)
                used = float(turns_text)
                cost = float(cost_text)
            else:  # an unusual layout: read it whole
                fields = _fields(decode(content))
                ending = str(fields.get("ending", ""))
                spent = _number(fields.get("tokens_in")) + _number(fields.get("tokens_out"))
                used = _number(fields.get("turns"))
                cost = _number(fields.get("cost_usd"))
                listed = fields.get("models")
                if isinstance(listed, list):
                    record.models.update({str(m) for m in listed if m})
                names = ""
            record.exchanges += 1
            endings.append(ending)
            exchange_ids.add(event_id)
            tokens.append(spent)
            turns.append(used)
            costs.append(cost)
            current.tokens += spent
            current.turns += used
            current.cost += cost
            current.exchanges += 1
            model_sets[names] = model_sets.get(names, 0) + 1
            if current.final is not None:
                finals.append((session_id, current.final))
            current.final = None
        elif kind == kinds.SESSION_MARK:
            fields = _fields(decode(content))
            if fields.get("mark") == "open":
                if "v" in fields:  # format v1: no exchange ends, nothing to count
                    current.v1 = True
                    record.skipped_v1 += 1
                else:
                    record.sessions += 1
            elif fields.get("mark") == "close" and not current.v1:
                record.sessions_closed += 1
                record.session_endings[str(fields.get("ending", ""))] += 1
    record.endings.update(endings)
    for names, count in model_sets.items():
        for model in {m for m in name_at.findall(names) if m}:
            record.models[model] += count
    counted = [s for s in sessions.values() if not s.v1 and s.exchanges]
    record.per_exchange = {
        "tokens": Spread.of(tokens),
        "turns": Spread.of(turns),
        "cost_usd": Spread.of(costs),
    }
    record.per_session = {
        "tokens": Spread.of([s.tokens for s in counted]),
        "turns": Spread.of([s.turns for s in counted]),
        "cost_usd": Spread.of([s.cost for s in counted]),
    }
    record.samples = {"tokens": tokens, "turns": turns, "cost_usd": costs, "tool_ms": tool_ms}
    record.tool_ms = Spread.of(tool_ms)
    record.people = len(people)
    record.diversity = diversity(finals)
    _count_votes(record, votes, set(sessions))
    _count_labels(record, labels, exchange_ids)
    return record


def _count_votes(record: Record, votes: Iterable[VoteFact], sessions: set[str]) -> None:
    voters: set[str] = set()
    for vote in votes:
        if vote.session not in sessions:
            continue
        voters.add(vote.voter)
        if vote.insider:
            record.insider_up += vote.value > 0
            record.insider_down += vote.value < 0
        else:
            record.up += vote.value > 0
            record.down += vote.value < 0
    record.voters = len(voters)


def _count_labels(record: Record, labels: Iterable[LabelFact], exchanges: set[str]) -> None:
    judged: dict[str, dict[str, str]] = {}
    for label in labels:
        if label.exchange in exchanges:
            judged.setdefault(label.judge, {})[label.exchange] = label.label
    record.challenge = {
        judge: Rate(sum(1 for v in found.values() if v == "challenged"), len(found))
        for judge, found in judged.items()
    }
