"""The pure half of key routing (one spelling per endpoint, one decision per call) and the
install's [providers] configuration that feeds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.logs import config_secrets
from runtime.models.keys import (
    PLACEHOLDER_KEY,
    Endpoint,
    EndpointError,
    Provider,
    merge_secrets,
    normalise_endpoint,
    route,
)

KEY = "sk-config-key-0123456789abcdef"
LISTED = "http://127.0.0.1:8080/v1"
OPENAI = {"openai": Provider(api_key=KEY, endpoints=(Endpoint(LISTED),))}


# -- one spelling per endpoint ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("HTTP://127.0.0.1:8080/v1/", LISTED),
        ("http://LocalHost:8080/v1", "http://localhost:8080/v1"),
        ("http://example.org:80/v1", "http://example.org/v1"),
        ("https://example.org:443", "https://example.org"),
        ("https://example.org:8443/", "https://example.org:8443"),
        ("http://[::1]:11434", "http://[::1]:11434"),
        ("http://[0:0:0:0:0:0:0:1]:11434", "http://[0:0:0:0:0:0:0:1]:11434"),  # kept as written
        ("http://127.0.0.1:8080/V1", "http://127.0.0.1:8080/V1"),  # paths keep their case
        ("http://127.0.0.1:8080/v1/%2e%2e", "http://127.0.0.1:8080/v1/%2e%2e"),  # not decoded
        ("http://xn--bcher-kva.example/v1", "http://xn--bcher-kva.example/v1"),
        ("http://model_server:8000/v1", "http://model_server:8000/v1"),  # compose service names
    ],
)
def test_endpoints_are_spelled_one_way(given: str, normal: str) -> None:
    assert normalise_endpoint(given) == normal


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("ftp://127.0.0.1/v1", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("127.0.0.1:8080/v1", "http:// or https://"),
        ("http://user@127.0.0.1/v1", "user info"),
        ("http://user:pw@127.0.0.1/v1", "user info"),
        ("http://127.0.0.1:8080@evil.example/v1", "user info"),
        ("http://b\u00fccher.example/v1", "non-ASCII"),
        ("http://\uff11\uff12\uff17.0.0.1/v1", "non-ASCII"),
        ("http://127.0.0.1\\@evil.example/v1", "backslash"),
        ("http://127.0.0.1/v1?x=1", "query"),
        ("http://127.0.0.1/v1#x", "query or fragment"),
        ("http://127.0.0.1/v1/../admin", ". or .."),
        ("http://127.0.0.1/./v1", ". or .."),
        ("http://127.0.0.1%2eevil.example/v1", "no valid host"),
        ("http:///v1", "no valid host"),
        ("http://127.0.0.1:99999/v1", "not a valid URL"),
        ("http://127.0.0.1 /v1", "spaces or control"),
        ("http://127.0.0.1/v1\n", "spaces or control"),
        ("http://exa$mple.org/v1", "characters a host name cannot have"),
        ("", "non-empty"),
    ],
)
def test_ambiguous_endpoints_are_refused_with_the_reason(given: str, why: str) -> None:
    with pytest.raises(EndpointError) as caught:
        normalise_endpoint(given)
    assert why in str(caught.value)


# -- one decision per call --------------------------------------------------------------------


@pytest.mark.parametrize(
    "api_base",
    [
        "http://127.0.0.1:8080/v1/chat",  # the listed endpoint followed by more path
        "http://127.0.0.1:8080",  # a prefix of it
        "http://127.0.0.1.evil.example:8080/v1",
        "http://127.0.0.1:8081/v1",
        "https://127.0.0.1:8080/v1",  # another scheme is another endpoint
        "http://localhost:8080/v1",
        "http://127.0.0.1:8080/v1/%2e%2e/v1",
        "http://127.0.0.1:8080/v1.",
    ],
)
def test_only_the_listed_endpoint_gets_the_key(api_base: str) -> None:
    decided = route("openai/gpt-x", "openai", api_base, OPENAI)
    assert decided.api_key == PLACEHOLDER_KEY and decided.refused is None
    assert decided.note is not None and "[providers.openai] endpoints" in decided.note
    assert route("openai/gpt-x", "openai", "http://127.0.0.1:8080/v1/", OPENAI).api_key == KEY


def test_keys_do_not_cross_providers() -> None:
    anthropic = route("anthropic/claude-x", "anthropic", LISTED, OPENAI)
    assert anthropic.api_key == PLACEHOLDER_KEY
    assert anthropic.note is None  # no anthropic key exists here, so none was withheld
    withheld = route("anthropic/claude-x", "anthropic", LISTED, OPENAI, env_has_key=True)
    assert withheld.note is not None and "[providers.anthropic]" in withheld.note


def test_the_official_endpoint_gets_the_configured_key_or_litellms_own() -> None:
    assert route("openai/gpt-x", "openai", None, OPENAI).api_key == KEY
    assert route("gemini/gemini-2.0-flash", "gemini", None, OPENAI).api_key is None
    # variants of a provider use the family's key
    assert route("anthropic/claude-2", "anthropic_text", None, {"anthropic": Provider(KEY)}).api_key
    assert route("ollama_chat/x", "ollama_chat", LISTED, {"ollama": Provider(KEY)}).note


def test_providers_that_read_the_environment_are_refused_an_unlisted_base() -> None:
    for model, served_by in [
        ("groq/x", "groq"),
        ("azure/x", "azure"),
        ("vertex_ai/x", "vertex_ai"),
    ]:
        decided = route(model, served_by, LISTED, OPENAI)
        assert decided.refused and f"[providers.{served_by}] endpoints" in decided.refused
    listed = {"groq": Provider(api_key=KEY, endpoints=(Endpoint(LISTED),))}
    assert route("groq/x", "groq", LISTED, listed).api_key == KEY
    # litellm would put its own key in place of ours: refused even for openai
    assert route("gpt-4o", "openai", LISTED, {}, litellm_overrides_key=True).refused


@pytest.mark.parametrize(
    "model",
    [
        "huggingface/https://evil.example/v1",
        "huggingface/HTTP://evil.example",
        "oobabooga/http:/evil.example",
        "openai//evil.example/v1",
        "github_copilot/gpt-4o",
        "chatgpt/gpt-5",
    ],
)
def test_models_refused_by_their_name(model: str) -> None:
    assert route(model, None, None, OPENAI).refused


def test_model_ids_people_use_are_not_refused() -> None:
    for model in (
        "openrouter/meta-llama/llama-3.1-8b-instruct:free",
        "bedrock/arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
        "ollama/llama3.2:3b",
        "vertex_ai/claude-sonnet-4-5@20250929",
        "replicate/meta/llama:abc123",
    ):
        assert route(model, "x", None, {}).refused is None, model


def test_an_invalid_recipe_api_base_is_refused_not_guessed() -> None:
    decided = route("openai/gpt-x", "openai", "http://user@127.0.0.1:8080/v1", OPENAI)
    assert decided.refused and "user info" in decided.refused and decided.api_key is None


def test_a_keyless_listed_endpoint_runs_without_a_note() -> None:
    providers = {"openai": Provider(api_key=KEY, endpoints=(Endpoint(LISTED, api_key=""),))}
    decided = route("openai/qwen", "openai", LISTED, providers)
    assert decided.api_key == PLACEHOLDER_KEY and decided.note is None


def test_secrets_case_variants_and_duplicates() -> None:
    same = merge_secrets({}, {"OPENAI_API_KEY": KEY, "openai_api_key": KEY})
    assert same == {"openai": Provider(api_key=KEY)}
    with pytest.raises(ValueError, match="two different keys for openai"):
        merge_secrets({}, {"OPENAI_API_KEY": KEY, "openai_api_key": "sk-other-0123456789"})
    with pytest.raises(ValueError, match=r"\[providers.openai\] api_key"):
        merge_secrets({"openai": Provider(api_key="sk-other-0123456789")}, {"openai_api_key": KEY})
    with pytest.raises(ValueError, match="only API keys named"):
        merge_secrets({}, {"azure_api_base": "https://x.example"})
    aliases = merge_secrets({}, {"TOGETHERAI_API_KEY": KEY, "GOOGLE_API_KEY": KEY})
    assert set(aliases) == {"together_ai", "gemini"}


# -- the install's config ---------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.toml").write_text(text)
    return tmp_path


def test_providers_are_read_validated_and_kept_out_of_repr(tmp_path: Path) -> None:
    home = write(
        tmp_path,
        f"""
