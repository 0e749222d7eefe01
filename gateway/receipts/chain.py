"""Receipts of a session as a hash-linked chain of signed events. Pure, no I/O.

Every receipt is signed in commitment form: the content carries a salted hash of the text,
never the text, unless the room chose full transparency. The same signed event is then
safe to keep locally and to publish later, and `reveal` proves a text by its salt. The
plaintext and salt stay in the local store.

Content is JSON with ASCII escapes, so it never holds raw control characters, where NIP-01
("escape seven characters, the rest verbatim") and common JSON encoders would disagree on
the id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from . import kinds
from .nostr import Event, Signer, check_event

FORMAT = 1


def commitment(salt: bytes, text: str) -> str:
    return hashlib.sha256(b"potluck/commitment/1\x00" + salt + text.encode("utf-8")).hexdigest()


def reveal_matches(event: Event, text: str, salt: bytes) -> bool:
    """True when this text and salt are what the event committed to."""
    try:
        claimed = json.loads(event.content).get("commitment")
    except (ValueError, AttributeError):
        return False
    return isinstance(claimed, str) and hmac.compare_digest(claimed, commitment(salt, text))


@dataclass(frozen=True)
class RecipeRef:
    name: str
    version_id: str
    author_pubkey: str

    @property
    def address(self) -> str:
        return f"{kinds.RECIPE_VERSION}:{self.author_pubkey}:{self.name}"


@dataclass(frozen=True)
class Link:
    """Where a new receipt goes: its session, its place in the chain, its predecessor."""

    session_id: str
    seq: int
    prev_id: str | None
    recipe: RecipeRef


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
    body: dict[str, Any] = {"v": FORMAT, **fields}
    if text is not None:
        body["commitment"] = commitment(salt, text)
        body["chars"] = len(text)
        if transparent:
            body["text"] = text
    tags = [
        ["session", link.session_id],
        ["seq", str(link.seq)],
        ["a", link.recipe.address],
        ["recipe", link.recipe.version_id],
        ["alt", f"Potluck receipt: {kinds.NAMES[kind]}"],
    ]
    if link.prev_id is not None:
        tags.insert(2, ["e", link.prev_id, "", "prev"])
    content = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return signer.sign(created_at, kind, tags, content)


def recipe_event(
    signer: Signer,
    recipe_ref: RecipeRef,
    canonical_json: str,
    forked_from: str | None,
    title: str,
    created_at: int,
) -> Event:
    """A recipe version as an addressable event, so receipts can point at what they ran."""
    tags = [
        ["d", recipe_ref.name],
        ["version", recipe_ref.version_id],
        ["title", title],
        ["alt", f"Potluck recipe {recipe_ref.name}@{recipe_ref.version_id[:7]}"],
    ]
    if forked_from:
        tags.append(["forked_from", forked_from])
    return signer.sign(created_at, kinds.RECIPE_VERSION, tags, canonical_json)


@dataclass
class Report:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(
    events: list[Event],
    *,
    pubkey: str | None = None,
    reveals: dict[str, tuple[str, bytes]] | None = None,
) -> Report:
    """Check ids, signatures and links of one session's receipts, in stored order.

    A missing event breaks `seq` and `prev`; a reordered one breaks `seq`; an altered one
    breaks its id or signature. Each problem names the event and what is wrong with it.
    """
    report = Report()
    expected_pubkey = pubkey or (events[0].pubkey if events else None)
    session = events[0].tag_value("session") if events else None
    previous: Event | None = None
    for index, event in enumerate(events):
        report.checked += 1
        label = f"#{index} ({event.id[:12]}…, {kinds.NAMES.get(event.kind, event.kind)})"
        if (problem := check_event(event)) is not None:
            report.problems.append(f"{label}: {problem}")
        if event.pubkey != expected_pubkey:
            report.problems.append(f"{label}: signed by another key ({event.pubkey[:12]}…)")
        if event.kind not in kinds.RECEIPT_KINDS:
            report.problems.append(f"{label}: kind {event.kind} is not a receipt")
        if event.tag_value("session") != session:
            report.problems.append(f"{label}: belongs to another session")
        seq = event.tag_value("seq")
        if seq != str(index):
            report.problems.append(
                f"{label}: seq is {seq}, expected {index} (an event is missing or out of order)"
            )
        prev = event.tag_value("e")
        if previous is None and prev is not None:
            report.problems.append(
                f"{label}: links to {prev[:12]}…, which is not in the chain "
                "(the chain's start is missing)"
            )
        elif previous is not None and prev != previous.id:
            report.problems.append(
                f"{label}: links to {str(prev)[:12]}…, expected "
                f"{previous.id[:12]}… (an event is missing or out of order)"
            )
        if previous is not None and event.created_at < previous.created_at:
            report.problems.append(f"{label}: created before the event it follows")
        if reveals and event.id in reveals:
            text, salt = reveals[event.id]
            if not reveal_matches(event, text, salt):
                report.problems.append(f"{label}: stored text does not match its commitment")
        previous = event
    if events and not _is_close(events[-1]):
        report.notes.append("no closing mark: the session is still live, or its end is missing")
    return report


def _is_close(event: Event) -> bool:
    if event.kind != kinds.SESSION_MARK:
        return False
    try:
        return json.loads(event.content).get("mark") == "close"
    except ValueError:
        return False
