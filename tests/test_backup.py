"""`potluck backup` / `restore`: a round trip taken while a conversation streams, on SQLite
and PostgreSQL; damaged archives, existing stores and a running gateway are refused."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.base import Incoming
from gateway.backup import BackupError, backup, restore, serving_lock
from gateway.config import load_config
from gateway.library import Library
from gateway.receipts.keys import KeyPair, read_key_file, write_key_file
from gateway.receipts.ledger import Ledger
from gateway.service import Gateway
from gateway.store.db import Store
from gateway.store.models import Message, Session
from runtime.models.client import Models
from runtime.recipes import validate_data

from .conftest import ECHO_DUO, until
from .test_gateway_core import MemoryPlatform

SLOW = {
    **ECHO_DUO,
    "name": "slow",
    "title": "Slow",
    "agents": [{"name": "slowpoke", "model": "scripted/slow", "persona": "You ramble."}],
}


def _home(path: Path, url: str) -> dict[str, str]:
    path.mkdir(exist_ok=True)
    return {"POTLUCK_HOME": str(path), "POTLUCK_DATABASE_URL": url, "POTLUCK_ALLOWED_ROOMS": "*"}


async def test_a_backup_taken_mid_conversation_restores_whole(
    tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> None:
    env = _home(tmp_path / "a", database_url)
    write_key_file(tmp_path / "a" / "gateway.key", KeyPair.generate())
    (tmp_path / "a" / "config.toml").write_text('[gateway]\ndefault_recipe = "slow"\n')
    config = load_config(env=env)
    store = Store(database_url)
    library = Library(store)
    library.save(validate_data(SLOW))
    gateway = Gateway(
        config,
        store,
        library,
        Ledger(store, read_key_file(config.key_file)),
        Models(),
        None,
        "slow",
    )
    platform = MemoryPlatform()
    await gateway.add_adapter(platform)
    archive = tmp_path / "potluck.backup"
    try:
        await platform.on_incoming(Incoming("mem", "r1", "u", "ann", "tell me", "e1", True))
        await until(
            lambda: any("tick3" in t for _, t, _ in platform.edits),
            what=lambda: (platform.edits[-3:], [m.text for m in platform.sent]),
        )
        manifest = await asyncio.to_thread(backup, config, archive)  # while it streams
        assert gateway.rooms.find("mem:r1").running is not None  # still mid-turn
        await until(lambda: any("tick199" in t for t in platform.texts.values()), timeout=30)
    finally:
        await gateway.close()
        store.close()
    assert archive.stat().st_mode & 0o777 == 0o600
    assert set(manifest.files) >= {f"store.{manifest.database}", "gateway.key", "home/config.toml"}

    target_url = database_url
    if database_url.startswith("postgresql"):  # restore into a second, empty database
        import psycopg

        base = request.getfixturevalue("postgres_url")
        target_url = base.rsplit("/", 1)[0] + f"/restored{os.getpid()}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "restored{os.getpid()}"')
            conn.execute(f'CREATE DATABASE "restored{os.getpid()}"')
    else:
        target_url = f"sqlite:///{tmp_path / 'b' / 'potluck.db'}"
    restored_config = load_config(env=_home(tmp_path / "b", target_url))
    restore(restored_config, archive)
    assert (tmp_path / "b" / "gateway.key").read_bytes() == config.key_file.read_bytes()
    assert (tmp_path / "b" / "gateway.key").stat().st_mode & 0o777 == 0o600
    assert "default_recipe" in (tmp_path / "b" / "config.toml").read_text()
    restored = Store(target_url)
    try:
        with restored.session() as db:
            assert db.scalar(select(Message.text).where(Message.direction == "in")) == "tell me"
            sessions = db.scalars(select(Session.id)).all()
        ledger = Ledger(restored, read_key_file(restored_config.key_file))
        assert sessions and all(ledger.verify_session(s).ok for s in sessions)
        assert ledger.count() >= 2  # the session's opening and the person's message, signed
    finally:
        restored.close()


def test_damaged_archives_existing_stores_and_a_running_gateway_are_refused(
    tmp_path: Path,
) -> None:
    env = _home(tmp_path / "a", f"sqlite:///{tmp_path / 'a' / 'potluck.db'}")
    write_key_file(tmp_path / "a" / "gateway.key", KeyPair.generate())
    config = load_config(env=env)
    Store(config.database_url).close()
    archive = tmp_path / "a.backup"
    backup(config, archive)

    with pytest.raises(BackupError, match="exists; restore with --force"):
        restore(config, archive)  # onto itself: the store is there
    with serving_lock(config), pytest.raises(BackupError, match="stop it, then restore"):
        restore(config, archive, force=True)
    restore(config, archive, force=True)
    assert list((tmp_path / "a").glob("potluck.db.before-restore-*"))  # kept aside

    raw = bytearray(gzip.decompress(archive.read_bytes()))
    at = raw.index(b"SQLite format 3") + 200
    raw[at] ^= 0xFF  # one byte inside the store
    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(gzip.compress(bytes(raw)))
    other = load_config(env=_home(tmp_path / "c", f"sqlite:///{tmp_path / 'c' / 'p.db'}"))
    with pytest.raises(BackupError, match=r"store\.sqlite is missing or damaged"):
        restore(other, damaged)
    assert not (tmp_path / "c" / "p.db").exists()  # nothing restored
    (tmp_path / "junk").write_bytes(b"not a backup")
    with pytest.raises(BackupError, match="not a Potluck backup"):
        restore(other, tmp_path / "junk")
