"""Review 2: the `[sandbox] running` ceiling on containers running at once.

Finding S1 — severity MEDIUM (resource exhaustion of the host, the ceiling's whole purpose).
Attack: `Sandboxes._make_room_for` checks `len(self._boxes) >= running` and returns, then
`_box` awaits `_create` in a thread (image check, volume, create, start: hundreds of ms)
before the new box is put in `_boxes`. Each room holds only its own lock, so first commands
arriving at once from several rooms all see the same count below the ceiling and all start a
container. With an open allow-list anyone can add the bot to many rooms and send one command
in each at the same moment.
What the attacker gets: as many running sandboxes (each with its memory/pids/CPU quota) as
rooms they fire at once, past the owner's `[sandbox] running`.
Smallest fix: reserve the slot before creating: hold one install-wide `asyncio.Lock` around
"make room + create + record in _boxes" (creation is rare; execs stay per room), or count
rooms being created (a `_starting` set) in the ceiling check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from runtime.sandbox import SandboxError

from .support import BrokerProcess


async def test_rooms_starting_at_once_cannot_pass_the_running_ceiling(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers(running="1")
    client = broker.client()
    rooms = [f"r{n}" for n in range(4)]
    results = await asyncio.gather(
        *(client.write_file(room, "x.txt", room.encode()) for room in rooms),
        return_exceptions=True,
    )
    unexpected = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, SandboxError) for r in unexpected), unexpected
    running = [c for c in broker.containers() if c.status == "running"]
    assert len(running) <= 1, (
        f"[sandbox] running = 1, yet {len(running)} containers run after four rooms' first "
        f"commands arrived at once: {sorted(c.labels.get('io.potluck.room') for c in running)}"
    )
