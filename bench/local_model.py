"""The embedded model's costs, each against a baseline measured in the same run:

1. tokens/s through the runtime vs the raw llama.cpp server (goal >= 0.95x): both stream the
   same prompt with the same settings at temperature 0, interleaved; the raw side talks to
   the engine's HTTP endpoint with nothing in between.
2. five rooms at once (goal: every first token within 1.5 s, aggregate tokens/s >= 1.2x a
   single slot): five calls through the runtime together on the model's parallel slots, vs
   the same five on a server with one slot (one after another, as before), and whether a
   room that had to wait was told.

Usage: .venv/bin/python bench/local_model.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from runtime.models import local
from runtime.models.client import CallParams, Models

MODEL = "local/smollm2-135m"
MESSAGES = [
    {"role": "system", "content": "You are a storyteller."},
    {"role": "user", "content": "Tell a long story about a lighthouse keeper and a cat."},
]
MAX_TOKENS = 200
ROOMS = [
    "Tell a story about a lighthouse keeper.",
    "Write a Python function that reverses a string.",
    "What is the capital of France?",
    "Give three tips for sleeping well.",
    "Describe a walk in the forest.",
]


async def raw(models: Models) -> float:
    server = await models.local.ensure(MODEL)
    sampling = server.spec.profile.sampling
    body = {
        "model": server.spec.name,
        "messages": MESSAGES,
        "stream": True,
        "temperature": 0.0,
        "max_tokens": MAX_TOKENS,
        "stream_options": {"include_usage": True},
        **sampling.extra_body(),
    }
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    headers = {"Authorization": f"Bearer {server.api_key}"}
    start = time.perf_counter()
    tokens = 0
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.api_base + "/chat/completions", json=body, headers=headers) as response,
    ):
        async for raw_line in response.content:
            line = raw_line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens / (time.perf_counter() - start)


async def runtime(models: Models) -> float:
    start = time.perf_counter()
    done = await models.complete(
        [MODEL], MESSAGES, CallParams(temperature=0.0, max_tokens=MAX_TOKENS), on_text=len
    )
    return done.tokens_out / (time.perf_counter() - start)


async def rooms_at_once(models: Models) -> tuple[list[float], float, list[int]]:
    """First-token seconds per room, aggregate tokens/s, and how often each room was told
    it waits."""
    start = time.perf_counter()
    firsts: list[float] = [0.0] * len(ROOMS)
    told = [0] * len(ROOMS)

    async def room(n: int, text: str) -> int:
        def seen(so_far: str) -> None:
            if not firsts[n]:
                firsts[n] = time.perf_counter() - start

        def waiting(ahead: int) -> None:
            told[n] += 1

        done = await models.complete(
            [MODEL],
            [{"role": "user", "content": text}],
            CallParams(temperature=0.0, max_tokens=120),
            on_text=seen,
            on_wait=waiting,
        )
        return done.tokens_out

    tokens = await asyncio.gather(*(room(n, text) for n, text in enumerate(ROOMS)))
    return firsts, sum(tokens) / (time.perf_counter() - start), told


def single_slot_models() -> Models:
    """The same model on a server with one slot: rooms served one after another."""
    spec = replace(local.MODELS["smollm2-135m"], slots=1)

    class OneSlot(local.LocalModels):
        @staticmethod
        def spec(model: str) -> local.LocalModelSpec:
            return spec

    return Models(local=OneSlot())


async def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    models = Models()
    await raw(models)  # load and warm up
    raw_rates, runtime_rates = [], []
    for _ in range(rounds):  # interleaved, so drift hits both sides alike
        raw_rates.append(await raw(models))
        runtime_rates.append(await runtime(models))
    r, t = statistics.median(raw_rates), statistics.median(runtime_rates)
    print(f"raw llama.cpp server (baseline): {r:7.1f} tokens/s (median of {rounds})")
    print(f"through the runtime:             {t:7.1f} tokens/s  ratio {t / r:.2f}x (goal >= 0.95x)")

    single = single_slot_models()
    await rooms_at_once(single)  # load and warm up
    await rooms_at_once(models)
    firsts_one, rate_one, told_one, firsts, rate, told = [], [], [], [], [], []
    for _ in range(max(1, rounds // 2)):
        f1, r1, w1 = await rooms_at_once(single)
        f, r_, w = await rooms_at_once(models)
        firsts_one.append(f1), rate_one.append(r1), told_one.append(w1)
        firsts.append(f), rate.append(r_), told.append(w)
    slots = local.MODELS["smollm2-135m"].slots
    worst = [max(f) for f in firsts]
    print(
        f"five rooms, one slot (baseline): first tokens "
        f"{', '.join(f'{x:.1f}' for x in sorted(firsts_one[-1]))} s; "
        f"{statistics.median(rate_one):.1f} tokens/s; rooms told they wait: "
        f"{sum(1 for w in told_one[-1] if w)}"
    )
    print(
        f"five rooms, {slots} slots:          first tokens "
        f"{', '.join(f'{x:.1f}' for x in sorted(firsts[-1]))} s (worst, median of rounds "
        f"{statistics.median(worst):.2f} s; goal <= 1.5 s); {statistics.median(rate):.1f} "
        f"tokens/s, {statistics.median(rate) / statistics.median(rate_one):.2f}x one slot "
        f"(goal >= 1.2x); rooms told they wait: {sum(1 for w in told[-1] if w)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