[providers.OpenAI]
api_key = "{KEY}"
endpoints = [
  "HTTPS://Proxy.Example.org:443/v1/",
  {{ url = "http://127.0.0.1:8080/v1", api_key = "" }},
  {{ url = "http://10.0.0.5:8000/v1", api_key = "box-key-0123456789" }},
]

[providers.anthropic]
api_key = "sk-ant-config-0123456789"

[secrets]
OPENAI_API_KEY = "{KEY}"
groq_api_key = "gsk-config-0123456789"
""",
    )
    config = load_config(env={"POTLUCK_HOME": str(home)})
    assert config.providers["openai"] == Provider(
        api_key=KEY,
        endpoints=(
            Endpoint("https://proxy.example.org/v1"),
            Endpoint(LISTED, api_key=""),
            Endpoint("http://10.0.0.5:8000/v1", api_key="box-key-0123456789"),
        ),
    )
    assert config.providers["groq"].api_key == "gsk-config-0123456789"
    assert config.providers["anthropic"].api_key == "sk-ant-config-0123456789"
    shown = repr(config) + repr(config.providers)
    for secret in (KEY, "box-key-0123456789", "gsk-config-0123456789", "sk-ant-config"):
        assert secret not in shown
    # log redaction knows every one of them
    assert {KEY, "box-key-0123456789", "sk-ant-config-0123456789"} <= config_secrets(config, {})


def test_environment_overrides_replace_the_files_values(tmp_path: Path) -> None:
    home = write(tmp_path, f'[providers.openai]\napi_key = "{KEY}"\nendpoints = ["{LISTED}"]\n')
    config = load_config(
        env={
            "POTLUCK_HOME": str(home),
            "POTLUCK_PROVIDERS_OPENAI_API_KEY": "sk-from-env-0123456789",
            "POTLUCK_PROVIDERS_OPENAI_ENDPOINTS": "http://a.example/v1, http://b.example/v1/",
            "POTLUCK_PROVIDERS_TOGETHER_AI_API_KEY": "tg-from-env-0123456789",
        }
    )
    assert config.providers["openai"] == Provider(
        api_key="sk-from-env-0123456789",
        endpoints=(Endpoint("http://a.example/v1"), Endpoint("http://b.example/v1")),
    )
    assert config.providers["together_ai"].api_key == "tg-from-env-0123456789"


@pytest.mark.parametrize(
    ("text", "env", "says"),
    [
        ('[providers.openai]\nendpoints = ["ftp://x/v1"]', {}, "http:// or https://"),
        ('[providers.openai]\nendpoints = ["http://u@x/v1"]', {}, "user info"),
        ('[providers.openai]\nendpoints = "http://x/v1"', {}, "must be a list"),
        ("[providers.openai]\nendpoints = [{ url = 1 }]", {}, "must be strings"),
        ('[providers.openai]\nendpoints = [{ uri = "http://x" }]', {}, "each entry is a URL"),
        ('[providers.openai]\napi_kee = "x"', {}, "unknown keys ['api_kee']"),
        ("[providers.openai]\napi_key = 5", {}, "api_key must be a string"),
        ('[providers.openai]\napi_key = "a"\n[providers.OPENAI]\napi_key = "a"', {}, "same"),
        ('[providers."open ai"]\napi_key = "a"', {}, "as litellm names it"),
        ('providers = "openai"', {}, "must hold tables"),
        (
            '[providers.openai]\nendpoints = ["http://x/v1", '
            '{ url = "http://x/v1/", api_key = "" }]',
            {},
            "listed twice with different keys",
        ),
        (
            '[providers.openai]\napi_key = "sk-one-0123456789"\n'
            '[secrets]\nopenai_api_key = "sk-two"',
            {},
            "two different keys for openai",
        ),
        ('[secrets]\nOPENAI_API_KEY = "a1"\nopenai_api_key = "b2"', {}, "two different keys"),
        ('[secrets]\nazure_api_base = "https://x"', {}, "only API keys named"),
        ("", {"POTLUCK_PROVIDERS_OPENAI_ENDPOINTS": "http://u@x/v1"}, "user info"),
        ("", {"POTLUCK_PROVIDERS_OPENAI_KEY": "x"}, "POTLUCK_PROVIDERS_<NAME>_API_KEY"),
    ],
)
def test_bad_provider_config_says_what_to_fix(
    tmp_path: Path, text: str, env: dict[str, str], says: str
) -> None:
    home = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(env={"POTLUCK_HOME": str(home), **env})
    assert says in str(caught.value)


def test_the_templates_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    from gateway.config import write_default_config

    text = write_default_config(tmp_path).read_text()
    start = text.index("# [providers.openai]")
    end = text.index("# ]", start) + 3
    example = "\n".join(line.removeprefix("# ") for line in text[start:end].splitlines())
    (tmp_path / "config.toml").write_text(text[:start] + example + text[end:])
    config = load_config(env={"POTLUCK_HOME": str(tmp_path)})
    assert config.providers["openai"].api_key == "sk-..."
    assert [e.url for e in config.providers["openai"].endpoints] == [
        "https://llm-proxy.example.org/v1",
        LISTED,
        "http://10.0.0.5:8000/v1",
    ]
