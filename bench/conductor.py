"""Conductor overhead per turn with a zero-latency model, against the bare litellm call.

The baseline is litellm streaming the same scripted model directly; the difference is what
the conductor adds (context building, token counting, limits, listener calls).
Usage: .venv/bin/python bench/conductor.py [TURNS]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.conductor import Conductor
from runtime.context import Line
from runtime.models.client import Models, _litellm
from runtime.recipes import validate_data


async def bare(turns: int) -> float:
    litellm = _litellm()  # imported on first use, as the runtime does
    messages = [{"role": "user", "content": "hello"}]
    start = time.perf_counter()
    for _ in range(turns):
        response = await litellm.acompletion(
            model="scripted/instant", messages=messages, stream=True
        )
        async for _chunk in response:
            pass
    return (time.perf_counter() - start) / turns


async def conducted(turns: int) -> float:
    recipe = validate_data(
        {
            "potluck": 1,
            "name": "bench",
            "title": "Bench",
            "agents": [
                {"name": n, "model": "scripted/instant", "persona": f"You are {n}."}
                for n in ("a", "b", "c")
            ],
            "protocol": {"max_rounds": 50, "max_turns": 200, "loop_guard": False},
            "limits": {"max_tokens": 10_000_000},
        }
    )
    done = 0
    start = time.perf_counter()
    while done < turns:
        conductor = Conductor(recipe, Models())
        outcome = await conductor.respond([Line("alice", "person", "hello")])
        done += len(outcome.turns)
    return (time.perf_counter() - start) / done


async def main() -> None:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    await bare(10)
    base = await bare(turns)
    ours = await conducted(turns)
    print(f"bare litellm streaming call (baseline): {base * 1e3:7.2f} ms per call")
    print(
        f"conductor turn:                         {ours * 1e3:7.2f} ms per turn"
        f"  ratio {ours / base:.2f}x, overhead {(ours - base) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
