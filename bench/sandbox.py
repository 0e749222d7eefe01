"""Sandbox costs as ratios to plain Docker on the same engine and image, in one run.

- cold start: first command in a new room through the broker (hardened container, capped
  workspace) vs `docker run` of the same image plus one `docker exec`;
- warm exec: a command in a warm room vs a bare `docker exec` in a plain container, both
  through the broker (what the gateway pays) and in-process on the engine side (what the
  engine-sourced results cost: the process-list check, the event follow-up), so the
  broker's own hop shows as the difference;
- 20 rooms at once: the first command in 20 new rooms concurrently vs 20 plain runs.
Goal: <= 1.2x. Usage: .venv/bin/python bench/sandbox.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from runtime.sandbox import DEFAULT_IMAGE, Ceilings  # noqa: E402
from runtime.sandbox.client import BrokerClient  # noqa: E402
from runtime.sandbox.containers import Sandboxes  # noqa: E402

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


async def warm(boxes, room: str, rounds: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        await boxes.exec(room, "true")
    return (time.perf_counter() - start) / rounds


def start_broker(home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "POTLUCK_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env["POTLUCK_SANDBOX_RUNNING"] = "32"  # the burst of 20 rooms compares like for like
    path = home / "broker.sock"
    argv = [sys.executable, "-m", "gateway", "sandbox", "broker", "--socket", str(path)]
    process = subprocess.Popen(
        [*argv, "--mode", "600"], env=env, stderr=(home / "broker.log").open("wb")
    )
    deadline = time.monotonic() + 60
    while True:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return process
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((home / "broker.log").read_text()[-2000:]) from None
        time.sleep(0.05)


async def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as state:
        home = Path(state)
        process = start_broker(home)
        boxes = BrokerClient(home / "broker.sock")
        local = Sandboxes(home / "local", install=f"bench{os.getpid()}", ceilings=Ceilings())
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
            await local.exec("warm", "true")
            # interleaved, so a busy machine weighs on all three alike
            raws, brokered, direct = [], [], []
            for _ in range(rounds):
                raws.append(raw_warm(plain, 10))
                brokered.append(await warm(boxes, "cold-0", 10))
                direct.append(await warm(local, "warm", 10))
            plain.remove(force=True)
            warm_raw = statistics.median(raws)
            warm_ours = statistics.median(brokered)
            warm_local = statistics.median(direct)

            start = time.perf_counter()
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda _: raw_cold(), range(20)))
            many_raw = time.perf_counter() - start
            start = time.perf_counter()
            await asyncio.gather(*(boxes.exec(f"many-{n}", "true") for n in range(20)))
            many_ours = time.perf_counter() - start
        finally:
            for entry in await boxes.list():
                await boxes.reset(entry["room"])
            await local.reset("warm")
            await local.close()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            for c in CLIENT.containers.list(all=True, filters={"label": "io.potluck.bench=1"}):
                c.remove(force=True)
    print(f"cold start, plain docker run + exec (baseline): {cold_raw * 1e3:7.0f} ms")
    print(
        f"cold start, hardened room sandbox via broker: {cold_ours * 1e3:7.0f} ms  "
        f"ratio {cold_ours / cold_raw:.2f}x"
    )
    print(f"warm exec, plain docker exec (baseline):        {warm_raw * 1e3:7.1f} ms")
    print(
        f"warm exec, engine side in-process:              {warm_local * 1e3:7.1f} ms  "
        f"ratio {warm_local / warm_raw:.2f}x  (checks: top, events, inspect)"
    )
    print(
        f"warm exec, through the broker:                  {warm_ours * 1e3:7.1f} ms  "
        f"ratio {warm_ours / warm_raw:.2f}x  (+ the socket hop)"
    )
    print(f"20 rooms at once, plain (baseline):  {many_raw:7.2f} s")
    print(
        f"20 rooms at once, via broker:        {many_ours:7.2f} s  "
        f"ratio {many_ours / many_raw:.2f}x"
    )
    print("goal: <= 1.2x")


if __name__ == "__main__":
    asyncio.run(main())
