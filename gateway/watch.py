"""Spectators: a read-only live view of any room, whatever platform it is on.

The gateway publishes what a room sees (people's messages as they arrive, agents' turns as
they are streamed to the platform, notices) and each spectator gets its own queue, primed
with the room's recent lines. Nothing here can write to a room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from typing import Any

RECENT = 200
QUEUE = 1000  # a spectator this far behind is dropped rather than slowing the room
ROOMS = 500  # rooms remembered; the one quiet the longest (and unwatched) is forgotten first


class Watch:
    def __init__(self) -> None:
        self._recent: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._index: dict[tuple[str, str], dict[str, Any]] = {}  # (room, line id)
        self._spectators: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}

    def publish(self, room: str, line: dict[str, Any]) -> None:
        """`line` is {"type": "message", "id", "who", "role", "text"[, "choices"]},
        {"type": "edit", "id", "text"[, "model"]} or {"type": "receipt", "id", "event"};
        `room` is the platform:room key and `id` the platform's message id."""
        recent = self._recent.setdefault(room, deque(maxlen=RECENT))
        self._recent.move_to_end(room)
        if len(self._recent) > ROOMS:
            self._forget_one()
        if line["type"] in ("edit", "receipt"):
            shown = self._index.get((room, line["id"]))
            if shown is not None:  # a late joiner gets the line as it is now
                if line["type"] == "edit":
                    shown["text"] = line["text"]
                    if "model" in line:  # which model answered, once the turn is done
                        shown["model"] = line["model"]
                else:
                    shown["receipt"] = line["event"]
        else:
            if len(recent) == recent.maxlen:
                self._index.pop((room, recent[0]["id"]), None)
            line = dict(line)
            recent.append(line)
            self._index[(room, line["id"])] = line
        for queue in list(self._spectators.get(room, ())):
            try:
                queue.put_nowait(dict(line))
            except asyncio.QueueFull:
                self._spectators[room].discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)  # told to go: it fell too far behind

    def _forget_one(self) -> None:
        """Bound memory whatever the number of rooms (an allow-list like `telegram:*` lets
        anyone add the bot to rooms): drop the quietest room nobody is watching."""
        for room in self._recent:
            if not self._spectators.get(room):
                for line in self._recent.pop(room):
                    self._index.pop((room, line["id"]), None)
                self._spectators.pop(room, None)
                return

    def rooms(self) -> list[str]:
        return sorted(self._recent)

    def subscribe(self, room: str) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE + RECENT)
        for line in self._recent.get(room, ()):
            queue.put_nowait(dict(line))
        self._spectators.setdefault(room, set()).add(queue)
        return queue

    def unsubscribe(self, room: str, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._spectators.get(room, set()).discard(queue)
