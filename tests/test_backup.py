"""`potluck backup` / `restore`: a round trip taken while a conversation streams, on SQLite
and PostgreSQL; damaged archives, existing stores and a running gateway are refused."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
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

from .capped import run_capped
from .support import ECHO_DUO, MemoryPlatform, until

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


# -- hostile and broken archives ------------------------------------------------------------


def craft(
    path: Path,
    members: list[tuple[str, bytes | None, bytes]],
    manifest: dict | bytes | None = None,
    **fields: object,
) -> Path:
    """A .tar.gz of (name, data, tar type) members; unless `manifest` is given, a manifest
    listing the regular members with their SHA-256 and size, `fields` merged into it."""
    if manifest is None:
        regular = [(n, d) for n, d, t in members if t == tarfile.REGTYPE and d is not None]
        manifest = {
            "format": 1,
            "created": "2026-01-01T00:00:00Z",
            "database": "sqlite",
            "files": {n: hashlib.sha256(d).hexdigest() for n, d in regular},
            "sizes": {n: len(d) for n, d in regular},
            **fields,
        }
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    with tarfile.open(path, "w:gz") as archive:
        for name, data, kind in [*members, ("manifest.json", body, tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o600
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "/etc/passwd"
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 5
            info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(data) if info.size else None)
    return path


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A home with a store, a key and a config: what a bad restore must leave untouched."""
    home = tmp_path / "home"
    config = load_config(env=_home(home, f"sqlite:///{home / 'potluck.db'}"))
    write_key_file(config.key_file, KeyPair.generate())
    (home / "config.toml").write_text("[gateway]\n")
    Store(config.database_url).close()
    with serving_lock(config):  # the lock file a restore takes is there already
        pass
    return home, snapshot(home)


def snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir()) if p.is_file()}


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POTLUCK_HOME": str(home)}
    env.pop("POTLUCK_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True
    )


KEY = (b"a" * 64) + b"\n"


