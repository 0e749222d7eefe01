"""Configuration: a TOML file plus POTLUCK_* environment overrides.

Secrets (API keys, bot tokens) come only from here, never from recipes, and are kept out of
repr() so a logged Config shows no key.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.models.keys import (
    PROVIDER_NAME,
    Endpoint,
    EndpointError,
    Provider,
    merge_secrets,
    normalise_endpoint,
)
from runtime.sandbox.policy import MIN_MEMORY, Ceilings, default_cpus, format_size, parse_size


class ConfigError(ValueError):
    pass


def default_home() -> Path:
    return Path(os.environ.get("POTLUCK_HOME", Path.home() / ".potluck"))


@dataclass(frozen=True)
class SandboxSettings:
    """[sandbox]: where the sandbox broker listens, and the most any recipe may get."""

    broker: Path | None = None  # a running broker's socket; None: the gateway starts its own
    ceilings: Ceilings = field(default_factory=lambda: Ceilings(cpus=default_cpus()))


@dataclass(frozen=True)
class ModelSettings:
    """[models]: the install's better model, used where a recipe's models are unavailable
    and before the embedded one (`potluck init` writes it when it finds a local model server
    or an API key). Its endpoint gets a key only if [providers.<name>] endpoints lists it."""

    fallback: str | None = None  # a litellm model id, e.g. "openai/llama3.2"
    api_base: str | None = None  # its OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1


@dataclass
class Config:
    home: Path
    database_url: str
    key_file: Path
    admins: list[str] = field(default_factory=list)
    allowed_users: list[str] = field(default_factory=list)
    allowed_rooms: list[str] = field(default_factory=list)
    relays: list[str] = field(default_factory=list)
    web_host: str = "127.0.0.1"
    web_port: int = 8737
    default_recipe: str = "solo"
    shutdown_grace_s: float = 10.0  # SIGTERM: how long running turns may finish
    # Spend limits over a period ([budgets]): period = day | week | month (UTC calendar),
    # room_usd / user_usd / room_tokens / user_tokens; 0 or absent means no limit.
    budgets: dict[str, Any] = field(default_factory=dict)
    # The most one session may spend, whatever its recipe asks ([budgets] session_usd,
    # session_tokens): a recipe from a stranger could otherwise ask for $1000 a session.
    session_ceiling: SessionCeiling = field(default_factory=lambda: SessionCeiling())
    # Per-platform settings ([matrix], [telegram], [discord]); tokens and passwords in them
    # are secrets and are kept out of repr() like the rest.
    platforms: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # API keys by provider and the endpoints each key may also go to ([providers.<name>],
    # with [secrets] folded in): the only place a model call's key comes from.
    providers: dict[str, Provider] = field(default_factory=dict, repr=False)
    sandbox: SandboxSettings = field(default_factory=lambda: SandboxSettings())
    models: ModelSettings = field(default_factory=ModelSettings)
    # [records] judge: the model that labels whether agents challenged the person (track
    # records' challenge rate); empty, the default, means no judge and no such figure.
    judge: str = ""

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"

    @property
    def install_id(self) -> str:
        """Labels this install's sandboxes, so two gateways on one engine never collide."""
        import hashlib

        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:10]


