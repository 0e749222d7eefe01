"""`potluck doctor`: everything a home server needs, each with exactly what to do if not.

Checks are independent: one failing (say, no Docker engine) does not hide the others. Each
gives ok, warn (works, but weaker than it should be) or fail (something will not work).
"""

from __future__ import annotations

import asyncio
import shutil
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .config import Config

OK, WARN, FAIL = "ok", "warn", "fail"
ESSENTIAL_LIMITS = (
    "non-root user",
    "init out of the sandbox user's reach",
    "no capabilities",
    "no-new-privileges",
    "memory limit",
    "pids limit",
    "no network",
    "read-only root",
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {OK: "✓", WARN: "!", FAIL: "✗"}[self.status]
        return f"{mark} {self.name}: {self.detail}" + (f"\n    fix: {self.fix}" if self.fix else "")


def check_key(config: Config) -> Check:
    from .receipts.keys import read_key_file

    path = config.key_file
    if not path.exists():
        return Check("gateway key", FAIL, f"{path} is missing", "run `potluck init`")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            "gateway key", FAIL, f"{path} is mode {mode:o}: others can read it", f"chmod 600 {path}"
        )
    try:
        keys = read_key_file(path)
    except Exception as exc:  # any unreadable key is the same problem for the reader
        return Check(
            "gateway key", FAIL, f"{path} is unreadable: {exc}", "restore it from a backup"
        )
    return Check("gateway key", OK, f"{keys.npub} (mode 600)")


def check_config(config: Config) -> Check:
    from .config import loose_modes

    path = config.config_file
    loose = [(p, mode, wanted) for p, mode, wanted in loose_modes(config) if p != config.key_file]
    if loose:  # the key has its own check, which fails outright
        return Check(
            "config",
            WARN,
            "others can reach private files: "
            + "; ".join(f"{p} is mode {mode:o}" for p, mode, _ in loose),
            "potluck init (it makes them private), or "
            + "; ".join(f"chmod {wanted:o} {p}" for p, _, wanted in loose),
        )
    needs = {
        "matrix": ("homeserver", "user_id"),
        "telegram": ("token",),
        "discord": ("token",),
    }
    for platform, keys in needs.items():
        settings = config.platforms.get(platform)
        if settings is None:
            continue
        missing = [k for k in keys if not settings.get(k)]
        if platform == "matrix" and not (settings.get("password") or settings.get("access_token")):
            missing.append("password or access_token")
        if missing:
            return Check(
                "config",
                FAIL,
                f"[{platform}] lacks {', '.join(missing)}",
                f"add them to {path} or as POTLUCK_{platform.upper()}_<KEY>",
            )
    if not config.allowed_users and not config.allowed_rooms and config.platforms:
        return Check(
            "config",
            WARN,
            "no allowed_users or allowed_rooms: the bot ignores everyone on chat platforms",
            'list people in [gateway] allowed_users, e.g. ["matrix:@you:example.org"]',
        )
    platforms = ", ".join(sorted(config.platforms)) or "web room only"
    return Check("config", OK, f"valid ({platforms})")


def check_store(config: Config) -> Check:
    from .store.db import Store

    try:
        store = Store(config.database_url)  # connects and migrates to the newest schema
        store.close()
    except Exception as exc:
        return Check(
            "store",
            FAIL,
            f"{config.database_url.split('@')[-1]}: {exc.__class__.__name__}: {exc}",
            "check [store] database_url, and that the database server runs",
        )
    return Check("store", OK, f"{config.database_url.split('://')[0]} reachable, schema current")


def check_disk(config: Config) -> Check:
    config.home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(config.home).free
    gib = free / 1024**3
    if free < 200 * 1024**2:
        return Check("disk", FAIL, f"{gib:.2f} GiB free at {config.home}", "free some space")
    if free < 1024**3:
        return Check(
            "disk", WARN, f"{gib:.2f} GiB free at {config.home}", "keep 1 GiB or more free"
        )
    return Check("disk", OK, f"{gib:.1f} GiB free at {config.home}")


def check_web(config: Config) -> Check:
    import os

    if os.environ.get("POTLUCK_IN_CONTAINER") and config.web_host == "0.0.0.0":
        return Check(
            "web room",
            OK,
            f"port {config.web_port} inside the container; publish it on 127.0.0.1 only "
            "(deploy/compose.yaml does)",
        )
    if config.web_host in ("127.0.0.1", "localhost", "::1"):
        return Check("web room", OK, f"bound to {config.web_host}:{config.web_port} (this machine)")
    return Check(
        "web room",
        WARN,
        f"bound to {config.web_host}: reachable from the network (the token still guards it)",
        'put it behind a TLS reverse proxy, or set [web] host = "127.0.0.1"',
    )


