"""Gateway overhead per exchange with a zero-latency model, and exchanges/s across 100 rooms.

An exchange is a person's message in, stored, signed, run through the conductor, streamed
out (send + final edit through the outbox), the agent's turn stored and signed. The
baseline is the same conductor turn alone, measured in this run; the difference is what the
gateway adds. Goals: overhead p50 <= 5 ms; >= 300 exchanges/s on 2 cores.
Usage: .venv/bin/python bench/gateway.py [EXCHANGES]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.base import Capabilities, Incoming, Outgoing
from gateway.config import load_config
from gateway.library import Library
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.service import Gateway
from gateway.store.db import Store
from runtime.conductor import Conductor
from runtime.context import Line
from runtime.models.client import Models
from runtime.recipes import validate_data
from tests.support import MemoryPlatform

RECIPE = {
    "potluck": 1,
    "name": "instant",
    "title": "Instant",
    "agents": [{"name": "a", "model": "scripted/instant", "persona": "You answer."}],
    "protocol": {"max_rounds": 1, "max_turns": 1, "loop_guard": False},
    "trigger": "every_message",
    "limits": {"max_tokens": 10_000_000},
}


class BenchPlatform(MemoryPlatform):
    """The tests' in-memory platform (tests/support.py), telling when each room's turn has
    its final text."""

    name = "bench"
    capabilities = Capabilities(edit_interval_s=1.0, max_chars=4000)

    def __init__(self) -> None:
        super().__init__()
        self.done: dict[str, asyncio.Event] = {}

    async def send(self, message: Outgoing) -> str:
        self.sent.append(message)
        return f"m{len(self.sent)}"

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        if message.text != "…" and room in self.done:
            self.done[room].set()


async def bare_turn(transcript: list[Line]) -> float:
    """The same turn with no gateway: the same recipe on the same transcript."""
    lines = [*transcript, Line("alice", "person", "hi")]
    start = time.perf_counter()
    await Conductor(validate_data(RECIPE), Models()).respond(lines)
    return time.perf_counter() - start


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as home:
        config = load_config(
            env={
                "POTLUCK_HOME": home,
                "POTLUCK_ALLOWED_ROOMS": "*",
                "POTLUCK_DEFAULT_RECIPE": "instant",
            }
        )
        store = Store(config.database_url)
        library = Library(store)
        library.save(validate_data(RECIPE))
        gateway = Gateway(
            config,
            store,
            library,
            Ledger(store, KeyPair.generate()),
            Models(),
            default_recipe="instant",
        )
        adapter = BenchPlatform()
        await gateway.add_adapter(adapter)
        counter = 0

        async def exchange(room: str) -> float:
            nonlocal counter
            counter += 1
            adapter.done[room] = asyncio.Event()
            start = time.perf_counter()
            await adapter.on_incoming(Incoming("bench", room, "u1", "alice", "hi", f"e{counter}"))
            await adapter.done[room].wait()
            return time.perf_counter() - start

        await exchange("warm")
        # Interleaved, so both see the same machine: litellm's background threads and the
        # host's noise otherwise swing a separate baseline by several milliseconds.
        bare, one_room = [], []
        for _ in range(n):
            room = gateway.rooms.find("bench:one")
            history = room.conversation.transcript if room and room.conversation else []
            bare.append(await bare_turn(history))
            one_room.append(await exchange("one"))
        recipe, models = validate_data(RECIPE), Models()
        start = time.perf_counter()
        await asyncio.gather(
            *(Conductor(recipe, models).respond([Line("alice", "person", "hi")]) for _ in range(n))
        )
        ceiling = n / (time.perf_counter() - start)
        rooms = [f"r{i}" for i in range(100)]
        for room in rooms:
            await exchange(room)  # every room has its session
        start = time.perf_counter()
        per_room = max(1, n // 100)
        for _ in range(per_room):
            await asyncio.gather(*(exchange(room) for room in rooms))
        rate = per_room * len(rooms) / (time.perf_counter() - start)
        await gateway.close()
        store.close()

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[p - 1] * 1e3

    print(f"bare conductor turn (baseline):  p50 {q(bare, 50):6.2f} ms  p99 {q(bare, 99):6.2f} ms")
    print(
        f"gateway exchange, one room:      p50 {q(one_room, 50):6.2f} ms  "
        f"p99 {q(one_room, 99):6.2f} ms  ratio {q(one_room, 50) / q(bare, 50):.2f}x"
    )
    paired = [g - b for g, b in zip(one_room, bare, strict=True)]
    print(
        f"gateway overhead per exchange:   p50 {q(paired, 50):6.2f} ms "
        f"(paired differences; p99 {q(paired, 99):6.2f} ms; goal p50 <= 5 ms)"
    )
    print(f"100 rooms at once: {rate:7.0f} exchanges/s (goal >= 300/s)")
    print(
        f"ceiling: the same turns with no gateway, {n} at once: {ceiling:7.0f} turns/s "
        f"(gateway reaches {rate / ceiling:.2f}x of it)"
    )


if __name__ == "__main__":
    asyncio.run(main())