TEMPLATE = """\
# Potluck configuration. Secrets may live here (this file is mode 0600) or in the
# environment; they never go into recipes.

[store]
# SQLite by default; for larger installs: "postgresql://user@host/potluck"
database_url = "sqlite:///{db}"

[gateway]
key_file = "{key}"
# Closed by default: list who may talk to the bot and who may change a room's recipe,
# as platform ids, e.g. "matrix:@you:example.org", "telegram:123456", "discord:987654".
admins = []
allowed_users = []
allowed_rooms = []

[web]
host = "127.0.0.1"
port = 8737

[receipts]
# Relays receive events only from rooms that opt in.
relays = []

# [matrix]
# homeserver = "https://matrix.example.org"
# user_id = "@potluck:example.org"
# password = "..."          (or access_token; or POTLUCK_MATRIX_PASSWORD in the environment)

# [telegram]
# token = "..."             (from @BotFather; or POTLUCK_TELEGRAM_TOKEN in the environment)

# [discord]
# token = "..."             (Developer Portal → Bot; turn on MESSAGE CONTENT INTENT there;
#                            or POTLUCK_DISCORD_TOKEN in the environment)

[budgets]
# Spend limits per room and per person over a period (day | week | month, UTC), checked
# before every model call. Leave out or 0 for none.
# period = "day"
# room_usd = 1.00
# user_usd = 0.50
# The most one session may spend whatever its recipe's `limits:` ask (a recipe asking for
# more, or for no cost limit, is capped and the room told). Defaults:
# session_usd = 2.00
# session_tokens = 400000

# API keys, by provider (litellm's names: openai, anthropic, gemini, groq, ...). A key goes
# only to its provider's own endpoint, or to the endpoints listed here: never to an api_base
# a recipe names (those calls carry no key, and the room is told why). The provider's usual
# environment variable (OPENAI_API_KEY) is used by litellm for its own endpoint only.
# [providers.openai]
# api_key = "sk-..."  # or POTLUCK_PROVIDERS_OPENAI_API_KEY
# endpoints = [       # or POTLUCK_PROVIDERS_OPENAI_ENDPOINTS="url,url"
#   "https://llm-proxy.example.org/v1",                    # gets api_key above
#   {{ url = "http://127.0.0.1:8080/v1", api_key = "" }},     # a local server: no key
#   {{ url = "http://10.0.0.5:8000/v1", api_key = "..." }},  # its own key
# ]

# A better model than the tiny embedded one, for recipes whose models are unavailable and
# wherever a recipe would use the embedded model. `potluck init` writes this section when it
# finds a local model server (Ollama, llama.cpp, LM Studio, vLLM) or an API key.
# [models]
# fallback = "openai/llama3.2:latest"       (or POTLUCK_MODELS_FALLBACK)
# api_base = "http://127.0.0.1:11434/v1"    (or POTLUCK_MODELS_API_BASE; list it under
#                                            [providers.openai] endpoints to say its key)

[records]
# Track records can say how often a recipe's agents challenged the person rather than agreed,
# as judged by a model you name (any litellm id; it reads the exchanges' text). Off unless set.
# judge = "openai/gpt-4o-mini"

[sandbox]
# Agents' tools run in sandboxes made by a separate broker process, the only one that talks
# to the Docker engine. Unset, the gateway starts its own broker; a home server runs it as a
# service (deploy/) and names its socket here:
# broker = "/run/potluck/broker.sock"
# The most any recipe gets; a recipe asking for more is capped and told. Each key can also
# be set as POTLUCK_SANDBOX_<KEY>, e.g. POTLUCK_SANDBOX_MEMORY=2g. These bind the broker
# that reads them (the gateway's own, or the service's config).
# memory = "1g"
# cpus = 2                 (at most this machine's CPUs)
# pids = 256
# exec_timeout_s = 120
# workspace = "256m"       (per room; a hard cap where loop devices are available)
# idle_s = 600             (an unused sandbox is stopped after this; its files stay)
# running = 8              (containers at once, all rooms; the least recently used stops)
# image = "potluck-sandbox:default"

[secrets]
# The older form, still read: <provider>_api_key = "...", e.g. openai_api_key = "..." is
# [providers.openai] api_key. Names are case-insensitive; one key written twice is fine,
# two different keys for one provider are an error.
"""


