"""People's 👍/👎 on agents' messages become counted votes, each witnessed by a signed event.

The I/O shell around a small rule: a person has at most one counted vote per session, the
one their latest standing thumbs says (on any agent turn of that session); a changed vote
replaces it, a removed one removes it. Whenever the counted vote (or the turn it is on)
changes, the gateway signs what changed (events.py): a NIP-09 deletion of the old verdict
and a NIP-25 reaction for the new one, stored with the vote in one commit and queued for the
room's relays when the room publishes.

What is not counted is kept and said why: a reaction that is not a thumbs, one on a message
that shows no agent turn (a person's, a notice), one taken back that was never seen. Who may
react is the room's allow-list, decided before anything is stored (gateway/intake.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection, delete, insert, select, update

from adapters.base import Reaction

from ..receipts import kinds
from ..receipts.ledger import Ledger
from ..receipts.nostr import Event, parse_event
from ..store.models import (
    Publication,
    ReactionRow,
    ReceiptRow,
    RecordEvent,
    Room,
    Session,
    Vote,
    now,
)
from ..store.reactions import Reactions
from .events import TurnRef, deletion_event, turn_ref, vote_event

log = logging.getLogger("potluck.verdicts")
IsAdmin = Callable[[Reaction], Awaitable[bool]]


@dataclass(frozen=True)
class Outcome:
    """What one reaction came to: "counted" (the vote changed or stayed), "ignored", and why;
    the events signed for it."""

    state: str
    reason: str = ""
    signed: tuple[Event, ...] = ()


def standing(live: list[tuple[int, int, str]]) -> tuple[int, str] | None:
    """A person's counted vote in a session from their standing thumbs, oldest first as
    (row id, vote, receipt id): the latest one's vote, on its turn. Pure."""
    if not live:
        return None
    _row, vote, receipt = max(live)
    return vote, receipt


