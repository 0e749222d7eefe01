"""Shared fixtures: real servers (PostgreSQL) started on loopback for the session."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Reference data from the specifications, kept in the repository (tests/data/README.md says
# where each file comes from); SHARED_VECTORS is the checked reference copy beside a checkout.
VECTORS = ROOT / "tests" / "data"
SHARED_VECTORS = ROOT.parent / "shared" / "vectors"
REQUIRE_REAL = bool(os.environ.get("CI")) or os.environ.get("POTLUCK_REQUIRE_SERVICES") == "1"

# CI replays the same examples every run (a red run must mean a regression); developers'
# runs explore new ones and keep what they find in .hypothesis/.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


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
    from gateway.config import load_config
    from gateway.serve import build

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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1, owned by an unprivileged user."""
    if url := os.environ.get("POTLUCK_TEST_POSTGRES_URL"):
        yield url
        return
    bindir = _pg_bin()
    if bindir is None:
        missing("PostgreSQL (initdb/pg_ctl)")
    data = Path(tempfile.mkdtemp(prefix="potluck-pg-"))
    port = free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(data, user=user)
        data.chmod(0o700)
        run_as = ["runuser", "-u", user, "--"]
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "potluck",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    log = data / "log"
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://potluck@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on both engines; PostgreSQL gets a fresh database per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    import psycopg

    name = f"t{time.time_ns()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def world(tmp_path: Path):
    """A store with the bundled recipes, a gateway key, a ledger and a web room."""
    from gateway.library import Library
    from gateway.receipts.keys import KeyPair
    from gateway.receipts.ledger import Ledger
    from gateway.store.db import Store
    from gateway.store.rooms import ensure_room, start_session, update_settings

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    library = Library(store)
    solo = next(s for s in library.sync_bundled() if s.recipe.name == "solo")
    keys = KeyPair.generate()
    ledger = Ledger(store, keys)
    room = ensure_room(store, "web", "kitchen")

    def session(**settings) -> str:
        if settings:
            update_settings(store, room, **settings)
        sid = start_session(store, room, solo.id)
        ledger.open(sid, "solo", solo.id)
        return sid

    yield store, ledger, session, solo
    store.close()


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


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator:
    relays: list[NostrRelay] = []

    def make(auth: bool = False) -> NostrRelay:
        if not Path(os.sys.executable).with_name("nostr-relay").exists():
            missing("nostr-relay")
        relay = NostrRelay(Path(tempfile.mkdtemp(dir=tmp_path)), auth=auth)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()


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


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    if not (ROOT / ".venv-synapse" / "bin" / "python").exists():
        missing("Synapse (`make test` installs it in .venv-synapse)")
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.configure()
    server.start()
    yield server
    server.stop()
