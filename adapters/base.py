"""The adapter contract: what a chat platform gives the gateway, and what it takes back.

Adapters know nothing of recipes or models; the gateway knows nothing of platforms beyond
these types. A platform turns its events into `Incoming` and delivers `Outgoing`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Attachment:
    name: str
    mime: str
    data: bytes


@dataclass(frozen=True)
class Incoming:
    platform: str
    room: str  # the platform's room id (a thread or topic counts as a room)
    sender: str  # the platform's user id
    sender_name: str
    text: str
    event_id: str  # unique within the room: the key that stops doubles
    mentions_bot: bool = False
    reply_to: str | None = None  # platform id of the message replied to
    reply_to_bot: bool = False
    attachments: tuple[Attachment, ...] = ()
    cursor: str | None = None  # the adapter's position once this event is handled
    parent: str | None = None  # a thread's or topic's own room: an allowed room covers them

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.room}"


@dataclass(frozen=True)
class Outgoing:
    room: str
    text: str
    agent: str | None = None  # label shown for an agent's message; None for the gateway
    reply_to: str | None = None
    notice: bool = False  # gateway notices (help, errors) rather than conversation
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    # Buttons where the platform has them: (label, the command a press sends). Platforms
    # without buttons show the text alone, which always names the commands too.
    choices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a platform can do, declared once by its adapter, so the gateway never probes
    attributes or names platforms to decide how to talk there."""

    edit_interval_s: float = 1.0  # the fastest this platform tolerates edits of one message
    max_chars: int = 4000  # the longest message the platform accepts
    files: bool = False  # documents both ways (recipes as files, /recipe import)
    max_file_bytes: int = 0
    buttons: bool = False  # choices shown as buttons; otherwise the text names the commands
    threads: bool = False  # threads or topics are rooms of their own (see parent_room)
    help_note: str = ""  # added to /help: what a person must know about this platform
    receipt_badge: bool = False  # shows each message's signed receipt (the web room)
    local_owner: bool = False  # the person at this machine owns the gateway: allowed, admin
    bot_names: tuple[str, ...] = ()  # the bot's own names, for /command@name (lower case)


class RateLimited(Exception):
    """The platform asked us to wait; the outbox retries after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.1f}s")
        self.retry_after = retry_after


OnIncoming = Callable[[Incoming], Awaitable[None]]
OnCursor = Callable[[str], Awaitable[None]]


class Adapter(Protocol):
    name: str
    capabilities: Capabilities

    async def connect(self) -> None:
        """Log in, so messages can be sent (the gateway recovers its outbox next)."""

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        """Connect and deliver events after `cursor`; report the new cursor once every
        event before it has been handed to on_incoming. Returns once running."""

    async def stop(self) -> None: ...

    async def send(self, message: Outgoing) -> str:
        """Deliver; returns the platform's message id."""

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None: ...

    async def is_admin(self, room: str, user: str) -> bool:
        """Whether the platform itself makes this user an admin of the room."""
