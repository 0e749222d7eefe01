"""Where an API key may go: the pure decision, from a model, its api_base and the install's
providers, to the key a call carries (or a refusal), plus the note the room reads.

Recipes are untrusted input: anyone can write one, and they travel over relays. A recipe
names a model and may name an api_base, so those two fields must never decide where one of
the install's keys goes. The rule:

- a key goes to its provider's official endpoint (litellm's default for the provider, that
  is: no api_base at all) or to an endpoint the install's config lists for that provider;
- any other api_base gets no key: the call carries PLACEHOLDER_KEY instead, because passing
  no key would let litellm read the provider's variable from the environment by itself;
- a provider for which a placeholder does not keep the environment out (most of litellm's
  providers read their own variables, cloud credentials or token files) is not sent to an
  unlisted api_base at all.

The litellm-facing half (which provider litellm will use, whether it would pick a key from
the environment despite ours) lives in client.py; this module only decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# Sent where no key may go. Non-empty, so litellm and the SDKs it drives take it as given and
# never fall back to an environment variable, a token file or workload identity.
PLACEHOLDER_KEY = "potluck-no-key"

# Providers (as litellm resolves them) whose requests, given an explicit api_key, carry that
# key and no other credential: checked in litellm 1.110.2's handlers for each. Only these may
# be sent, keyless, to an api_base the install did not list. Values: the environment
# variables litellm would otherwise read, so a note can say a key was withheld.
KEYLESS_OK: Mapping[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
    "ollama": ("OLLAMA_API_KEY",),
    "ollama_chat": ("OLLAMA_API_KEY",),
    "hosted_vllm": ("HOSTED_VLLM_API_KEY",),
}

# Providers whose "official endpoint" (litellm's default base) is a port on this machine:
# whoever listens there gets the call, so a configured key goes there only if the install
# lists that very base (a local user could be squatting the port of a remote Ollama).
LOOPBACK_DEFAULT: Mapping[str, str] = {
    "ollama": "http://localhost:11434",
    "ollama_chat": "http://localhost:11434",
}

# litellm resolves some models to a variant of a provider; the install configures the family.
FAMILY = {
    "anthropic_text": "anthropic",
    "text-completion-openai": "openai",
    "cohere_chat": "cohere",
    "ollama_chat": "ollama",
}

# Providers that log in interactively (a device code on the console, a token file in the
# home directory) as soon as litellm looks them up: a gateway cannot, and a recipe must not
# make it try or make it send such a token anywhere.
INTERACTIVE = frozenset({"github_copilot", "chatgpt"})

# [secrets] names that do not spell their provider's name the litellm way.
SECRET_ALIASES = {
    "togetherai": "together_ai",
    "together": "together_ai",
    "perplexityai": "perplexity",
    "google": "gemini",
}

PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class EndpointError(ValueError):
    """An endpoint that is not a plain http(s) URL; the message says what to change."""


def normalise_endpoint(url: str) -> str:
    """The one spelling of an endpoint that keys are matched on, or EndpointError.

    Lower-case scheme and host, no default port, no trailing slash; the path is kept exactly
    (case, percent-escapes), so two endpoints match only when they are the same string here.
    Everything that lets one URL mean several places is refused rather than interpreted:
    user info, non-ASCII hosts (IDNA), backslashes, dot segments, queries, fragments.
    """
    if not isinstance(url, str) or not url:
        raise EndpointError("an endpoint must be a non-empty URL such as http://127.0.0.1:8080/v1")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise EndpointError(f"{url!r} contains spaces or control characters")
    if not url.isascii():
        raise EndpointError(
            f"{url!r} has non-ASCII characters; write the host in ASCII (its xn-- form)"
        )
    if "\\" in url:
        raise EndpointError(f"{url!r} contains a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointError(f"{url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EndpointError(f"{url!r} must start with http:// or https://")
    if "@" in parts.netloc:
        raise EndpointError(f"{url!r} has user info (user@host); name the host alone")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise EndpointError(f"{url!r} has a query or fragment; an endpoint is a base URL")
    host = (parts.hostname or "").lower()
    if not host or "%" in parts.netloc:
        raise EndpointError(f"{url!r} has no valid host")
    if not re.fullmatch(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]", host if ":" not in host else f"[{host}]"):
        raise EndpointError(f"{url!r} has a host with characters a host name cannot have")
    segments = parts.path.split("/")
    if any(s in (".", "..") for s in segments):
        raise EndpointError(f"{url!r} has . or .. in its path; write the path it means")
    if port is not None and port == {"http": 80, "https": 443}[scheme]:
        port = None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class Endpoint:
    """An endpoint the install lists for a provider. api_key None: the provider's key goes
    there; "" : no key at all (a local server that wants none)."""

    url: str
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Provider:
    """What the install says about one provider: its key and where else that key may go."""

    api_key: str | None = field(default=None, repr=False)
    endpoints: tuple[Endpoint, ...] = ()

    def endpoint(self, url: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.url == url), None)


Providers = Mapping[str, Provider]


def provider_for_secret(name: str) -> str | None:
    """`openai_api_key` (any case) → "openai"; None for a name that is not <provider>_API_KEY."""
    lowered = name.strip().lower()
    if not lowered.endswith("_api_key") or lowered == "_api_key":
        return None
    base = lowered.removesuffix("_api_key")
    return SECRET_ALIASES.get(base, base)


def merge_secrets(providers: Providers, secrets: Mapping[str, str]) -> dict[str, Provider]:
    """Fold the older `[secrets]` form (OPENAI_API_KEY = "…") into providers.

    Names are case-insensitive; the same key written twice (OPENAI_API_KEY and
    openai_api_key, or in both [secrets] and [providers.openai]) is fine, two different keys
    for one provider are a ValueError naming both places, never a silent pick.
    """
    merged = dict(providers)
    origin: dict[str, str] = {}
    for name, value in secrets.items():
        provider = provider_for_secret(name)
        if provider is None:
            raise ValueError(
                f"[secrets] {name}: only API keys named <provider>_API_KEY belong here "
                "(e.g. openai_api_key); other provider settings go in the environment"
            )
        value = str(value)
        if not value:
            continue
        current = merged.get(provider, Provider())
        if current.api_key is not None and current.api_key != value:
            where = origin.get(provider, f"[providers.{provider}] api_key")
            raise ValueError(
                f"[secrets] {name} and {where} give two different keys for {provider}; keep one"
            )
        origin.setdefault(provider, f"[secrets] {name}")
        merged[provider] = Provider(api_key=value, endpoints=current.endpoints)
    return merged


@dataclass(frozen=True)
class Route:
    """How one model is called: the key it carries (None: litellm's own lookup, for the
    provider's official endpoint only), the api_base it is sent to, a note for the room,
    or why it may not be called at all."""

    api_key: str | None = field(default=None, repr=False)
    api_base: str | None = None
    note: str | None = None
    refused: str | None = None


def declared_provider(model: str) -> str:
    return model.split("/", 1)[0].lower() if "/" in model else ""


def refusal_by_name(model: str) -> str | None:
    """Why a model id alone is refused, before litellm is asked anything about it."""
    if re.search(r"(?i)[a-z][a-z0-9+.-]*:/|//|\\", model):
        return (
            f"{model} has a URL in its model id; name the server in api_base, where the "
            "install decides what key it gets"
        )
    if declared_provider(model) in INTERACTIVE:
        return f"{model} needs an interactive login, which a gateway cannot do"
    return None


def route(
    model: str,
    served_by: str | None,
    api_base: str | None,
    providers: Providers,
    env_has_key: bool = False,
    litellm_overrides_key: bool = False,
) -> Route:
    """Decide the key for one call.

    served_by: the provider litellm resolves `model` (with `api_base`) to, None if it cannot.
    env_has_key: whether the environment holds a key litellm would use for that provider
    (only to tell the room a key was withheld).
    litellm_overrides_key: whether litellm, given PLACEHOLDER_KEY, would still pick a key of
    its own (some endpoint-detection branches read the environment whatever they are given).
    """
    if reason := refusal_by_name(model):
        return Route(refused=reason)
    family = FAMILY.get(served_by or "", served_by or "")
    configured = providers.get(family) if family else None
    if not api_base and served_by in LOOPBACK_DEFAULT:
        api_base = LOOPBACK_DEFAULT[served_by]  # judged as the address it really is
    if not api_base:
        return Route(api_key=configured.api_key if configured else None)
    try:
        base = normalise_endpoint(api_base)
    except EndpointError as exc:
        return Route(refused=f"{model} was not called: its api_base {exc}")
    if served_by is None:
        return Route(refused=f"{model} was not called: litellm does not know its provider")
    if configured is not None and (listed := configured.endpoint(base)) is not None:
        key = configured.api_key if listed.api_key is None else listed.api_key
        return Route(api_key=key or PLACEHOLDER_KEY, api_base=base)
    advice = f"an admin can add it under [providers.{family}] endpoints"
    if served_by not in KEYLESS_OK or litellm_overrides_key:
        return Route(
            refused=f"{model} was not sent to {base}: this install's config does not list "
            f"that endpoint for {family}, and litellm would send {family} credentials of its "
            f"own (environment, token files) there; {advice}"
        )
    withheld = bool(configured and configured.api_key) or env_has_key
    note = (
        f"{model} was sent to {base} without a key: this install's config does not list "
        f"that endpoint for {family}; {advice}"
        if withheld
        else None
    )
    return Route(api_key=PLACEHOLDER_KEY, api_base=base, note=note)


def redact(text: str, secrets: list[str]) -> str:
    """Text with every known secret masked, longest first (a key inside another stays hidden)."""
    for secret in sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text