def _list(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{name} must be a list of strings")


def load_config(home: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read home/config.toml (absent is fine: defaults), then apply POTLUCK_* overrides."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("POTLUCK_HOME", home or default_home()))
    path = home / "config.toml"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{path}: {exc}; fix the line or delete the file and run `potluck init`"
            ) from None
    store, gateway = data.get("store", {}), data.get("gateway", {})
    web, receipts = data.get("web", {}), data.get("receipts", {})
    secrets = {str(k): str(v) for k, v in data.get("secrets", {}).items()}
    try:
        config = Config(
            home=home,
            database_url=env.get("POTLUCK_DATABASE_URL")
            or store.get("database_url", f"sqlite:///{home / 'potluck.db'}"),
            key_file=Path(
                env.get("POTLUCK_KEY_FILE") or gateway.get("key_file") or home / "gateway.key"
            ),
            admins=_list(env.get("POTLUCK_ADMINS", gateway.get("admins", [])), "admins"),
            allowed_users=_list(
                env.get("POTLUCK_ALLOWED_USERS", gateway.get("allowed_users", [])), "allowed_users"
            ),
            allowed_rooms=_list(
                env.get("POTLUCK_ALLOWED_ROOMS", gateway.get("allowed_rooms", [])), "allowed_rooms"
            ),
            relays=_list(env.get("POTLUCK_RELAYS", receipts.get("relays", [])), "relays"),
            web_host=env.get("POTLUCK_WEB_HOST", web.get("host", "127.0.0.1")),
            web_port=int(env.get("POTLUCK_WEB_PORT", web.get("port", 8737))),
            default_recipe=env.get("POTLUCK_DEFAULT_RECIPE", gateway.get("default_recipe", "solo")),
            shutdown_grace_s=float(
                env.get("POTLUCK_SHUTDOWN_GRACE_S", gateway.get("shutdown_grace_s", 10.0))
            ),
            budgets=_budgets(data.get("budgets", {}), env),
            session_ceiling=_session_ceiling(data.get("budgets", {}), env),
            platforms=_platforms(data, env),
            secrets=secrets,
            providers=_providers(data, secrets, env),
            sandbox=_sandbox(data.get("sandbox", {}), env),
            models=_models(data.get("models", {}), env),
            judge=_judge(data.get("records", {}), env),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _judge(section: Any, env: dict[str, str]) -> str:
    """[records] judge, or POTLUCK_RECORDS_JUDGE."""
    if not isinstance(section, dict) or set(section) - {"judge"}:
        raise ConfigError("[records] takes one key: judge (a model id, e.g. openai/gpt-4o-mini)")
    judge = env.get("POTLUCK_RECORDS_JUDGE", section.get("judge", ""))
    if not isinstance(judge, str) or len(judge) > 255 or any(c.isspace() for c in judge):
        raise ConfigError(f"[records] judge must be a model id, not {judge!r}")
    return judge


BUDGET_KEYS = ("room_usd", "user_usd", "room_tokens", "user_tokens")
SESSION_KEYS = ("session_usd", "session_tokens")


@dataclass(frozen=True)
class SessionCeiling:
    """The install's ceiling on a recipe's own session limits (`limits:` in a recipe)."""

    usd: float = 2.0
    tokens: int = 400_000


def _budget_figure(section: dict[str, Any], env: dict[str, str], key: str) -> float | None:
    """One [budgets] figure (or POTLUCK_BUDGET_<KEY>): a finite number, or None if unset."""
    raw = env.get(f"POTLUCK_BUDGET_{key.upper()}", section.get(key))
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"[budgets] {key} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"[budgets] {key} must be a finite number, not {raw!r}")
    return value


def _session_ceiling(section: dict[str, Any], env: dict[str, str]) -> SessionCeiling:
    found: dict[str, float] = {}
    for key in SESSION_KEYS:
        value = _budget_figure(section, env, key)
        if value is None:
            continue
        if value <= 0:
            raise ConfigError(f"[budgets] {key} must be above 0 (it caps every session)")
        found[key] = value
    default = SessionCeiling()
    return SessionCeiling(
        usd=found.get("session_usd", default.usd),
        tokens=int(found.get("session_tokens", default.tokens)),
    )


def _budgets(section: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """[budgets], each key overridable as POTLUCK_BUDGET_<KEY>; checked here, not at use."""
    found: dict[str, Any] = {}
    period = env.get("POTLUCK_BUDGET_PERIOD", section.get("period", "day"))
    if period not in ("day", "week", "month"):
        raise ConfigError(f"[budgets] period must be day, week or month, not {period!r}")
    for key in BUDGET_KEYS:
        value = _budget_figure(section, env, key)
        if value is None:
            continue
        if value < 0:
            raise ConfigError(f"[budgets] {key} cannot be negative")
        if value:
            found[key] = value
    unknown = set(section) - {"period", *BUDGET_KEYS, *SESSION_KEYS}
    if unknown:
        known = ", ".join((*BUDGET_KEYS, *SESSION_KEYS))
        raise ConfigError(f"[budgets] has unknown keys {sorted(unknown)}; use period, {known}")
    return {"period": period, **found} if found else {}


SANDBOX_KEYS = (
    "broker",
    "image",
    "memory",
    "cpus",
    "pids",
    "exec_timeout_s",
    "workspace",
    "idle_s",
    "running",
)
IMAGE = r"^[a-z0-9][a-z0-9._/-]*(?::[A-Za-z0-9._-]+)?$"


def _sandbox(section: Any, env: dict[str, str]) -> SandboxSettings:
    """[sandbox], each key overridable as POTLUCK_SANDBOX_<KEY>; checked here, not at use."""
    import re

    if not isinstance(section, dict):
        raise ConfigError("[sandbox] must be a table")
    unknown = set(section) - set(SANDBOX_KEYS)
    if unknown:
        raise ConfigError(
            f"[sandbox] has unknown keys {sorted(unknown)}; use {', '.join(SANDBOX_KEYS)}"
        )
    values = {key: section[key] for key in SANDBOX_KEYS if key in section}
    for key in SANDBOX_KEYS:
        if (value := env.get(f"POTLUCK_SANDBOX_{key.upper()}")) not in (None, ""):
            values[key] = value

    def number(key: str, kind: type, low: float, high: float, unit: str = "") -> Any:
        raw = values[key]
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = kind(raw) if kind is float or isinstance(raw, int) else kind(str(raw), 10)
        except (TypeError, ValueError):
            raise ConfigError(f"[sandbox] {key} must be a number, not {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"[sandbox] {key} must be between {low:g} and {high:.0f}{unit}")
        return value

    def size(key: str, low: int) -> int:
        try:
            value = parse_size(str(values[key]))
        except ValueError:
            raise ConfigError(
                f"[sandbox] {key} must be a size such as 512m or 2g, not {values[key]!r}"
            ) from None
        if value < low:
            raise ConfigError(f"[sandbox] {key} must be at least {format_size(low)}")
        return value

    defaults = SandboxSettings().ceilings
    found: dict[str, Any] = {}
    if "image" in values:
        if not isinstance(values["image"], str) or not re.fullmatch(IMAGE, values["image"]):
            raise ConfigError(f"[sandbox] image must be an image name, not {values['image']!r}")
        found["image"] = values["image"]
    if "memory" in values:
        found["memory_bytes"] = size("memory", MIN_MEMORY)
    if "workspace" in values:
        found["workspace_bytes"] = size("workspace", 16 * 1024**2)
    if "cpus" in values:
        found["cpus"] = number("cpus", float, 0.1, 1024)
    if "pids" in values:
        found["pids"] = number("pids", int, 16, 1_000_000)
    if "exec_timeout_s" in values:
        found["exec_timeout_s"] = number("exec_timeout_s", int, 1, 86_400, " seconds")
    if "idle_s" in values:
        found["idle_s"] = number("idle_s", float, 10, 7 * 86_400, " seconds")
    if "running" in values:
        found["running"] = number("running", int, 1, 1000, " containers")
    broker = values.get("broker")
    if broker is not None and (not isinstance(broker, str) or not broker.startswith("/")):
        raise ConfigError(f"[sandbox] broker must be the absolute path of a socket, not {broker!r}")
    return SandboxSettings(
        broker=Path(broker) if broker else None,
        ceilings=Ceilings(**{**defaults.__dict__, **found}),
    )


MODEL_KEYS = ("fallback", "api_base")


def _models(section: Any, env: dict[str, str]) -> ModelSettings:
    """[models], each key overridable as POTLUCK_MODELS_<KEY>; checked here, not at use."""
    import re

    from runtime.recipes.schema import MODEL_ID

    if not isinstance(section, dict):
        raise ConfigError("[models] must be a table")
    unknown = set(section) - set(MODEL_KEYS)
    if unknown:
        raise ConfigError(f"[models] has unknown keys {sorted(unknown)}; use fallback, api_base")
    values = {key: section.get(key) for key in MODEL_KEYS}
    for key in MODEL_KEYS:
        if (value := env.get(f"POTLUCK_MODELS_{key.upper()}")) not in (None, ""):
            values[key] = value
    fallback, api_base = values["fallback"], values["api_base"]
    if fallback is not None and (not isinstance(fallback, str) or not re.match(MODEL_ID, fallback)):
        raise ConfigError(
            f"[models] fallback must be a model id such as openai/llama3.2, not {fallback!r}"
        )
    if api_base is not None:
        if not isinstance(api_base, str):
            raise ConfigError("[models] api_base must be a URL")
        try:
            api_base = normalise_endpoint(api_base)
        except EndpointError as exc:
            raise ConfigError(f"[models] api_base: {exc}") from None
        if fallback is None:
            raise ConfigError("[models] api_base needs fallback: the model to ask there")
    return ModelSettings(fallback or None, api_base)


PLATFORM_KEYS = {
    "matrix": ("homeserver", "user_id", "password", "access_token", "device_id"),
    "telegram": ("token", "base_url", "base_file_url", "webhook_url", "webhook_listen"),
    "discord": ("token", "api_base"),
}


def _platforms(data: dict[str, Any], env: dict[str, str]) -> dict[str, dict[str, str]]:
    """[matrix] etc. from the file, each key overridable as POTLUCK_MATRIX_<KEY>."""
    found: dict[str, dict[str, str]] = {}
    for platform, keys in PLATFORM_KEYS.items():
        section = data.get(platform, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{platform}] must be a table")
        values = {k: str(v) for k, v in section.items() if k in keys}
        for key in keys:
            if value := env.get(f"POTLUCK_{platform.upper()}_{key.upper()}"):
                values[key] = value
        if values:
            found[platform] = values
    return found


PROVIDER_KEYS = ("api_key", "endpoints")


def _providers(
    data: dict[str, Any], secrets: dict[str, str], env: dict[str, str]
) -> dict[str, Provider]:
    """[providers.<name>] tables, then [secrets] folded in (conflicts refused), then
    POTLUCK_PROVIDERS_<NAME>_API_KEY / _ENDPOINTS, which replace what the file says."""
    section = data.get("providers", {})
    if not isinstance(section, dict):
        raise ConfigError("[providers] must hold tables, e.g. [providers.openai]")
    found: dict[str, Provider] = {}
    spelled: dict[str, str] = {}
    for raw_name, table in section.items():
        name = str(raw_name).lower()
        if not PROVIDER_NAME.match(name):
            raise ConfigError(
                f"[providers.{raw_name}]: a provider is named as litellm names it "
                "(openai, anthropic, gemini, ...)"
            )
        if name in spelled:
            raise ConfigError(
                f"[providers.{spelled[name]}] and [providers.{raw_name}] are the same provider; "
                "keep one"
            )
        spelled[name] = str(raw_name)
        if not isinstance(table, dict):
            raise ConfigError(f"[providers.{raw_name}] must be a table with api_key, endpoints")
        unknown = set(table) - set(PROVIDER_KEYS)
        if unknown:
            raise ConfigError(
                f"[providers.{raw_name}] has unknown keys {sorted(unknown)}; use api_key, endpoints"
            )
        api_key = table.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigError(f"[providers.{raw_name}] api_key must be a string")
        endpoints = _endpoints(table.get("endpoints", []), f"[providers.{raw_name}] endpoints")
        found[name] = Provider(api_key=api_key or None, endpoints=endpoints)
    try:
        found = merge_secrets(found, secrets)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prefix = "POTLUCK_PROVIDERS_"
    for variable, value in env.items():
        if not variable.startswith(prefix):
            continue
        rest = variable.removeprefix(prefix)
        for suffix in ("_API_KEY", "_ENDPOINTS"):
            if rest.endswith(suffix) and rest != suffix.lstrip("_"):
                name = rest.removesuffix(suffix).lower()
                break
        else:
            raise ConfigError(
                f"{variable}: name it POTLUCK_PROVIDERS_<NAME>_API_KEY or "
                "POTLUCK_PROVIDERS_<NAME>_ENDPOINTS"
            )
        if not PROVIDER_NAME.match(name):
            raise ConfigError(f"{variable}: {name!r} is not a provider name")
        current = found.get(name, Provider())
        if suffix == "_API_KEY":
            found[name] = Provider(api_key=value or None, endpoints=current.endpoints)
        else:
            endpoints = _endpoints(_list(value, variable), variable)
            found[name] = Provider(api_key=current.api_key, endpoints=endpoints)
    return found


def _endpoints(value: Any, where: str) -> tuple[Endpoint, ...]:
    """Each entry a URL (it gets the provider's key) or {url, api_key} (its own key; "" for
    none), checked and normalised here so a typo fails at start, not at a call."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of URLs or {{ url = ..., api_key = ... }}")
    found: dict[str, Endpoint] = {}
    for entry in value:
        if isinstance(entry, str):
            url, api_key = entry, None
        elif isinstance(entry, dict) and set(entry) <= {"url", "api_key"} and "url" in entry:
            url, api_key = entry["url"], entry.get("api_key")
            if not isinstance(url, str) or not (api_key is None or isinstance(api_key, str)):
                raise ConfigError(f"{where}: url and api_key must be strings")
        else:
            raise ConfigError(
                f"{where}: each entry is a URL or {{ url = ..., api_key = ... }}, not {entry!r}"
            )
        try:
            normal = normalise_endpoint(url)
        except EndpointError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        endpoint = Endpoint(normal, api_key)
        if normal in found and found[normal] != endpoint:
            raise ConfigError(f"{where}: {normal} is listed twice with different keys; keep one")
        found[normal] = endpoint
    return tuple(found.values())


def make_home(home: Path) -> None:
    """The home directory, mode 0700: it holds the key, the store and the tokens."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)


def loose_modes(config: Config) -> list[tuple[Path, int, int]]:
    """(path, its mode, the mode it should have) for the home (0700) and each private file
    others can reach (0600): every file directly in the home, and the key and SQLite store
    wherever they are configured. Symbolic links are not followed."""
    import stat

    from .store.db import sqlite_file

    found: list[tuple[Path, int, int]] = []
    candidates: list[Path] = []
    if config.home.is_dir():
        mode = stat.S_IMODE(config.home.lstat().st_mode)
        if mode & 0o077:
            found.append((config.home, mode, 0o700))
        candidates += sorted(config.home.iterdir())
    store = sqlite_file(config.database_url)
    if store is not None:
        candidates += [Path(f"{store}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
    candidates.append(config.key_file)
    seen: set[Path] = set()
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        try:
            info = path.lstat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and mode & 0o077:
            found.append((path, mode, mode & 0o700 or 0o600))
    return found


def tighten_modes(config: Config) -> list[str]:
    """Make the home 0700 and its files 0600 (as `potluck init` does on an existing home);
    returns what changed, and what could not be, in words."""
    changes = []
    for path, mode, wanted in loose_modes(config):
        try:
            path.chmod(wanted)
        except OSError as exc:
            changes.append(f"{path}: mode {mode:o}, could not change it ({exc.strerror})")
        else:
            changes.append(f"{path}: mode {mode:o} → {wanted:o}")
    return changes


def write_default_config(home: Path) -> Path:
    """Write config.toml with mode 0600 from the first byte (no window where it is readable)."""
    make_home(home)
    path = home / "config.toml"
    text = TEMPLATE.format(db=home / "potluck.db", key=home / "gateway.key")
    write_private(path, text.encode())
    return path


def add_models_section(path: Path, fallback: str, api_base: str | None) -> str:
    """Append [models] to an existing config (mode kept), and list api_base under
    [providers.openai] endpoints with no key, unless that table exists (then say how).
    Returns what was done, in words; the file is checked to load before it is replaced."""
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    if "models" in data:
        raise ConfigError(f"{path} already has a [models] section; edit it there")
    quoted = json.dumps  # a TOML basic string: quotes and backslashes escaped, never raw
    added = f"\n[models]\nfallback = {quoted(fallback)}\n"
    said = f"[models] fallback = {fallback}"
    if api_base:
        added += f"api_base = {quoted(api_base)}\n"
        said += f" at {api_base}"
        if "openai" not in data.get("providers", {}):
            added += (
                "\n[providers.openai]\n"
                "# the local server above gets no key; list others with their own\n"
                f'endpoints = [{{ url = {quoted(api_base)}, api_key = "" }}]\n'
            )
        else:
            said += (
                f'; add {{ url = "{api_base}", api_key = "" }} to [providers.openai] endpoints '
                "so it is not told a key was withheld"
            )
    new = text.rstrip("\n") + "\n" + added
    try:  # what the file will say is exactly what was meant, or nothing is written
        reread = _models(tomllib.loads(new).get("models", {}), {})
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise ConfigError(f"[models] not written: {exc}") from None
    if (reread.fallback, reread.api_base) != (fallback, api_base):
        raise ConfigError("[models] not written: the values did not read back as given")
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    write_private(temporary, new.encode())
    temporary.replace(path)
    return said


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
