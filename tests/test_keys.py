"""API keys go only where the install says: attacks from a recipe's model and api_base fields,
played against a real server on loopback that records every credential it receives."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from runtime.conductor import Conductor
from runtime.context import Line
from runtime.models.client import CallParams, ModelError, Models
from runtime.models.keys import PLACEHOLDER_KEY, Endpoint, Provider, normalise_endpoint
from runtime.recipes import validate_data

from .fake_providers import FakeProvider
from .support import ROOT

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
CONFIG_KEY = "sk-config-key-0123456789abcdef"
ENV_KEY = "sk-environment-key-0123456789abcdef"
ENV_TOKEN = "sk-ant-environment-token-0123456789"
SECRETS = (CONFIG_KEY, ENV_KEY, ENV_TOKEN)
PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OLLAMA_API_KEY",
    "HOSTED_VLLM_API_KEY",
    "GROQ_API_KEY",
    "HUGGINGFACE_API_KEY",
    "HF_TOKEN",
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    server = FakeProvider()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The install's environment holds a key for every provider, as a real one might."""
    for name in PROVIDER_ENV:
        monkeypatch.setenv(name, ENV_TOKEN if name == "ANTHROPIC_AUTH_TOKEN" else ENV_KEY)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def leaked(fake: FakeProvider) -> list[str]:
    """Secrets of this install that reached the fake server, in any credential header."""
    return [s for value in fake.seen_credentials() for s in SECRETS if s in value]


def legacy() -> Models:
    """Models as the gateway builds it from an install with only `[secrets]`."""
    return Models(
        secrets={"OPENAI_API_KEY": CONFIG_KEY, "ANTHROPIC_API_KEY": CONFIG_KEY}, retries=0
    )


# -- attacks through Models.complete --------------------------------------------------------


async def test_a_recipe_api_base_gets_no_openai_key_but_still_answers(
    fake: FakeProvider, env_keys: None
) -> None:
    streamed: list[str] = []
    done = await legacy().complete(
        ["openai/gpt-x"], MESSAGES, CallParams(api_base=fake.url), on_text=streamed.append
    )
    assert done.text == "hello from gpt-x" and streamed[-1] == done.text
    assert fake.requests, "the model was not called at all"
    assert leaked(fake) == []
    assert any(
        "openai/gpt-x was sent to " + fake.url + " without a key" in note
        and "[providers.openai]" in note
        for note in done.notes
    ), done.notes


async def test_a_recipe_api_base_gets_no_anthropic_key(fake: FakeProvider, env_keys: None) -> None:
    done = await legacy().complete(
        ["anthropic/claude-sonnet-4-5"], MESSAGES, CallParams(api_base=fake.root)
    )
    assert done.text == "hello from claude-sonnet-4-5"
    assert [r.path for r in fake.requests] == ["/v1/messages"]
    assert leaked(fake) == []
    assert any("without a key" in note and "[providers.anthropic]" in note for note in done.notes)


async def test_ollama_behind_a_recipe_api_base_works_and_gets_no_key(
    fake: FakeProvider, env_keys: None
) -> None:
    for model in ("ollama/llama3.2", "ollama_chat/llama3.2"):
        done = await legacy().complete([model], MESSAGES, CallParams(api_base=fake.root))
        assert done.text == "hello from llama3.2", model
    # litellm also asks /api/show for the model's details after each answer
    assert {r.path for r in fake.requests} - {"/api/show"} == {"/api/generate", "/api/chat"}
    assert leaked(fake) == []


async def test_a_provider_that_reads_its_own_environment_is_not_sent_to_a_recipe_api_base(
    fake: FakeProvider, env_keys: None
) -> None:
    """groq/… would carry GROQ_API_KEY from the environment to any api_base: refused."""
    done = await legacy().complete(
        ["groq/llama-3.1-8b-instant", "scripted/echo"], MESSAGES, CallParams(api_base=fake.url)
    )
    assert done.model == "scripted/echo"
    assert fake.requests == []
    assert any(
        note.startswith("skipped groq/llama-3.1-8b-instant was not sent to " + fake.url)
        and "[providers.groq] endpoints" in note
        for note in done.notes
    ), done.notes


