"""Tables. Schema changes go through Alembic migrations in gateway/store/migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RecipeVersion(Base):
    """Every saved version, content-addressed. Never updated, never deleted."""

    __tablename__ = "recipe_versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    forked_from: Mapped[str | None] = mapped_column(String(64), index=True)
    document: Mapped[str] = mapped_column(Text)  # canonical JSON
    origin: Mapped[str] = mapped_column(String(16))  # bundled | local | import
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class RecipeHead(Base):
    """The current version of each named recipe in this install."""

    __tablename__ = "recipe_heads"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("recipe_versions.id"))
    origin: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (UniqueConstraint("platform", "platform_room_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    platform_room_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(255), default="")
    recipe_version_id: Mapped[str | None] = mapped_column(ForeignKey("recipe_versions.id"))
    settings: Mapped[dict] = mapped_column(JSON, default=dict)  # publish, relays, transparency
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Session(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), index=True)
    recipe_version_id: Mapped[str] = mapped_column(ForeignKey("recipe_versions.id"))
    status: Mapped[str] = mapped_column(String(16), default="live")  # live | ended | cut
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Message(Base):
    """Every incoming event is stored before it is acted on; the unique key stops doubles."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("room_id", "platform_event_id"),
        Index("ix_messages_room_created", "room_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"))
    platform_event_id: Mapped[str | None] = mapped_column(String(255))
    direction: Mapped[str] = mapped_column(String(4))  # in | out
    sender: Mapped[str] = mapped_column(String(255))  # agent name, or a person's display name
    sender_id: Mapped[str | None] = mapped_column(String(255))  # the platform's user id
    addressed: Mapped[bool | None] = mapped_column(Boolean)  # mentioned or replied to the bot
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="received")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Outbox(Base):
    """Every outgoing message, with its delivery state, so a restart resends or edits."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    platform_message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ReceiptRow(Base):
    """A signed Nostr event, stored exactly as signed (the JSON text is what verifies)."""

    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the event id
    session_id: Mapped[str | None] = mapped_column(String(36), index=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[int] = mapped_column(Integer)
    event_json: Mapped[str] = mapped_column(Text)
    # What the event commits to, and the salt that proves it: local only, never published.
    plaintext: Mapped[str | None] = mapped_column(Text)
    salt: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class RecipeEvent(Base):
    """A recipe version event or latest-version pointer (receipts format v2), stored exactly
    as signed: this install's own, and those fetched from relays (a fork's parent, a recipe
    a room runs), so receipts and forks can name the exact event they came from."""

    __tablename__ = "recipe_events"
    __table_args__ = (Index("ix_recipe_events_version_kind", "version_id", "kind"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the event id
    kind: Mapped[int] = mapped_column(Integer)
    pubkey: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[str] = mapped_column(String(64))  # the version, or the one pointed at
    name: Mapped[str] = mapped_column(String(64), index=True)
    signed_at: Mapped[int] = mapped_column(BigInteger)  # the event's created_at
    origin: Mapped[str] = mapped_column(String(16))  # signed | fetched
    relay: Mapped[str | None] = mapped_column(String(255))  # where a fetched one was found
    event_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Publication(Base):
    """Publish state of one event on one relay: sent until a relay says OK. The event is a
    receipt or a recipe event (hence no foreign key: it names a row in either table)."""

    __tablename__ = "publications"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    relay: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ok|rejected
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class AdapterCursor(Base):
    """Where each adapter got to (Matrix next_batch, Telegram update offset)."""

    __tablename__ = "adapter_cursors"
    adapter: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Spend(Base):
    """What each agent turn cost, and whose message it answered: budgets over periods."""

    __tablename__ = "spend"
    __table_args__ = (
        Index("ix_spend_room_created", "room_id", "created_at"),
        Index("ix_spend_user_created", "user", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    session_id: Mapped[str | None] = mapped_column(String(36))
    user: Mapped[str] = mapped_column(String(255))  # platform:user whose message it answered
    agent: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


# -- track records (issue 16): people's verdicts and the events that witness them -----------


class TurnMessage(Base):
    """Which signed agent turn a platform message shows (written as the turn is shown), so a
    reaction on that message can name the receipt it judges. A long turn split into several
    messages has one row per message."""

    __tablename__ = "turn_messages"
    __table_args__ = (
        UniqueConstraint("platform", "message_id", "room"),
        Index("ix_turn_messages_receipt", "receipt_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    room: Mapped[str] = mapped_column(String(255))  # the platform's room (thread, topic)
    message_id: Mapped[str] = mapped_column(String(255))
    receipt_id: Mapped[str] = mapped_column(String(64))  # the agent turn's event id
    session_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ReactionRow(Base):
    """A person's reaction on a platform, stored before it is acted on (the unique key stops
    doubles), with what came of it: counted, ignored (not a vote, not an agent turn) or
    refused, and why."""

    __tablename__ = "reactions"
    __table_args__ = (
        UniqueConstraint("platform", "room", "event_id"),
        Index("ix_reactions_session_voter", "session_id", "voter"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    platform: Mapped[str] = mapped_column(String(16))
    room: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(255))  # the platform message reacted to
    emoji: Mapped[str] = mapped_column(String(64))
    added: Mapped[bool] = mapped_column(Boolean)  # False: a reaction taken back
    undoes: Mapped[str | None] = mapped_column(String(255))  # the reaction event taken back
    vote: Mapped[int | None] = mapped_column(Integer)  # +1, -1; None: not a vote
    session_id: Mapped[str | None] = mapped_column(String(36))
    voter: Mapped[str | None] = mapped_column(String(64))  # the person's salted hash
    receipt_id: Mapped[str | None] = mapped_column(String(64))  # the agent turn judged
    live: Mapped[bool] = mapped_column(Boolean, default=False)  # still standing on the platform
    state: Mapped[str] = mapped_column(String(16), default="received")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Vote(Base):
    """The one counted vote of a person in a session, and the signed reaction event (NIP-25)
    that witnesses it; a changed vote replaces it, a removed one deletes it."""

    __tablename__ = "votes"
    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    voter: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(64))
    receipt_id: Mapped[str] = mapped_column(String(64))
    insider: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class RecordEvent(Base):
    """Events the track records rest on, beside the receipts: people's verdicts (NIP-25
    reactions and NIP-09 deletions, signed by the gateway as witness), a judge's labels
    (NIP-32) and published records (NIP-85 assertions), stored exactly as signed."""

    __tablename__ = "record_events"
    __table_args__ = (Index("ix_record_events_session_kind", "session_id", "kind"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the event id
    kind: Mapped[int] = mapped_column(Integer)
    session_id: Mapped[str | None] = mapped_column(String(36))
    subject: Mapped[str | None] = mapped_column(String(64))  # the event it is about
    event_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Schedule(Base):
    """A room's `/schedule`: plain columns, read back as text and rebuilt into the scheduler's
    memory at start. Never a pickled job: a store can come from a stranger's backup, and
    unpickling runs whatever the pickle names."""

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("room", "schedule_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room: Mapped[str] = mapped_column(String(255))  # "platform:room"
    schedule_id: Mapped[str] = mapped_column(String(16))
    when: Mapped[str] = mapped_column(String(64))  # as the person wrote it
    recipe: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text, default="")
    next_run: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
