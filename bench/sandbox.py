"""Sandbox costs as ratios to plain Docker on the same engine and image, in one run.

- cold start: first command in a new room (hardened container, capped workspace) vs
  `docker run` of the same image plus one `docker exec`;
- warm exec: a command in a warm room vs a bare `docker exec` in a plain container;
- 20 rooms at once: the first command in 20 new rooms concurrently vs 20 plain runs.
Goal: <= 1.2x. Usage: .venv/bin/python bench/sandbox.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from runtime.sandbox import DEFAULT_IMAGE, Sandboxes

CLIENT = docker.from_env(timeout=120)
LABEL = {"io.potluck.bench": "1"}


def raw_cold() -> float:
    start = time.perf_counter()
    container = CLIENT.containers.run(DEFAULT_IMAGE, detach=True, labels=LABEL)
    container.exec_run(["true"])
    elapsed = time.perf_counter() - start
    container.remove(force=True)
    return elapsed


def raw_warm(container, rounds: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        container.exec_run(["bash", "-c", "true"])
    return (time.perf_counter() - start) / rounds


async def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as state:
        boxes = Sandboxes(Path(state), install="bench" + uuid.uuid4().hex[:6], client=CLIENT)
        try:
            raw_cold()  # warm the engine's caches
            cold_raw = statistics.median(raw_cold() for _ in range(rounds))
            colds = []
            for n in range(rounds):
                start = time.perf_counter()
                await boxes.exec(f"cold-{n}", "true")
                colds.append(time.perf_counter() - start)
            cold_ours = statistics.median(colds)

            plain = CLIENT.containers.run(DEFAULT_IMAGE, detach=True, labels=LABEL)
            warm_raw = raw_warm(plain, rounds * 10)
            plain.remove(force=True)
            start = time.perf_counter()
            for _ in range(rounds * 10):
                await boxes.exec("cold-0", "true")
            warm_ours = (time.perf_counter() - start) / (rounds * 10)

            start = time.perf_counter()
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda _: raw_cold(), range(20)))
            many_raw = time.perf_counter() - start
            start = time.perf_counter()
            await asyncio.gather(*(boxes.exec(f"many-{n}", "true") for n in range(20)))
            many_ours = time.perf_counter() - start
        finally:
            rooms = [c.labels.get("io.potluck.room") for c in boxes.ours()]
            for room in rooms:
                await boxes.reset(room)
            await boxes.close()
            for c in CLIENT.containers.list(all=True, filters={"label": "io.potluck.bench=1"}):
                c.remove(force=True)
    print(f"cold start, plain docker run + exec (baseline): {cold_raw * 1e3:7.0f} ms")
    print(
        f"cold start, hardened room sandbox:   {cold_ours * 1e3:7.0f} ms  "
        f"ratio {cold_ours / cold_raw:.2f}x"
    )
    print(f"warm exec, plain docker exec (baseline):        {warm_raw * 1e3:7.1f} ms")
    print(
        f"warm exec, room sandbox (timeout+sweep+oom):    {warm_ours * 1e3:7.1f} ms  "
        f"ratio {warm_ours / warm_raw:.2f}x"
    )
    print(f"20 rooms at once, plain (baseline):  {many_raw:7.2f} s")
    print(
        f"20 rooms at once, hardened:          {many_ours:7.2f} s  "
        f"ratio {many_ours / many_raw:.2f}x"
    )
    print("goal: <= 1.2x")


if __name__ == "__main__":
    asyncio.run(main())
