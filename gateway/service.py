"""The running gateway: its parts, wired together, for every platform and room at once.

A message's way is a straight line through files named for what they do:
adapters/<platform> → intake.py (admission.py decides) → room.py (in order, per room) →
handlers/ (a command, or talk) → exchange.py (session, conductor, receipts/ledger.py signs)
→ outlet.py → outbox.py → the adapter. This module only builds that line and runs its
start and stop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.base import Adapter, Capabilities, Incoming, Reaction
from runtime.models.client import Models

from .admission import listed_admin
from .budgets import Budgets
from .config import Config
from .exchange import Exchange
from .handlers import Services, handle
from .intake import Intake
from .library import Library
from .outbox import Delivery
from .outlet import RoomOutlet
from .receipts.ledger import Ledger
from .records.verdicts import Verdicts
from .room import Room, Rooms, Work
from .store.db import Store
from .store.messages import Messages
from .store.reactions import Reactions
from .store.rooms import room_ids
from .watch import Watch

log = logging.getLogger("potluck.gateway")


class Gateway:
    def __init__(
        self,
        config: Config,
        store: Store,
        library: Library,
        ledger: Ledger,
        models: Models,
        sandboxes: Any = None,
        default_recipe: str = "solo",
    ) -> None:
        self.config = config
        self.store = store
        self.library = library
        self.ledger = ledger
        self.sandboxes = sandboxes
        self.watch = Watch()
        self.messages = Messages(store)
        self.budgets = Budgets(store, config.budgets, config.session_ceiling)
        self.exchange = Exchange(
            store, library, ledger, models, self.budgets, sandboxes, default_recipe
        )
        self.services = Services(config, library, self.exchange, ledger, self.budgets, sandboxes)
        self.rooms = Rooms(store)
        self.reactions = Reactions(store)
        self.verdicts = Verdicts(ledger, self.reactions, self.is_admin)
        self.intake = Intake(
            config,
            self.messages,
            self.rooms,
            self.watch,
            self._handle,
            self.reactions,
            self._react,
        )
        self.adapters: dict[str, Adapter] = {}
        self.deliveries: dict[str, Delivery] = {}
        self._closed = False

    @property
    def counters(self) -> dict[str, int]:
        """For /health and /metrics."""
        return {**self.intake.counters, "turns": self.exchange.turns}

    # -- platforms ---------------------------------------------------------------------------

    async def add_adapter(self, adapter: Adapter) -> None:
        """Connect a platform: finish what a crash interrupted there, then take its events."""
        self.adapters[adapter.name] = adapter
        self.deliveries[adapter.name] = Delivery(adapter, self.store, watch=self.watch)
        await adapter.connect()
        self.intake.capabilities[adapter.name] = adapter.capabilities  # after login (bot names)
        known = room_ids(self.store, adapter.name)
        await self.deliveries[adapter.name].recover(known)
        await self.intake.recover(adapter.name, known, self._notify)

        async def on_cursor(cursor: str, name: str = adapter.name) -> None:
            self.messages.save_cursor(name, cursor)

        await adapter.start(self.intake.receive, on_cursor, self.messages.cursor(adapter.name))

    def capabilities(self, platform: str) -> Capabilities:
        return self.intake.capabilities.get(platform, Capabilities())

    def outlet(self, room: Room) -> RoomOutlet:
        return RoomOutlet(
            self.deliveries[room.platform],
            self.capabilities(room.platform),
            room.room_id,
            room.platform_room,
            self.watch,
            self.reactions,
        )

    async def _notify(self, room: Room, text: str) -> None:
        await self.outlet(room).notice(text)

    async def is_admin(self, incoming: Incoming | Reaction) -> bool:
        """Admins by config, the machine's owner in local rooms, or the platform's own room
        admins; when the platform cannot say, no."""
        if listed_admin(self.config, incoming) or self.capabilities(incoming.platform).local_owner:
            return True
        adapter = self.adapters.get(incoming.platform)
        if adapter is None:
            return False
        try:
            return await adapter.is_admin(incoming.room, incoming.sender)
        except Exception as exc:  # refuse rather than guess
            log.warning("could not read admins of %s: %s", incoming.key, exc)
            return False

    async def _handle(self, room: Room, work: Work) -> None:
        """The room worker's step for one message (see gateway/handlers)."""
        outlet = self.outlet(room)
        try:
            await handle(
                self.services,
                room,
                work,
                outlet,
                self.capabilities(room.platform),
                lambda: self.is_admin(work.incoming),
            )
        except Exception as exc:
            await outlet.notice(f"something went wrong: {exc}")
            raise

    async def _react(self, room: Room, work: Work) -> None:
        """The room worker's step for one reaction: counted as a verdict, or kept and said
        why not (gateway/records/verdicts.py)."""
        assert isinstance(work.incoming, Reaction)
        await self.verdicts.handle(work.message_id, work.incoming)

    # -- stopping ----------------------------------------------------------------------------

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """SIGTERM: take no new work, give running exchanges `grace_s` to finish, cut off the
        rest in the open, then close. Whatever is still queued stays stored and is answered
        after the next start; nothing is dropped."""
        self.intake.draining = True
        busy = [room for room in self.rooms.all() if room.running is not None]
        if busy:
            log.info("shutdown: waiting up to %.0fs for %d exchanges", grace_s, len(busy))
        await asyncio.gather(*(room.drain(grace_s) for room in self.rooms.all()))
        await self.close()

    async def close(self) -> None:
        """Stop every room and platform; the sandbox client is closed once, here. The store
        belongs to whoever opened it."""
        if self._closed:
            return
        self._closed = True
        for room in self.rooms.all():
            await room.close()
        for adapter in self.adapters.values():
            await adapter.stop()
        if self.sandboxes is not None:
            await self.sandboxes.close()