class Verdicts:
    def __init__(self, ledger: Ledger, reactions: Reactions, is_admin: IsAdmin) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.reactions = reactions
        self.is_admin = is_admin

    async def handle(self, row_id: int, reaction: Reaction) -> Outcome:
        """Count one stored reaction; its row records what came of it."""
        outcome = await self._count(row_id, reaction)
        if outcome.state != "counted":
            self.reactions.set_state(row_id, outcome.state, outcome.reason)
            log.info("reaction %s in %s: %s", reaction.event_id, reaction.key, outcome.reason)
        return outcome

    async def _count(self, row_id: int, reaction: Reaction) -> Outcome:
        voter = self.ledger.keys.pseudonym("person", f"{reaction.platform}:{reaction.sender}")
        whose = reaction  # the person whose vote this is
        if reaction.undoes:  # a removal named by the reaction it undoes (Matrix redactions)
            original = self.reactions.undone(reaction.platform, reaction.room, reaction.undoes)
            if original is None or original.voter is None:
                return Outcome("ignored", "takes back a reaction that was not a counted vote")
            # The platform let it be taken away (its author, or a moderator): the vote it was
            # goes with it, and what stands is still its author's.
            voter, whose = original.voter, replace(reaction, sender=original.sender)
            session, receipt, vote = original.session_id, original.receipt_id, original.vote
            gone = [original.id]
        else:
            vote = reaction.vote
            if vote is None:
                return Outcome("ignored", f"{reaction.emoji!r} is not a thumbs up or down")
            shown = self.reactions.turn_of(reaction)
            if shown is None:
                return Outcome("ignored", "the message shows no agent turn")
            session, receipt = shown.session_id, shown.receipt_id
            gone = []
            if not reaction.added:
                gone = self._live_ids(session, voter, receipt, vote)
        assert session is not None and receipt is not None
        insider = await self.is_admin(whose)
        with self.store.write() as conn:
            conn.execute(
                update(ReactionRow)
                .where(ReactionRow.id == row_id)
                .values(
                    session_id=session,
                    voter=voter,
                    receipt_id=receipt,
                    vote=vote,
                    live=reaction.added and not reaction.undoes,
                    state="counted",
                )
            )
            if gone:
                conn.execute(update(ReactionRow).where(ReactionRow.id.in_(gone)).values(live=False))
            live = conn.execute(
                select(ReactionRow.id, ReactionRow.vote, ReactionRow.receipt_id).where(
                    ReactionRow.session_id == session,
                    ReactionRow.voter == voter,
                    ReactionRow.live.is_(True),
                )
            ).all()
            wanted = standing([(r.id, r.vote, r.receipt_id) for r in live])
            signed = self._sign(conn, session, voter, wanted, insider)
        return Outcome("counted", "", signed)

    def _live_ids(self, session: str, voter: str, receipt: str, vote: int) -> list[int]:
        """The standing reactions a removal takes back: this person's same thumbs on the
        same turn."""
        with self.store.session() as db:
            return list(
                db.scalars(
                    select(ReactionRow.id).where(
                        ReactionRow.session_id == session,
                        ReactionRow.voter == voter,
                        ReactionRow.receipt_id == receipt,
                        ReactionRow.vote == vote,
                        ReactionRow.live.is_(True),
                    )
                )
            )

    def _sign(
        self,
        conn: Connection,
        session: str,
        voter: str,
        wanted: tuple[int, str] | None,
        insider: bool,
    ) -> tuple[Event, ...]:
        """Bring the signed verdict of (session, voter) to `wanted`, in the caller's commit."""
        old = conn.execute(
            select(Vote.value, Vote.receipt_id, Vote.event_id).where(
                Vote.session_id == session, Vote.voter == voter
            )
        ).first()
        if old is not None and wanted is not None and (old.value, old.receipt_id) == wanted:
            return ()
        signer, stamp = self.ledger.signer, int(self.ledger.clock())
        signed: list[Event] = []
        old_event = None
        if old is not None:
            old_text = conn.execute(
                select(RecordEvent.event_json).where(RecordEvent.id == old.event_id)
            ).scalar()
            if old_text is not None:
                old_event = parse_event(json.loads(old_text))
                why = "vote changed" if wanted is not None else "vote withdrawn"
                signed.append(deletion_event(signer, old_event, why, stamp))
            conn.execute(delete(Vote).where(Vote.session_id == session, Vote.voter == voter))
        if wanted is not None:
            value, receipt = wanted
            turn = self._turn(conn, receipt)
            event = vote_event(
                signer,
                turn,
                voter=voter,
                value=value,
                insider=insider,
                replaces=old_event.id if old_event is not None else None,
                created_at=stamp,
            )
            signed.append(event)
            conn.execute(
                insert(Vote),
                {
                    "session_id": session,
                    "voter": voter,
                    "value": value,
                    "event_id": event.id,
                    "receipt_id": receipt,
                    "insider": insider,
                    "updated_at": now(),
                },
            )
        keep(conn, session, signed, self.ledger.default_relays)
        return tuple(signed)

    @staticmethod
    def _turn(conn: Connection, receipt_id: str) -> TurnRef:
        text = conn.execute(
            select(ReceiptRow.event_json).where(
                ReceiptRow.id == receipt_id, ReceiptRow.kind == kinds.AGENT_TURN
            )
        ).scalar()
        if text is None:
            raise LookupError(f"no agent turn {receipt_id[:12]}… in the store")
        return turn_ref(parse_event(json.loads(text)))


def keep(
    conn: Connection, session: str, events: list[Event], default_relays: tuple[str, ...]
) -> None:
    """Store events about a session (in the caller's commit) and queue them for its room's
    relays when the room publishes: verdicts and judgements travel where the receipts do."""
    for event in events:
        conn.execute(
            insert(RecordEvent),
            {
                "id": event.id,
                "kind": event.kind,
                "session_id": session,
                "subject": event.tag_value("e"),
                "event_json": event.to_json(),
                "created_at": now(),
            },
        )
    if not events:
        return
    settings = conn.execute(
        select(Room.settings).join(Session, Session.room_id == Room.id).where(Session.id == session)
    ).scalar()
    settings = settings or {}
    relays = tuple(settings.get("relays") or default_relays)
    if not settings.get("publish") or not relays:
        return
    stamp = now()
    conn.execute(
        insert(Publication),
        [
            {
                "event_id": event.id,
                "relay": relay,
                "state": "pending",
                "attempts": 0,
                "next_try_at": stamp,
                "updated_at": stamp,
            }
            for event in events
            for relay in relays
        ],
    )
