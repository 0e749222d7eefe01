"""`potluck serve` at start and idle, against a bare aiohttp server started the same way in
the same run (the floor any Python web process pays):

- seconds from start to the web room answering (goal <= 2 s), and to the page itself;
- resident memory idle with no room open (goal <= 200 MB), and whether the embedded model or
  litellm is loaded (neither should be until a room needs one);
- then a room's first answer, and memory with the model loaded.

Usage: .venv/bin/python bench/serve.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

BARE = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_get("/health", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loaded(pid: int, name: str) -> bool:
    """Whether a shared library or package of this name is mapped into the process."""
    return name in Path(f"/proc/{pid}/maps").read_text()


async def until_answers(url: str, process: subprocess.Popen, started: float) -> float:
    async with aiohttp.ClientSession() as http:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the process exited ({process.returncode}) before {url}")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.perf_counter() - started > 120:
                raise SystemExit(f"{url} did not answer within 120 s")
            await asyncio.sleep(0.02)


async def first_answer(base: str, token: str) -> float:
    """A room on the default recipe: seconds from the person's message to the agent's text."""
    headers = {"X-Potluck-Token": token, "Origin": base}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/rooms", json={"recipe": "solo"}, headers=headers) as r:
            room = (await r.json())["room"]
        async with http.ws_connect(f"{base}/ws/{room}", origin=base, headers=headers) as ws:
            await asyncio.sleep(0.5)  # the room's recipe notice first
            started = time.perf_counter()
            await ws.send_json({"text": "What is the capital of France?"})
            agents: set[str] = set()
            async with asyncio.timeout(300):
                async for message in ws:
                    line = message.json()
                    if line.get("type") == "message" and line.get("role") == "agent":
                        agents.add(line["id"])
                    elif line.get("type") == "edit" and line["id"] in agents:
                        shown = line.get("text") or "…"
                        if shown != "…":
                            return time.perf_counter() - started
    return float("nan")


async def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    with tempfile.TemporaryDirectory(prefix="potluck-serve-") as home:
        env.update(POTLUCK_HOME=home, PYTHONPATH=str(ROOT), POTLUCK_WEB_PORT=str(free_port()))
        port = env["POTLUCK_WEB_PORT"]
        potluck = [sys.executable, "-m", "gateway"]
        subprocess.run([*potluck, "init", "--no-detect"], env=env, check=True, capture_output=True)

        bare_port = str(free_port())
        started = time.perf_counter()
        bare = subprocess.Popen([sys.executable, "-c", BARE, bare_port])
        bare_s = await until_answers(f"http://127.0.0.1:{bare_port}/health", bare, started)
        await asyncio.sleep(2)
        bare_mb = rss_mb(bare.pid)
        bare.terminate()
        bare.wait(10)

        started = time.perf_counter()
        serve = subprocess.Popen(
            [*potluck, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            health_s = await until_answers(f"{base}/health", serve, started)
            token = (Path(home) / "web.token").read_text().strip()
            page_s = await until_answers(f"{base}/", serve, started)  # the token rides in "#"
            await asyncio.sleep(3)  # idle, no room open
            idle_mb = rss_mb(serve.pid)
            idle_model = loaded(serve.pid, "libllama") or loaded(serve.pid, "xllamacpp")
            idle_litellm = loaded(serve.pid, "litellm")  # its compiled deps map from its tree
            answer_s = await first_answer(base, token)
            await asyncio.sleep(1)
            busy_mb = rss_mb(serve.pid)
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
    print(f"bare aiohttp server (baseline): answers after {bare_s:.2f} s, {bare_mb:.0f} MB")
    print(
        f"potluck serve: web room answers after {health_s:.2f} s, the page after {page_s:.2f} s "
        f"(goal <= 2 s; {page_s / bare_s:.1f}x the bare server)"
    )
    print(
        f"potluck serve idle, no room open: {idle_mb:.0f} MB (goal <= 200 MB; "
        f"{idle_mb / bare_mb:.1f}x the bare server); model loaded: {idle_model}; "
        f"litellm loaded: {idle_litellm}"
    )
    print(
        f"first answer in a new room (loads the model): {answer_s:.2f} s; "
        f"then {busy_mb:.0f} MB with the model loaded"
    )


if __name__ == "__main__":
    asyncio.run(main())