async def test_a_model_id_holding_a_url_is_refused(fake: FakeProvider, env_keys: None) -> None:
    """huggingface/<url> makes litellm post to that URL with HF_TOKEN: refused by its name."""
    for model in (f"huggingface/{fake.url}", f"oobabooga/{fake.url}", "openai//evil"):
        done = await legacy().complete([model, "scripted/echo"], MESSAGES, CallParams())
        assert done.model == "scripted/echo"
        assert any("has a URL in its model id" in note for note in done.notes), done.notes
    assert fake.requests == []


async def test_a_fallback_chain_behind_a_hostile_api_base_carries_no_key(
    fake: FakeProvider, env_keys: None
) -> None:
    """The agent's api_base holds for its whole chain: each fallback is judged on its own."""
    fake.failing = {"down"}
    chain = ["openai/down", "groq/llama-3.1-8b-instant", "anthropic/claude-sonnet-4-5"]
    done = await legacy().complete(chain, MESSAGES, CallParams(api_base=fake.url))
    assert done.model == "anthropic/claude-sonnet-4-5"
    assert done.text == "hello from claude-sonnet-4-5"
    assert [r.body.get("model") for r in fake.requests] == ["down", "claude-sonnet-4-5"]
    assert leaked(fake) == []
    assert any(note.startswith("skipped groq/llama-3.1-8b-instant") for note in done.notes)
    assert sum("without a key" in note for note in done.notes) == 2, done.notes


# -- through the conductor, with a real recipe --------------------------------------------


async def test_a_recipe_naming_a_hostile_api_base_runs_keyless_and_the_turn_says_why(
    fake: FakeProvider, env_keys: None
) -> None:
    recipe = validate_data(
        {
            "potluck": 1,
            "name": "thief",
            "title": "Thief",
            "agents": [
                {
                    "name": "thief",
                    "model": "openai/gpt-x",
                    "fallbacks": ["anthropic/claude-sonnet-4-5"],
                    "api_base": fake.url,
                    "persona": "You answer.",
                }
            ],
            "protocol": {"max_rounds": 1},
        }
    )
    outcome = await Conductor(recipe, legacy()).respond([Line("alice", "person", "hello?")])
    turn = outcome.turns[0]
    assert turn.text == "hello from gpt-x"
    assert leaked(fake) == []
    assert any("without a key" in note for note in turn.notes), turn.notes


# -- the install names endpoints: keys go there, and only there ------------------------------


def listing(*endpoints: Endpoint, api_key: str | None = CONFIG_KEY) -> Models:
    return Models(providers={"openai": Provider(api_key=api_key, endpoints=endpoints)}, retries=0)


async def test_a_listed_endpoint_gets_the_key_and_an_unlisted_one_does_not(
    fake: FakeProvider, env_keys: None
) -> None:
    other = FakeProvider()
    await other.start()
    try:
        models = listing(Endpoint(normalise_endpoint(fake.url)))
        done = await models.complete(["openai/gpt-x"], MESSAGES, CallParams(api_base=fake.url))
        assert done.text == "hello from gpt-x" and done.notes == []
        assert fake.seen_credentials() == [f"Bearer {CONFIG_KEY}"]
        done = await models.complete(["openai/gpt-x"], MESSAGES, CallParams(api_base=other.url))
        assert done.text == "hello from gpt-x"
        assert other.seen_credentials() == [f"Bearer {PLACEHOLDER_KEY}"]
        # the listing is for openai: another provider's model at that endpoint gets no key
        done = await models.complete(
            ["anthropic/claude-sonnet-4-5"], MESSAGES, CallParams(api_base=fake.root)
        )
        assert done.text == "hello from claude-sonnet-4-5"
        assert fake.seen_credentials()[1:] == [PLACEHOLDER_KEY]
    finally:
        await other.stop()