def check_model() -> Check:
    from runtime.models.local import DEFAULT, LocalModelError, LocalModels, weights_path

    models = LocalModels()
    try:
        path = weights_path(models.spec(DEFAULT))
    except LocalModelError as exc:
        return Check("local model", FAIL, str(exc), "run `make run` or deploy/setup.sh run")
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        return Check(
            "local model", FAIL, "xllamacpp is not installed", "reinstall requirements.lock"
        )
    return Check("local model", OK, f"{DEFAULT} ({path.stat().st_size // 1024**2} MiB)")


async def check_better_model(config: Config) -> Check:
    """The install's fallback model answers; or, with none, what a better one could be."""
    from runtime.models.discover import discover, probe

    models = config.models
    if models.fallback and models.api_base:
        found = await probe("the [models] fallback server", models.api_base)
        name = models.fallback.split("/", 1)[-1]
        if found is None:
            return Check(
                "better model",
                FAIL,
                f"{models.fallback}: nothing answers at {models.api_base}; rooms use the "
                "embedded model meanwhile",
                "start that model server, or change [models] in config.toml",
            )
        if found.problem:
            return Check("better model", FAIL, f"{found.what}: {found.problem}", "see above")
        if name not in found.choices:
            return Check(
                "better model",
                WARN,
                f"{models.api_base} does not list {name} (it lists {', '.join(found.choices[:5])})",
                "load or pull that model there, or change [models] fallback",
            )
        return Check("better model", OK, f"{models.fallback} at {models.api_base} answers")
    if models.fallback:
        from runtime.models.client import Models

        reason = Models(providers=config.providers).unavailable(models.fallback, None)
        if reason:
            return Check("better model", FAIL, reason, "set the key, or change [models]")
        return Check("better model", OK, f"{models.fallback} (its key is set)")
    found = [f for f in await discover() if f.usable]
    if found:
        return Check(
            "better model",
            WARN,
            f"rooms use the tiny embedded model, but {found[0].what} offers {found[0].model}",
            "run `potluck init` to make it the default (or `potluck init --model NAME`)",
        )
    return Check(
        "better model",
        WARN,
        "only the tiny embedded model: fine for short questions, weak at anything else",
        "start a local model server (Ollama: `ollama pull llama3.2`; LM Studio; llama.cpp) "
        "or set an API key (OPENAI_API_KEY, ...), then run `potluck init`",
    )


async def check_engine(config: Config) -> list[Check]:
    """The sandbox broker, and through it the engine, the image and the limits in force.
    The gateway never talks to the engine itself, so neither does this check."""
    from runtime.sandbox import DEFAULT_IMAGE, SandboxError

    from .sandboxes import connect

    try:
        client = await connect(config)
    except SandboxError as exc:
        if config.sandbox.broker is not None:
            fix = (
                "start it: `systemctl start potluck-broker`, or the compose `broker` service; "
                "or remove [sandbox] broker and the gateway starts its own"
            )
        else:
            fix = "run `potluck sandbox broker` in a terminal to see why it stops"
        return [Check("sandbox broker", FAIL, f"{exc}: agents cannot run tools", fix)]
    try:
        return await _through_broker(client, DEFAULT_IMAGE)
    except SandboxError as exc:
        return [Check("sandbox broker", FAIL, str(exc), "see `potluck sandbox list`")]
    finally:
        await client.close()


async def _through_broker(client, default_image: str) -> list[Check]:  # type: ignore[no-untyped-def]
    health = await client.health()
    found = [Check("sandbox broker", OK, f"{client.socket_path} (install {health.install})")]
    if not health.engine_ok:
        found.append(
            Check(
                "docker engine",
                FAIL,
                f"the broker reaches none ({health.engine_error}): agents cannot run tools",
                "run deploy/engine.sh (installs docker.io and starts dockerd); a broker in a "
                "container needs /var/run/docker.sock mounted",
            )
        )
        return found
    found.append(Check("docker engine", OK, f"Docker {health.engine_version}, via the broker"))
    if not health.image_present:
        found.append(
            Check(
                "sandbox image",
                FAIL,
                f"{health.image} is not on the engine",
                "run `potluck sandbox build` (as root, on the engine's host)",
            )
        )
        return found
    if health.image == default_image and not health.image_current:
        found.append(
            Check(
                "sandbox image",
                FAIL,
                f"{health.image} is not built from this version's definition",
                "run `potluck sandbox build` (as root, on the engine's host)",
            )
        )
        return found
    found.append(Check("sandbox image", OK, health.image_current or health.image))
    ceilings = health.ceilings.as_dict()
    found.append(
        Check(
            "sandbox ceilings",
            OK,
            ", ".join(f"{k} {v}" for k, v in ceilings.items() if k not in ("image", "idle_s")),
        )
    )
    try:
        probe = await client.probe()
    except Exception as exc:
        found.append(
            Check("sandbox limits", FAIL, f"probe failed: {exc}", "see `potluck sandbox probe`")
        )
        return found
    lacking = [name for name in ESSENTIAL_LIMITS if name not in probe.enforced]
    if lacking:
        found.append(
            Check(
                "sandbox limits",
                FAIL,
                f"not enforced: {', '.join(lacking)}",
                "use a kernel with cgroups v2 and a stock dockerd; see `potluck sandbox probe`",
            )
        )
        return found
    weaker = [n for n in probe.missing if n not in ("storage_opt quota", "AppArmor")]
    detail = f"{len(probe.enforced)} limits in force"
    if weaker:
        found.append(
            Check(
                "sandbox limits",
                WARN,
                f"{detail}; not: {', '.join(weaker)}",
                "run the broker as root on the host for capped workspaces (loop devices): "
                "deploy/potluck-broker.service does",
            )
        )
    else:
        found.append(Check("sandbox limits", OK, detail))
    return found


