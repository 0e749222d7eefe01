"""The events a track record rests on beside the receipts, built and checked here. Pure.

Checked against the NIPs as gateway/receipts/__init__.py lists them:

- A person's verdict is a NIP-25 reaction (kind 7, content "+" or "-") signed by the gateway
  as the witness of a platform reaction: `["e", turn, relay, gateway]` (the agent turn
  judged, NIP-01 with its author), `["p", gateway]` and `["k", "4741"]` as NIP-25 asks;
  `["E", open mark, relay, gateway]` names the session, so `#E` fetches a session's verdicts
  with one filter; `["voter", salted hash]` names the person as receipts do; `["insider",
  "1"]` marks a room admin's or the install owner's vote, counted apart.
- A vote changed or withdrawn is deleted by a NIP-09 deletion request (kind 5) naming the
  reaction (`e`, `k` = 7); a changed vote's new reaction names the one it replaces.
- A judge's verdict on one exchange is a NIP-32 label (kind 1985) in the namespace
  `potluck.challenge` on the exchange-end event, naming the judge model as configured, its
  prompt's version and the model that actually answered.

A reader counts, per session and person, the reactions no deletion names; more than one
left standing is a vote counted twice, and `live_votes` says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..receipts import kinds
from ..receipts.chain import FORMAT_TAG
from ..receipts.nostr import Event, Signer, check_event
from .figures import LabelFact, VoteFact

REACTION = 7  # NIP-25
DELETION = 5  # NIP-09
LABEL = 1985  # NIP-32
ASSERTION = 30383  # NIP-85: an assertion about one event (here: a recipe version event)
CHALLENGE = "potluck.challenge"  # the NIP-32 namespace of a judge's labels
CHALLENGE_LABELS = ("challenged", "agreed")
NAMES = {
    REACTION: "verdict",
    DELETION: "deletion",
    LABEL: "judgement",
    ASSERTION: "track record",
}


@dataclass(frozen=True)
class TurnRef:
    """The agent turn a verdict judges, as its receipt names it."""

    turn_id: str
    session_id: str
    root_id: str  # the session's open mark
    address: str  # the recipe's `a` value
    version_id: str
    relay: str = ""


def turn_ref(receipt: Event) -> TurnRef:
    """Where a verdict on this agent-turn receipt points."""
    if receipt.kind != kinds.AGENT_TURN:
        raise ValueError("a verdict judges an agent turn")
    root = receipt.tag("E")
    return TurnRef(
        receipt.id,
        receipt.tag_value("session") or "",
        root[1] if root else "",
        receipt.tag_value("a") or "",
        receipt.tag_value("recipe") or "",
        root[2] if root and len(root) > 2 else "",
    )


def vote_event(
    signer: Signer,
    turn: TurnRef,
    *,
    voter: str,
    value: int,
    insider: bool,
    replaces: str | None,
    created_at: int,
) -> Event:
    gateway = signer.pubkey
    tags = [
        [FORMAT_TAG, "2"],
        ["e", turn.turn_id, turn.relay, gateway],
        ["p", gateway, turn.relay],
        ["k", str(kinds.AGENT_TURN)],
        ["E", turn.root_id, turn.relay, gateway],
        ["session", turn.session_id],
        ["a", turn.address, turn.relay],
        ["recipe", turn.version_id],
        ["voter", voter],
    ]
    if insider:
        tags.append(["insider", "1"])
    if replaces:
        tags.append(["replaces", replaces])
    word = "👍" if value > 0 else "👎"
    tags.append(["alt", f"Potluck verdict: {word} on an agent turn, witnessed by the gateway"])
    return signer.sign(created_at, REACTION, tags, "+" if value > 0 else "-")


def deletion_event(signer: Signer, reaction: Event, why: str, created_at: int) -> Event:
    root = reaction.tag("E") or ("E", "", "", "")
    tags = [
        [FORMAT_TAG, "2"],
        ["e", reaction.id],
        ["k", str(REACTION)],
        list(root),
        ["session", reaction.tag_value("session") or ""],
        ["voter", reaction.tag_value("voter") or ""],
        ["alt", "Potluck: a verdict withdrawn or changed"],
    ]
    return signer.sign(created_at, DELETION, tags, why)


def label_event(
    signer: Signer,
    exchange_end: Event,
    *,
    label: str,
    judge: str,
    prompt_version: str,
    model: str,
    created_at: int,
) -> Event:
    if label not in CHALLENGE_LABELS:
        raise ValueError(f"a challenge label is one of {CHALLENGE_LABELS}, not {label!r}")
    gateway = signer.pubkey
    root = exchange_end.tag("E") or ("E", "", "", "")
    relay = root[2] if len(root) > 2 else ""
    tags = [
        [FORMAT_TAG, "2"],
        ["L", CHALLENGE],
        ["l", label, CHALLENGE],
        ["e", exchange_end.id, relay, gateway],
        ["k", str(kinds.EXCHANGE_END)],
        ["E", root[1], relay, gateway],
        ["session", exchange_end.tag_value("session") or ""],
        ["a", exchange_end.tag_value("a") or "", relay],
        ["recipe", exchange_end.tag_value("recipe") or ""],
        ["judge", judge, prompt_version],
        ["model", model],
        ["alt", f"Potluck judgement by {judge}: the agents {label} the person"],
    ]
    return signer.sign(created_at, LABEL, tags, "")


def judge_name(event: Event) -> str:
    judge = event.tag("judge")
    if judge is None or len(judge) < 3:
        return ""
    return f"{judge[1]}#{judge[2]}"


# -- reading what was signed ----------------------------------------------------------------


@dataclass
class Counted:
    """Votes and labels read from events, and what was wrong with any of them."""

    votes: list[VoteFact] = field(default_factory=list)
    labels: list[LabelFact] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def live_votes(
    events: Iterable[Event],
    *,
    gateway: str,
    turns: dict[str, str],
    until: int | None = None,
) -> Counted:
    """The votes left standing: reactions signed by `gateway`, on an agent turn of a counted
    session (`turns`: agent-turn id → its session), not deleted, at most one per person per
    session. Every event that fails is named, and so is a vote counted twice."""
    counted = Counted()
    reactions: dict[str, Event] = {}
    deleted: set[str] = set()
    for event in events:
        if until is not None and event.created_at > until:
            continue
        if event.kind not in (REACTION, DELETION):
            continue
        what = f"{NAMES[event.kind]} {event.id[:12]}…"
        if (problem := check_event(event)) is not None:
            counted.problems.append(f"{what} is forged or damaged: {problem}")
            continue
        if event.pubkey != gateway:
            counted.problems.append(f"{what} is signed by {event.pubkey[:12]}…, not the gateway")
            continue
        if event.kind == DELETION:
            deleted.update(t[1] for t in event.tags if len(t) > 1 and t[0] == "e")
            continue
        reactions[event.id] = event
    standing: dict[tuple[str, str], list[Event]] = {}
    for event in reactions.values():
        if event.id in deleted:
            continue
        what = f"verdict {event.id[:12]}…"
        turn = event.tag_value("e") or ""
        session = turns.get(turn)
        if session is None:
            counted.problems.append(f"{what} is on {turn[:12]}…, not an agent turn of a session")
            continue
        if event.tag_value("session") != session:
            counted.problems.append(f"{what} names another session than its turn's")
            continue
        if event.content not in ("+", "-"):
            counted.problems.append(f"{what} says {event.content[:8]!r}, not + or -")
            continue
        voter = event.tag_value("voter") or ""
        if len(voter) != 64:
            counted.problems.append(f"{what} names no voter")
            continue
        standing.setdefault((session, voter), []).append(event)
    for (session, voter), events_of in sorted(standing.items()):
        if len(events_of) > 1:
            counted.problems.append(
                f"a vote counted twice: {len(events_of)} verdicts of one person stand in "
                f"session {session[:8]} ({', '.join(e.id[:12] + '…' for e in events_of)})"
            )
        latest = max(events_of, key=lambda e: (e.created_at, e.id))
        counted.votes.append(
            VoteFact(
                session,
                voter,
                1 if latest.content == "+" else -1,
                latest.tag_value("insider") == "1",
            )
        )
    return counted


def labels_of(events: Iterable[Event], *, gateway: str, exchanges: set[str]) -> Counted:
    """A judge's labels on counted exchanges, signed by `gateway`; the rest named."""
    counted = Counted()
    for event in events:
        if event.kind != LABEL or event.tag_value("L") != CHALLENGE:
            continue
        what = f"judgement {event.id[:12]}…"
        if (problem := check_event(event)) is not None:
            counted.problems.append(f"{what} is forged or damaged: {problem}")
            continue
        if event.pubkey != gateway:
            counted.problems.append(f"{what} is signed by {event.pubkey[:12]}…, not the gateway")
            continue
        label = event.tag("l")
        target = event.tag_value("e") or ""
        if label is None or len(label) < 2 or label[1] not in CHALLENGE_LABELS:
            counted.problems.append(f"{what} has no challenge label")
            continue
        if target not in exchanges:
            continue  # about an exchange this record does not count
        counted.labels.append(LabelFact(target, label[1], judge_name(event)))
    return counted


def parse_json_object(text: str) -> dict:
    """A JSON object from a stranger, refusing duplicate keys (which parsers resolve
    differently, so two readers could see two records)."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice")
            seen[key] = value
        return seen

    value = json.loads(text, object_pairs_hook=no_duplicates)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