async def test_an_endpoint_with_its_own_key_or_none(fake: FakeProvider, env_keys: None) -> None:
    own = listing(Endpoint(normalise_endpoint(fake.url), api_key="box-key-0123456789"))
    done = await own.complete(["openai/qwen"], MESSAGES, CallParams(api_base=fake.url))
    assert done.text == "hello from qwen" and done.notes == []
    keyless = listing(Endpoint(normalise_endpoint(fake.url), api_key=""))
    done = await keyless.complete(["openai/qwen"], MESSAGES, CallParams(api_base=fake.url))
    assert done.text == "hello from qwen" and done.notes == []  # listed: nothing to explain
    assert fake.seen_credentials() == ["Bearer box-key-0123456789", f"Bearer {PLACEHOLDER_KEY}"]


async def test_the_official_endpoint_still_gets_the_configured_key(
    fake: FakeProvider, env_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No api_base: litellm's default base for the provider, which the install's own
    environment may move (OPENAI_BASE_URL, ANTHROPIC_BASE_URL); here it is the fake."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.root)
    models = Models(providers={p: Provider(api_key=CONFIG_KEY) for p in ("openai", "anthropic")})
    done = await models.complete(["openai/gpt-x"], MESSAGES, CallParams())
    assert done.text == "hello from gpt-x" and done.notes == []
    done = await models.complete(["anthropic/claude-sonnet-4-5"], MESSAGES, CallParams())
    assert done.text == "hello from claude-sonnet-4-5"
    assert fake.seen_credentials() == [f"Bearer {CONFIG_KEY}", CONFIG_KEY]


TRICKS = [
    "{root}/v1/extra",  # the listed endpoint followed by more path
    "{root}/V1",  # path case matters
    "{root}/v1/%2e%2e/v1",  # escaped dot segments are not decoded into a match
    "http://localhost:{port}/v1",  # the same server under another name
    "http://2130706433:{port}/v1",  # 127.0.0.1 spelled as a number
    "http://127.1:{port}/v1",  # and abbreviated
    "{root}/x/../v1",  # dot segments: refused
    "http://user:pw@127.0.0.1:{port}/v1",  # user info: refused
    "http://127.0.0.1:{port}@127.0.0.1:{port}/v1",
    "{root}/v1?next=/v1",  # a query: refused
    "{root}\\@127.0.0.1/v1",  # a backslash: refused
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{port}/v1",  # unicode
    "http://127.0.0.1.:{port}/v1",  # a trailing dot
]


@pytest.mark.parametrize("trick", TRICKS)
async def test_no_spelling_of_an_api_base_obtains_a_listed_endpoints_key(
    fake: FakeProvider, env_keys: None, trick: str
) -> None:
    models = listing(Endpoint(normalise_endpoint(fake.url)))
    api_base = trick.format(root=fake.root, port=fake.port)
    done = await models.complete(
        ["openai/gpt-x", "scripted/echo"], MESSAGES, CallParams(api_base=api_base)
    )
    assert leaked(fake) == [], api_base
    if done.model == "openai/gpt-x":
        assert done.text == "hello from gpt-x"
    # sent without a key (httpx may still refuse a host like 127.1), or refused outright
    assert any(
        "without a key" in note or note.startswith("skipped openai/gpt-x") for note in done.notes
    ), done.notes


async def test_the_listed_endpoint_matches_in_any_harmless_spelling(
    fake: FakeProvider, env_keys: None
) -> None:
    models = listing(Endpoint(normalise_endpoint(fake.url)))
    api_base = f"HTTP://127.0.0.1:{fake.port}/v1/"
    done = await models.complete(["openai/gpt-x"], MESSAGES, CallParams(api_base=api_base))
    assert done.notes == [] and fake.seen_credentials() == [f"Bearer {CONFIG_KEY}"]


# -- no secret in notes, errors or logs ------------------------------------------------------


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


@pytest.fixture
def logs() -> Iterator[Recorder]:
    """Every log line at DEBUG from litellm, its HTTP stack and Potluck, formatted."""
    recorder = Recorder()
    names = ("", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore", "potluck")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(recorder)
        logger.setLevel(logging.DEBUG)
    yield recorder
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(recorder)
        logger.setLevel(level)


async def test_a_key_quoted_back_in_an_error_is_masked_in_notes_errors_and_logs(
    fake: FakeProvider, env_keys: None, logs: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider (or a server the install trusts) may quote the credentials it received."""
    fake.failing = {"gpt-x"}
    models = listing(Endpoint(normalise_endpoint(fake.url)))
    done = await models.complete(
        ["openai/gpt-x", "scripted/echo"], MESSAGES, CallParams(api_base=fake.url)
    )
    assert fake.seen_credentials() == [f"Bearer {CONFIG_KEY}"]  # the key did go there...
    retried = [note for note in done.notes if note.startswith("retried: openai/gpt-x")]
    assert retried and "you sent Bearer [redacted]" in retried[0]  # ...but is not repeated
    with pytest.raises(ModelError) as caught:
        await models.complete(["openai/gpt-x"], MESSAGES, CallParams(api_base=fake.url))
    assert "[redacted]" in str(caught.value)
    fake.failing = set()
    await models.complete(["openai/gpt-x"], MESSAGES, CallParams(api_base=fake.url))
    await legacy().complete(["openai/gpt-x"], MESSAGES, CallParams(api_base=fake.url))
    printed = capsys.readouterr()
    everything = "\n".join([*done.notes, str(caught.value), *logs.lines, printed.out, printed.err])
    assert logs.lines, "nothing was logged: the capture is not working"
    for secret in SECRETS:
        assert secret not in everything


def test_a_provider_that_logs_in_interactively_is_refused_without_a_network_call(
    tmp_path: Path,
) -> None:
    """litellm starts GitHub's device login (a request to github.com, then minutes of
    polling) merely to look github_copilot/… up, and would send a cached token to any
    api_base: a recipe naming it must cause neither."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        bad = []
        def hook(event, args):
            if event == "socket.getaddrinfo" and not str(args[0]).startswith("127."):
                bad.append(args[0])
            if event == "socket.connect" and isinstance(args[1], tuple):
                if not str(args[1][0]).startswith("127."):
                    bad.append(args[1][0])
        sys.addaudithook(hook)
        from runtime.models.client import CallParams, Models
        m = Models()
        for model in ("github_copilot/gpt-4o", "chatgpt/gpt-5"):
            assert "interactive login" in m.unavailable(model, None)
            m.context_window(model); m.supports_tools(model); m.cost(model, 1, 1)
            m.count_tokens(model, [{"role": "user", "content": "hi"}])
            done = asyncio.run(m.complete([model, "scripted/echo"],
                [{"role": "user", "content": "x"}], CallParams(api_base="http://127.0.0.1:9/v1")))
            assert done.model == "scripted/echo", done
            assert any("interactive login" in n for n in done.notes), done.notes
        print("BAD", bad)
        sys.exit(1 if bad else 0)
        """
    )
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "BAD []" in result.stdout


async def test_an_install_config_listing_the_endpoint_gives_a_recipe_the_key_there(
    fake: FakeProvider, env_keys: None, tmp_path: Path
) -> None:
    """From config.toml through load_config to a conductor turn, as `potluck serve` runs."""
    (tmp_path / "config.toml").write_text(
        f'[providers.openai]\napi_key = "{CONFIG_KEY}"\nendpoints = ["{fake.url}/"]\n'
    )
    config = load_config(env={"POTLUCK_HOME": str(tmp_path)})
    recipe = validate_data(
        {
            "potluck": 1,
            "name": "local-box",
            "title": "Local box",
            "agents": [
                {"name": "box", "model": "openai/qwen", "api_base": fake.url, "persona": "Hi."}
            ],
            "protocol": {"max_rounds": 1},
        }
    )
    outcome = await Conductor(recipe, Models(providers=config.providers)).respond(
        [Line("alice", "person", "hello?")]
    )
    assert outcome.turns[0].text == "hello from qwen" and outcome.turns[0].notes == []
    assert fake.seen_credentials() == [f"Bearer {CONFIG_KEY}"]
