"""What a room hears from the gateway: notices, agents' turns streamed as they are written,
and each message's signed receipt. The exchange and the command handlers talk to an outlet;
the outlet talks to the platform (through the outbox) and to spectators (the watch hub).
Nothing here reaches back into the gateway.
"""

from __future__ import annotations

from typing import Protocol

from adapters.base import Attachment, Capabilities, Outgoing
from runtime.conductor import Turn
from runtime.tools import ToolOutcome

from .outbox import Delivery, Stream
from .receipts.nostr import Event
from .store.reactions import Reactions
from .watch import Watch


class Outlet(Protocol):
    async def notice(
        self,
        text: str,
        *,
        reply_to: str | None = None,
        choices: tuple[tuple[str, str], ...] = (),
        attachments: tuple[Attachment, ...] = (),
    ) -> None: ...

    async def turn_started(self, agent: str) -> None: ...

    async def turn_text(self, agent: str, text: str) -> None: ...

    async def turn_finished(self, agent: str, text: str, turn: Turn, receipt: Event | None) -> None:
        """The turn's final text as the room shows it, the turn itself, and its receipt
        (None when nothing was recorded)."""

    async def tool_result(self, agent: str, outcome: ToolOutcome) -> None: ...

    async def cut(self, reason: str) -> None:
        """The turn in progress was cut off (stopped, shut down)."""

    async def badge(self, message_id: str | None, receipt: Event) -> None:
        """The signed receipt of a message already in the room (a person's)."""


class RoomOutlet:
    """A chat room's outlet: messages through the outbox, receipts to the watch hub (where
    the web room and spectators show them)."""

    def __init__(
        self,
        delivery: Delivery,
        capabilities: Capabilities,
        room_id: int,
        platform_room: str,
        watch: Watch,
        reactions: Reactions | None = None,
    ) -> None:
        self.delivery = delivery
        self.reactions = reactions  # where it notes which turn each message shows
        self.capabilities = capabilities
        self.room_id = room_id
        self.platform_room = platform_room
        self.watch = watch
        self._stream: Stream | None = None

    async def notice(
        self,
        text: str,
        *,
        reply_to: str | None = None,
        choices: tuple[tuple[str, str], ...] = (),
        attachments: tuple[Attachment, ...] = (),
    ) -> None:
        message = Outgoing(self.platform_room, text, None, reply_to, True, attachments, choices)
        await self.delivery.send(self.room_id, message)

    async def turn_started(self, agent: str) -> None:
        self._stream = Stream(
            self.delivery,
            self.room_id,
            self.platform_room,
            agent,
            self.capabilities.edit_interval_s,
        )
        await self._stream.open()

    async def turn_text(self, agent: str, text: str) -> None:
        if self._stream is not None:
            await self._stream.update(text)

    async def turn_finished(self, agent: str, text: str, turn: Turn, receipt: Event | None) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        await stream.finish(text, turn.model if turn.finish != "error" else None)
        if receipt is not None:
            await self.badge(stream.message_id, receipt)
            if self.reactions is not None and stream.message_id:  # so 👍/👎 can name it
                self.reactions.shown(
                    self.delivery.adapter.name,
                    self.platform_room,
                    [stream.message_id, *stream.more_ids],
                    receipt.id,
                    receipt.tag_value("session") or "",
                )

    async def tool_result(self, agent: str, outcome: ToolOutcome) -> None:
        """Rooms see what the agent makes of its tools' results, not the raw output."""

    async def cut(self, reason: str) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.cut(reason)

    async def badge(self, message_id: str | None, receipt: Event) -> None:
        if message_id:
            key = f"{self.delivery.adapter.name}:{self.platform_room}"
            self.watch.publish(
                key, {"type": "receipt", "id": message_id, "event": receipt.to_dict()}
            )