def sqlite_bytes() -> bytes:
    """A small, sound SQLite database file."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x INTEGER)")
    data = db.serialize()
    db.close()
    return data


STORE = b"SQLite format 3\x00" + b"\x00" * 100


@pytest.mark.parametrize(
    ("members", "manifest", "needle"),
    [
        pytest.param(  # was: the store renamed aside, then a KeyError, and no store at all
            [("gateway.key", KEY, tarfile.REGTYPE)], None, "holds no store", id="no-store"
        ),
        pytest.param([], b"{not json", "manifest is not valid JSON", id="manifest-not-json"),
        pytest.param([], b"[1, 2]", "manifest is not a JSON object", id="manifest-a-list"),
        pytest.param([], b'{"format": 1}', "manifest lacks", id="manifest-missing-fields"),
        pytest.param(
            [],
            b'{"format": 1, "format": 2, "created": "x", "database": "sqlite", "files": {}}',
            "appears twice",
            id="manifest-duplicate-key",
        ),
        pytest.param(
            [("store.sqlite", STORE, tarfile.REGTYPE)],
            {"format": 1, "created": "x", "database": "sqlite", "files": ["store.sqlite"]},
            "manifest's files",
            id="manifest-files-a-list",
        ),
        pytest.param(
            [("store.sqlite", STORE, tarfile.REGTYPE)],
            {"format": 1, "created": "x", "database": "oracle", "files": {}},
            "database 'oracle'",
            id="manifest-unknown-database",
        ),
        pytest.param(
            [("store.sqlite", STORE, tarfile.REGTYPE)],
            {"format": 7, "created": "x", "database": "sqlite", "files": {}},
            "format 7",
            id="manifest-future-format",
        ),
        pytest.param(
            [("../../evil", b"x", tarfile.REGTYPE), ("store.sqlite", STORE, tarfile.REGTYPE)],
            None,
            "'../../evil' is not part of a Potluck backup",
            id="dot-dot",
        ),
        pytest.param(
            [("/tmp/evil-abs", b"x", tarfile.REGTYPE), ("store.sqlite", STORE, tarfile.REGTYPE)],
            None,
            "'/tmp/evil-abs' is not part of a Potluck backup",
            id="absolute",
        ),
        pytest.param(
            [("home/config.toml", None, tarfile.SYMTYPE), ("store.sqlite", STORE, tarfile.REGTYPE)],
            None,
            "home/config.toml is a link",
            id="symlink",
        ),
        pytest.param(
            [("gateway.key", None, tarfile.LNKTYPE), ("store.sqlite", STORE, tarfile.REGTYPE)],
            None,
            "gateway.key is a link",
            id="hardlink",
        ),
        pytest.param([("store.sqlite", None, tarfile.CHRTYPE)], None, "is a device", id="device"),
        pytest.param(
            [
                ("gateway.key", KEY, tarfile.REGTYPE),
                ("gateway.key", b"b" * 64 + b"\n", tarfile.REGTYPE),
                ("store.sqlite", STORE, tarfile.REGTYPE),
            ],
            None,
            "gateway.key appears twice",
            id="duplicate-member",
        ),
        pytest.param(
            [("gateway.key", KEY, tarfile.REGTYPE), ("store.sqlite", STORE, tarfile.REGTYPE)],
            {
                "format": 1,
                "created": "x",
                "database": "sqlite",
                "files": {"gateway.key": hashlib.sha256(KEY).hexdigest()},
            },
            "store.sqlite is not listed in the manifest",
            id="unlisted-member",
        ),
        pytest.param(
            [("gateway.key", KEY, tarfile.REGTYPE), ("store.sqlite", b"x" * 99, tarfile.REGTYPE)],
            None,
            "store.sqlite is not a SQLite database",
            id="not-sqlite",
        ),
        pytest.param(
            [("gateway.key", KEY, tarfile.REGTYPE), ("store.sqlite", STORE, tarfile.REGTYPE)],
            None,
            "store.sqlite fails SQLite's integrity check",
            id="corrupt-sqlite",
        ),
        pytest.param(
            [
                ("gateway.key", b"not a key\n", tarfile.REGTYPE),
                ("store.sqlite", sqlite_bytes(), tarfile.REGTYPE),
            ],
            None,
            "gateway.key does not hold a gateway key",
            id="not-a-key",
        ),
    ],
)
def test_a_bad_archive_is_refused_with_a_clear_error_and_touches_nothing(
    tmp_path: Path,
    installed: tuple[Path, dict[str, bytes]],
    members: list[tuple[str, bytes | None, bytes]],
    manifest: dict | bytes | None,
    needle: str,
) -> None:
    home, before = installed
    archive = craft(tmp_path / "bad.backup", members, manifest)
    done = cli(home, "restore", "--force", str(archive))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert "nothing was restored" in done.stderr
    assert snapshot(home) == before  # not a byte changed, nothing added or set aside
    assert not list(tmp_path.glob("evil*")) and not Path("/tmp/evil-abs").exists()


def test_sizes_and_truncation_are_caught_before_anything_is_replaced(
    tmp_path: Path, installed: tuple[Path, dict[str, bytes]]
) -> None:
    home, before = installed
    good = Path(tmp_path / "good.backup")
    config = load_config(env=_home(home, f"sqlite:///{home / 'potluck.db'}"))
    backup(config, good)
    members = {}
    with tarfile.open(good) as archive:
        for member in archive.getmembers():
            members[member.name] = archive.extractfile(member).read()  # type: ignore[union-attr]
    manifest = json.loads(members.pop("manifest.json"))
    assert manifest["sizes"]["store.sqlite"] == len(members["store.sqlite"])
    wrong = dict(manifest, sizes={**manifest["sizes"], "store.sqlite": 12})
    lying = craft(
        tmp_path / "lying.backup", [(n, d, tarfile.REGTYPE) for n, d in members.items()], wrong
    )
    done = cli(home, "restore", "--force", str(lying))
    assert done.returncode == 2 and "store.sqlite is" in done.stderr and "not 12" in done.stderr

    raw = good.read_bytes()
    cut = tmp_path / "cut.backup"
    cut.write_bytes(raw[: len(raw) // 2])
    done = cli(home, "restore", "--force", str(cut))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and "damaged" in done.stderr
    assert snapshot(home) == before
    assert not [p for p in home.iterdir() if "restore" in p.name]  # no partial files left

    done = cli(home, "restore", "--force", str(good))  # and the real one still restores
    assert done.returncode == 0, done.stderr
    assert (home / "potluck.db").read_bytes() == members["store.sqlite"]


def test_a_large_store_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    """Was: every member read whole (a 1 GiB member took 1.1 GB of RSS)."""
    size_mib = 600
    home = tmp_path / "big"
    config = load_config(env=_home(home, f"sqlite:///{home / 'potluck.db'}"))
    write_key_file(config.key_file, KeyPair.generate())
    Store(config.database_url).close()
    import sqlite3

    with sqlite3.connect(home / "potluck.db") as db:
        db.execute("CREATE TABLE ballast (blob BLOB)")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO ballast SELECT zeroblob(1048576) FROM n",
            (size_mib,),
        )
    store_bytes = (home / "potluck.db").stat().st_size
    assert store_bytes > size_mib << 20

    archive = tmp_path / "big.backup"
    made = run_capped(home, "backup", str(archive), limit_mib=1024)
    assert made.returncode == 0, made.output
    target = tmp_path / "restored"
    done = run_capped(target, "restore", str(archive), limit_mib=1024)
    assert done.returncode == 0, done.output
    assert (target / "potluck.db").stat().st_size == store_bytes
    print(
        f"store {store_bytes >> 20} MiB: backup peak RSS {made.peak_rss >> 20} MiB, "
        f"restore peak RSS {done.peak_rss >> 20} MiB"
    )
    for peak in (made.peak_rss, done.peak_rss):
        assert peak < 200 * 1024 * 1024, f"peak RSS {peak >> 20} MiB for a {size_mib} MiB store"


@pytest.fixture
def two_databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    import psycopg

    names = [f"bk{os.getpid()}_{i}_{time.time_ns()}" for i in (1, 2)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    yield tuple(postgres_url.rsplit("/", 1)[0] + f"/{n}" for n in names)  # type: ignore[misc]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recipes_in(url: str) -> set[str]:
    store = Store(url)
    try:
        return {saved.recipe.name for saved in Library(store).heads()}
    finally:
        store.close()


def test_postgresql_is_replaced_only_with_force_all_or_nothing_and_kept_aside(
    tmp_path: Path, two_databases: tuple[str, str]
) -> None:
    source_url, target_url = two_databases
    source = load_config(env=_home(tmp_path / "a", source_url))
    write_key_file(source.key_file, KeyPair.generate())
    store = Store(source_url)
    Library(store).save(validate_data({**SLOW, "name": "from-backup"}))
    store.close()
    archive = tmp_path / "pg.backup"
    backup(source, archive)

    target = load_config(env=_home(tmp_path / "b", target_url))
    store = Store(target_url)
    Library(store).save(validate_data({**SLOW, "name": "already-here"}))
    store.close()
    with pytest.raises(BackupError, match="already holds tables; restore with --force"):
        restore(target, archive)
    assert recipes_in(target_url) == {"already-here"}
    assert not (tmp_path / "b" / "gateway.key").exists()

    # a dump whose bytes match its manifest but that pg_restore cannot apply: all or nothing
    with tarfile.open(archive) as whole:
        members = {
            m.name: whole.extractfile(m).read()  # type: ignore[union-attr]
            for m in whole.getmembers()
        }
    members.pop("manifest.json")
    members["store.postgresql"] = members["store.postgresql"][:-4000]  # cut short
    broken = craft(
        tmp_path / "broken.backup",
        [(n, d, tarfile.REGTYPE) for n, d in members.items()],
        database="postgresql",
    )
    with pytest.raises(BackupError, match="pg_restore failed"):
        restore(target, broken, force=True)
    assert recipes_in(target_url) == {"already-here"}  # the database is as it was
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["serve.lock"]

    restore(target, archive, force=True)
    assert "from-backup" in recipes_in(target_url) and "already-here" not in recipes_in(target_url)
    (kept,) = (tmp_path / "b").glob("store.postgresql.before-restore-*")
    assert kept.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "b" / "gateway.key").read_bytes() == source.key_file.read_bytes()
