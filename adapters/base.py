"""The adapter contract: what a chat platform gives the gateway, and what it takes back.

Adapters know nothing of recipes or models; the gateway knows nothing of platforms beyond
these types. A platform turns its events into `Incoming` (messages) and `Reaction`
(a person's emoji on a message, or taking it back), both through `on_incoming`, and
delivers `Outgoing`.
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
class Reaction:
    """A person reacted to a message (or took a reaction back), as the platform says it.

    `target` is the reacted message's id in the form `send` returned it. A platform that
    tells only which chat a reaction is in, not which thread or topic (Telegram, Matrix),
    sets `whole_chat`: the message is then looked for in the chat's threads too. A removal
    the platform names only by the reaction it undoes (a Matrix redaction) carries `undoes`
    and leaves `target` and `emoji` empty."""

    platform: str
    room: str
    sender: str  # the platform's user id
    sender_name: str
    target: str
    emoji: str
    event_id: str  # unique within the room: the key that stops doubles
    added: bool = True  # False: the person took this reaction back
    undoes: str | None = None  # the event id of the reaction taken back
    whole_chat: bool = False
    parent: str | None = None  # a thread's or topic's own room: an allowed room covers them
    cursor: str | None = None

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.room}"

    @property
    def vote(self) -> int | None:
        """+1 for a thumbs up, -1 for a thumbs down, None for any other reaction."""
        return vote_of(self.emoji)


# Thumbs as platforms write them: the emoji (any skin tone, with or without the emoji
# variation selector), Discord's and Slack-style names, and plain +1/-1.
_UP = {"👍", "+1", ":+1:", ":thumbsup:", "thumbsup", "+", "like"}
_DOWN = {"👎", "-1", ":-1:", ":thumbsdown:", "thumbsdown", "-", "dislike"}
_MODIFIERS = dict.fromkeys(
    map(ord, "\ufe0f\ufe0e\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")
)


def vote_of(emoji: str) -> int | None:
    bare = emoji.translate(_MODIFIERS).strip().lower()
    if bare in _UP:
        return 1
    if bare in _DOWN:
        return -1
    return None


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


OnIncoming = Callable[[Incoming | Reaction], Awaitable[None]]
OnCursor = Callable[[str], Awaitable[None]]


class Adapter(Protocol):
    name: str
    capabilities: Capabilities

    async def connect(self) -> None:
        """Log in, so messages can be sent (the gateway recovers its outbox next)."""

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        """Connect and deliver events (messages and reactions) after `cursor`; report the
        new cursor once every event before it has been handed to on_incoming. Returns once
        running."""

    async def stop(self) -> None: ...

    async def send(self, message: Outgoing) -> str:
        """Deliver; returns the platform's message id."""

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None: ...

    async def is_admin(self, room: str, user: str) -> bool:
        """Whether the platform itself makes this user an admin of the room."""
