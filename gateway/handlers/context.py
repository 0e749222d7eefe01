"""What a command handler is given: the room, the message, where to answer, and the parts
of the gateway it may use. Handlers answer through the outlet; they never call back into
whoever dispatched them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from adapters.base import Attachment, Capabilities, Incoming

from ..budgets import Budgets
from ..commands import Command
from ..config import Config
from ..exchange import Conversation, Exchange
from ..library import Library
from ..outlet import Outlet
from ..receipts.ledger import Ledger
from ..room import Room


@dataclass
class Services:
    """The gateway's parts that commands use."""

    config: Config
    library: Library
    exchange: Exchange
    ledger: Ledger
    budgets: Budgets
    sandboxes: Any = None  # the sandbox broker's client, or None without an engine
    schedules: Any = None  # set once `potluck serve` runs its scheduler


def conversation_of(services: Services, room: Room) -> Conversation:
    """The room's conversation, continued or opened on its attached recipe (kept on the room
    between messages)."""
    if room.conversation is None:
        room.conversation = services.exchange.current(room.room_id)
    return room.conversation


@dataclass
class Request:
    services: Services
    room: Room
    incoming: Incoming
    command: Command
    outlet: Outlet
    capabilities: Capabilities
    is_admin: Callable[[], Awaitable[bool]]

    @property
    def args(self) -> tuple[str, ...]:
        return self.command.args

    def conversation(self) -> Conversation:
        return conversation_of(self.services, self.room)

    async def say(
        self,
        text: str,
        *,
        choices: tuple[tuple[str, str], ...] = (),
        attachments: tuple[Attachment, ...] = (),
    ) -> None:
        """Answer in the room, as a reply to the command."""
        await self.outlet.notice(
            text, reply_to=self.incoming.event_id, choices=choices, attachments=attachments
        )


Handler = Callable[[Request], Awaitable[None]]
