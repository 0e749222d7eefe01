"""Finding a better model than the embedded one on this machine: a local model server on its
usual loopback port (or the OpenAI-compatible api_base a person names), or an API key
already in the environment. `potluck init` offers what it finds as the install's fallback;
`potluck doctor` reports it.

Only loopback and the address the person gave are asked, each once, with a short timeout,
no redirects followed and a bounded answer: a server's model list is untrusted text, and a
name that is not a valid model id is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .keys import EndpointError, normalise_endpoint

# (what it is, its OpenAI-compatible base URL): the ports these servers listen on by default.
KNOWN_SERVERS: tuple[tuple[str, str], ...] = (
    ("Ollama", "http://127.0.0.1:11434/v1"),
    ("llama.cpp server", "http://127.0.0.1:8080/v1"),
    ("LM Studio", "http://127.0.0.1:1234/v1"),
    ("vLLM", "http://127.0.0.1:8000/v1"),
)
# An API key in the environment, and the model a fallback uses with it: small, cheap, fast.
KEY_MODELS: tuple[tuple[str, str], ...] = (
    ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-latest"),
    ("GEMINI_API_KEY", "gemini/gemini-2.0-flash"),
    ("GROQ_API_KEY", "groq/llama-3.1-8b-instant"),
    ("MISTRAL_API_KEY", "mistral/mistral-small-latest"),
    ("DEEPSEEK_API_KEY", "deepseek/deepseek-chat"),
)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,150}$")
NOT_CHAT = re.compile(r"(?i)embed|rerank|whisper|tts|clip|bge-|minilm")
MAX_ANSWER = 1 << 20


@dataclass(frozen=True)
class Found:
    """A model the install could use. problem: why it cannot be used as it is."""

    what: str  # "Ollama at http://127.0.0.1:11434/v1", or "OPENAI_API_KEY in the environment"
    model: str | None  # the litellm model id a fallback would name
    api_base: str | None = None
    choices: tuple[str, ...] = ()  # every chat model the server lists
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.model is not None and self.problem is None


def pick(names: list[str]) -> tuple[str, ...]:
    """The chat models among a server's names, in its order; a file path (llama.cpp's
    server names a model by the file it loaded) by its file name. Pure."""
    found = []
    for name in names:
        if name.startswith("/"):
            name = name.rsplit("/", 1)[-1]
        if MODEL_NAME.match(name) and ".." not in name and not NOT_CHAT.search(name):
            found.append(name)
    return tuple(dict.fromkeys(found))


async def probe(what: str, api_base: str, timeout_s: float = 5.0) -> Found | None:
    """The server's models, or None when nothing listens there."""
    import aiohttp

    try:
        base = normalise_endpoint(api_base)
    except EndpointError as exc:
        return Found(f"{what} at {api_base}", None, None, problem=str(exc))
    label = f"{what} at {base}"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(base + "/models", allow_redirects=False) as response,
        ):
            body = await response.content.read(MAX_ANSWER)
            status = response.status
    except (aiohttp.ClientConnectionError, TimeoutError, OSError):
        return None
    except aiohttp.ClientError as exc:
        return Found(label, None, base, problem=f"answered, but not as an OpenAI API ({exc})")
    if status in (401, 403):
        return Found(
            label,
            None,
            base,
            problem=f"wants an API key (HTTP {status}): list it as "
            f'{{ url = "{base}", api_key = "..." }} under [providers.openai] endpoints',
        )
    if status != 200:
        return Found(label, None, base, problem=f"answered HTTP {status} to GET /models")
    try:
        data = json.loads(body)
        names = [str(item["id"]) for item in data["data"]]
    except (ValueError, KeyError, TypeError):
        return Found(label, None, base, problem="its /models answer is not an OpenAI model list")
    choices = pick(names)
    if not choices:
        return Found(label, None, base, problem="it lists no chat model; load or pull one")
    return Found(label, f"openai/{choices[0]}", base, choices)


def keys_in(env: Mapping[str, str]) -> list[Found]:
    return [
        Found(f"{name} in the environment", model)
        for name, model in KEY_MODELS
        if env.get(name, "").strip()
    ]


async def discover(
    api_base: str | None = None,
    servers: tuple[tuple[str, str], ...] = KNOWN_SERVERS,
    env: Mapping[str, str] | None = None,
) -> list[Found]:
    """Everything found, best first: the server the person named, local servers (free and
    private), then API keys."""
    named = [("the server you named", api_base)] if api_base else []
    probes = await asyncio.gather(*(probe(what, url) for what, url in [*named, *servers]))
    found = [f for f in probes if f is not None]
    return found + keys_in(os.environ if env is None else env)
