"""Tokens/s of the embedded model through the runtime vs the raw llama.cpp server, same run.

Goal: >= 0.95x. Both sides stream the same prompt with the same settings at temperature 0;
the raw side talks to the engine's own HTTP endpoint with no litellm in between.
Usage: .venv/bin/python bench/local_model.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from runtime.models.client import CallParams, Models

MODEL = "local/smollm2-135m"
MESSAGES = [
    {"role": "system", "content": "You are a storyteller."},
    {"role": "user", "content": "Tell a long story about a lighthouse keeper and a cat."},
]
MAX_TOKENS = 200


async def raw(models: Models) -> float:
    server = await models.local.ensure(MODEL)
    body = {
        "model": server.spec.name,
        "messages": MESSAGES,
        "stream": True,
        "temperature": 0.0,
        "max_tokens": MAX_TOKENS,
        "stream_options": {"include_usage": True},
        **dict(server.spec.sampling),
    }
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
    print(f"through the runtime (litellm):   {t:7.1f} tokens/s  ratio {t / r:.2f}x")
    print("goal: >= 0.95x")


if __name__ == "__main__":
    asyncio.run(main())
