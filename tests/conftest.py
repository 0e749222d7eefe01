"""Shared fixtures: real servers (PostgreSQL) started on loopback for the session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

# CI replays the same examples every run (a red run must mean a regression); developers'
# runs explore new ones and keep what they find in .hypothesis/.
from hypothesis import settings as _hypothesis_settings

from runtime.sandbox.client import BrokerClient

from .support import (
    ROOT,
    BrokerProcess,
    NostrRelay,
    Person,
    Synapse,
    _pg_bin,
    _user_exists,
    engine,
    free_port,
    missing,
)

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


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


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    if not (ROOT / ".venv-synapse" / "bin" / "python").exists():
        missing("Synapse (`make test` installs it in .venv-synapse)")
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.configure()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Starts brokers for this test (settings are [sandbox] keys); stops and cleans them."""
    engine()
    made: list[BrokerProcess] = []

    def make(
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        grace_s: float = 5.0,
        **settings: str,
    ) -> BrokerProcess:
        home = tmp_path / f"home{len(made)}"
        broker = BrokerProcess(home, settings, {**os.environ, **(env or {})}, args)
        made.append(broker)
        return broker.start(grace_s)

    yield make
    for broker in made:
        broker.stop()
        broker.clean()


@pytest.fixture
async def people(synapse: Synapse) -> AsyncIterator[tuple[Person, Person, str]]:
    tag = uuid.uuid4().hex[:6]
    alice = await Person(synapse, synapse.register(f"alice{tag}")).login()
    bob = await Person(synapse, synapse.register(f"bob{tag}")).login()
    bot = synapse.register(f"potluck{tag}")
    yield alice, bob, bot
    await alice.close()
    await bob.close()


@pytest.fixture
async def sandboxes(brokers: Callable[..., BrokerProcess]) -> AsyncIterator[BrokerClient]:
    yield brokers().client()
