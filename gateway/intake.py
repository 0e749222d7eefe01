"""Where a message enters the gateway, from any platform or from the scheduler.

Each event is judged (gateway/admission.py), then stored before anything acts on it: the
unique (room, event id) key makes a redelivered event a no-op, and a crash loses nothing.
Then it is queued in its room (gateway/room.py), except `/stop`, which acts at once. A
reaction takes the same way into its own store (gateway/store/reactions.py) and its room's
queue, behind the exchange whose turn it may judge. After a restart, `recover` hands back
what was stored but never handled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from adapters.base import Capabilities, Incoming, Reaction

from .admission import (
    NOTICE_EVENT,
    SCHEDULE_EVENT,
    SCHEDULER,
    Admission,
    admit,
    admit_reaction,
    classify,
)
from .config import Config
from .room import Handler, Room, Rooms, Work
from .store.messages import Messages
from .store.reactions import Reactions
from .watch import Watch

log = logging.getLogger("potluck.intake")
Notify = Callable[[Room, str], Awaitable[None]]


class Intake:
    def __init__(
        self,
        config: Config,
        messages: Messages,
        rooms: Rooms,
        watch: Watch,
        handle: Handler,
        reactions: Reactions | None = None,
        react: Handler | None = None,
    ) -> None:
        self.config = config
        self.messages = messages
        self.rooms = rooms
        self.watch = watch
        self.handle = handle
        self.reactions = reactions  # where reactions are stored, and `react` counts them
        self.react = react
        self.capabilities: dict[str, Capabilities] = {}  # of each connected platform
        self.draining = False  # shutting down: store what arrives, answer it after restart
        self.counters = {"incoming": 0, "refused": 0, "commands": 0, "reactions": 0}

    async def receive(self, incoming: Incoming | Reaction) -> None:
        """An adapter's (or the scheduler's) event."""
        capabilities = self.capabilities.get(incoming.platform)
        if capabilities is None:
            log.warning("event from %s, which is not connected: ignored", incoming.platform)
            return
        if isinstance(incoming, Reaction):
            await self._reaction(incoming, capabilities)
            return
        admission = admit(self.config, capabilities, incoming)
        if admission.kind == "ignore":
            self.counters["refused"] += 1
            log.info("ignored %s from %s: %s", incoming.key, incoming.sender, admission.why)
            return
        room = self.rooms.get(incoming.platform, incoming.room)
        message_id = self.messages.record_incoming(
            room.room_id, incoming, addressed=admission.addressed
        )
        if message_id is None:
            return  # seen before: redelivered after a restart
        self.counters["incoming"] += 1
        self.counters["commands"] += admission.kind in ("command", "stop")
        if admission.kind != "scheduled":
            self.watch.publish(
                incoming.key,
                {
                    "type": "message",
                    "id": incoming.event_id,
                    "who": incoming.sender_name,
                    "role": "person",
                    "text": incoming.text,
                },
            )
        work = Work(message_id, incoming, admission)
        if admission.kind == "stop":  # not queued behind the exchange it stops
            self.messages.set_state(message_id, "handled")
            await self.handle(room, work)
            return
        if self.draining:
            return  # stored as received: answered after the restart
        room.enqueue(work, self.handle, self.messages.set_state)

    async def _reaction(self, reaction: Reaction, capabilities: Capabilities) -> None:
        admission = admit_reaction(self.config, capabilities, reaction)
        if admission.kind == "ignore" or self.reactions is None or self.react is None:
            self.counters["refused"] += 1
            log.info(
                "ignored a reaction in %s from %s: %s",
                reaction.key,
                reaction.sender,
                admission.why or "no verdicts here",
            )
            return
        room = self.rooms.get(reaction.platform, reaction.room)
        row_id = self.reactions.record(room.room_id, reaction)
        if row_id is None or self.draining:
            return  # seen before; or stored, and counted after the restart
        self.counters["reactions"] += 1
        room.enqueue(Work(row_id, reaction, admission), self.react, self.reactions.mark)

    async def recover(self, platform: str, rooms: dict[int, str], notify: Notify) -> None:
        """After a crash: what was being answered is cut off in the open (`notify`), what
        was stored but not yet handled is queued again, in order."""
        for message in self.messages.unfinished(list(rooms)):
            room = self.rooms.get(platform, rooms[message.room_id], message.room_id)
            if message.state == "processing":
                self.messages.set_state(message.id, "cut")
                await notify(
                    room,
                    f"(the answer to {message.sender}'s message was cut "
                    "off by a restart; send it again to continue)",
                )
                continue
            incoming = Incoming(
                platform,
                room.platform_room,
                message.sender_id or "",
                message.sender,
                message.text,
                message.platform_event_id or "",
                mentions_bot=message.addressed is not False,  # unknown (before 0003): answer
            )
            admission = classify(self.capabilities[platform], incoming)  # allowed when stored
            room.enqueue(
                Work(message.id, incoming, admission), self.handle, self.messages.set_state
            )
        if self.reactions is None or self.react is None:
            return
        for row in self.reactions.unfinished(list(rooms)):  # allowed when stored
            room = self.rooms.get(platform, rooms[row.room_id], row.room_id)
            reaction = Reaction(
                platform,
                row.room,
                row.sender,
                row.sender,
                row.target,
                row.emoji,
                row.event_id,
                added=row.added,
                undoes=row.undoes,
                whole_chat=True,  # not kept; looking in the chat's threads too is safe
            )
            room.enqueue(
                Work(row.id, reaction, Admission("reaction")), self.react, self.reactions.mark
            )

    # -- the scheduler's events -----------------------------------------------------------------

    async def scheduled(
        self, room_key: str, recipe: str, text: str, schedule_id: str, fired_at: datetime
    ) -> None:
        """A schedule fired: its run is queued in the room like a message, keyed by the fire
        time, so it is made once even if the gateway restarts around it."""
        event = f"{SCHEDULE_EVENT}{schedule_id}:{recipe}:{fired_at:%Y%m%dT%H%M}"
        await self._from_scheduler(room_key, text, event)

    async def missed(
        self, room_key: str, when: str, recipe: str, next_run: datetime | None, schedule_id: str
    ) -> None:
        """A run missed while the gateway was down: the room is told, once."""
        after = f"; next run {next_run:%Y-%m-%d %H:%M %Z}" if next_run else ""
        text = f"(missed the scheduled run of {recipe} ({when}) while the gateway was down{after})"
        stamp = f"{next_run:%Y%m%dT%H%M}" if next_run else "never"
        await self.notice(room_key, text, f"missed:{schedule_id}:{stamp}")

    async def notice(self, room_key: str, text: str, key: str) -> None:
        """The gateway tells a room something of its own accord (stored like a message, so
        the room hears it once per `key`, across restarts)."""
        await self._from_scheduler(room_key, text, f"{NOTICE_EVENT}{key}"[:255])

    async def _from_scheduler(self, room_key: str, text: str, event: str) -> None:
        platform, _, platform_room = room_key.partition(":")
        if platform not in self.capabilities:
            log.warning("schedule for %s: %s is not connected; skipped", room_key, platform)
            return
        await self.receive(
            Incoming(platform, platform_room, SCHEDULER, "schedule", text, event, mentions_bot=True)
        )
