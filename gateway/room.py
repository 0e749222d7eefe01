"""A room's worker: its messages are handled one at a time, in the order they arrived, while
rooms run side by side. `/stop` does not wait in the queue: it cancels what is running.

A room holds what it needs between messages (its conversation: attached recipe, live
session, transcript, budget) and nothing of how a message is handled: the worker hands each
one, in order, to the handler it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from adapters.base import Incoming, Reaction

from .admission import Admission
from .exchange import SHUT_DOWN, STOPPED, Conversation
from .store.db import Store
from .store.rooms import ensure_room

log = logging.getLogger("potluck.room")


@dataclass(frozen=True)
class Work:
    """One stored message (or reaction) waiting for its turn in the room."""

    message_id: int  # the stored row's id: a message's, or a reaction's
    incoming: Incoming | Reaction
    admission: Admission


Handler = Callable[["Room", Work], Awaitable[None]]
Mark = Callable[[int, str], None]  # (row id, state): processing | handled | failed


@dataclass
class Room:
    room_id: int  # the store's
    platform: str
    platform_room: str
    conversation: Conversation | None = None
    running: asyncio.Task[Any] | None = None  # the exchange in progress, which /stop cancels
    draining: bool = False  # shutting down: finish the message in hand, take no other
    _queue: asyncio.Queue[tuple[Work, Handler, Mark]] = field(default_factory=asyncio.Queue)
    _worker: asyncio.Task[None] | None = None
    _busy: bool = False

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.platform_room}"

    @property
    def idle(self) -> bool:
        return self._queue.empty() and not self._busy

    def enqueue(self, work: Work, handle: Handler, mark: Mark) -> None:
        """Queue stored work; the worker starts on first use, hands each item to its
        `handle` in order, and records its state with its `mark` as it goes (messages and
        reactions keep their states in their own tables)."""
        self._queue.put_nowait((work, handle, mark))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"room {self.key}")

    async def _work(self) -> None:
        while not self.draining:
            work, handle, mark = await self._queue.get()
            self._busy = True
            mark(work.message_id, "processing")
            try:
                await handle(self, work)
                mark(work.message_id, "handled")
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad message must not stop the room
                log.exception("room %s: failed on message %s", self.key, work.message_id)
                mark(work.message_id, "failed")
            finally:
                self._busy = False

    async def run(self, exchange: Coroutine[Any, Any, Any]) -> Any:
        """Run an exchange as the room's cancellable task. A cancelled exchange (by `stop`)
        returns None here; cancelling the worker itself propagates."""
        self.running = asyncio.create_task(exchange)
        try:
            return await self.running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return None
        finally:
            self.running = None

    def stop(self, why: str = STOPPED) -> bool:
        """Cancel the running exchange (`why` reaches it); False when nothing was running."""
        if self.running is None or self.running.done():
            return False
        self.running.cancel(why)
        return True

    async def drain(self, grace_s: float) -> None:
        """Shutting down: the running exchange gets `grace_s` to finish, then is cut off in
        the open; what is still queued stays stored, answered after the next start."""
        self.draining = True
        if self.running is not None and not self.running.done():
            await asyncio.wait({self.running}, timeout=grace_s)
        self.stop(SHUT_DOWN)
        if self._worker is not None and self._busy:  # let it deliver the cut-off note
            await asyncio.wait({self._worker}, timeout=15.0)
        await self.close()

    async def close(self) -> None:
        for task in (self.running, self._worker):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._worker = None


class Rooms:
    """Every room the gateway has seen since it started, by platform:room."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._rooms: dict[str, Room] = {}

    def get(self, platform: str, platform_room: str, room_id: int | None = None) -> Room:
        key = f"{platform}:{platform_room}"
        if key not in self._rooms:
            if room_id is None:
                room_id = ensure_room(self.store, platform, platform_room)
            self._rooms[key] = Room(room_id, platform, platform_room)
        return self._rooms[key]

    def find(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def all(self) -> list[Room]:
        return list(self._rooms.values())