async def check_platforms(config: Config) -> list[Check]:
    import aiohttp

    found = []
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        if telegram := config.platforms.get("telegram"):
            base = telegram.get("base_url", "https://api.telegram.org/bot")
            found.append(
                await _probe(
                    "telegram token",
                    http.get(f"{base}{telegram.get('token', '')}/getMe"),
                    lambda body: f"@{body['result']['username']}",
                    "copy the token from @BotFather into [telegram] token",
                )
            )
        if discord := config.platforms.get("discord"):
            base = discord.get("api_base", "https://discord.com/api/v10").rstrip("/")
            found.append(
                await _probe(
                    "discord token",
                    http.get(
                        f"{base}/users/@me",
                        headers={"Authorization": f"Bot {discord.get('token', '')}"},
                    ),
                    lambda body: body["username"],
                    "Developer Portal → Bot → Reset Token, into [discord] token",
                )
            )
        if matrix := config.platforms.get("matrix"):
            found.append(await _matrix(http, config, matrix))
    return found


async def _probe(name: str, request: Awaitable, describe: Callable[[dict], str], fix: str) -> Check:
    try:
        async with request as response:  # type: ignore[attr-defined]
            body = await response.json(content_type=None)
            if response.status == 200:
                return Check(name, OK, f"accepted ({describe(body)})")
            return Check(name, FAIL, f"refused: HTTP {response.status}", fix)
    except Exception as exc:
        return Check(name, FAIL, f"could not ask ({exc.__class__.__name__}: {exc})", fix)


async def _matrix(http, config: Config, matrix: dict[str, str]) -> Check:  # type: ignore[no-untyped-def]
    """Reachable, and the saved session or token still accepted (a password login would add
    a device, so it is not tried here)."""
    import json

    base = matrix.get("homeserver", "").rstrip("/")
    token = matrix.get("access_token")
    session = config.home / "matrix-session.json"
    if not token and session.exists():
        token = json.loads(session.read_text()).get("access_token")
    if not token:
        return await _probe(
            "matrix homeserver",
            http.get(f"{base}/_matrix/client/versions"),
            lambda body: "reachable; the password is tried at the first `potluck serve`",
            "check [matrix] homeserver",
        )
    return await _probe(
        "matrix login",
        http.get(
            f"{base}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {token}"},
        ),
        lambda body: body["user_id"],
        "log in again: delete matrix-session.json, or set a fresh [matrix] access_token",
    )


async def check_relays(config: Config) -> list[Check]:
    import websockets

    found = []
    for relay in config.relays:
        try:
            async with asyncio.timeout(10):
                async with websockets.connect(relay, open_timeout=10):
                    pass
            found.append(Check(f"relay {relay}", OK, "reachable"))
        except Exception as exc:
            found.append(
                Check(
                    f"relay {relay}",
                    WARN,
                    f"unreachable ({exc.__class__.__name__}); receipts wait and retry",
                    "check the URL in [receipts] relays, or remove it",
                )
            )
    return found


def check_recipes() -> Check:
    from runtime.recipes.files import BUNDLED_DIR, bundled_recipes

    found = bundled_recipes()
    if not found:
        return Check(
            "recipes",
            FAIL,
            f"no bundled recipes in {BUNDLED_DIR}",
            "set POTLUCK_RECIPES_DIR to the repository's recipes/ directory",
        )
    return Check("recipes", OK, f"{len(found)} bundled ({', '.join(r.name for _, r in found)})")


async def run(config: Config, sandbox: bool = True) -> list[Check]:
    sync = [check_config, check_key, check_store, check_disk, check_web]
    checks = [_guarded(name.__name__, lambda f=name: f(config)) for name in sync]
    checks += [_guarded("recipes", check_recipes), _guarded("local model", check_model)]
    groups = [check_platforms(config), check_relays(config), _listed(check_better_model(config))]
    if sandbox:
        groups.insert(0, check_engine(config))
    for group in groups:
        try:
            checks += await group
        except Exception as exc:  # a crashed check is a failed one, and the rest still run
            checks.append(Check("doctor", FAIL, f"a check crashed: {exc!r}", "report this"))
    return checks


async def _listed(check: Awaitable[Check]) -> list[Check]:
    return [await check]


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:
        return Check(
            name.removeprefix("check_"), FAIL, f"the check crashed: {exc!r}", "report this"
        )
