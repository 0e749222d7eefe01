"""`potluck backup` / `potluck restore`: the store and the keys in one archive.

Safe while the gateway runs: SQLite is copied with its online backup API (a consistent
snapshot, even mid-write in WAL mode), PostgreSQL with `pg_dump`. The archive holds secrets
(the gateway key, config, tokens), so it is written with mode 0600. A manifest lists every
member with its SHA-256, and restore checks them all before touching anything; it refuses
while a gateway holds this home's lock, and moves what it replaces aside rather than
deleting it.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import Config

FORMAT = 1
HOME_FILES = ("config.toml", "web.token", "matrix-session.json")


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Manifest:
    created: str
    database: str  # "sqlite" | "postgresql"
    files: dict[str, str]  # archive member -> sha256


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


@contextmanager
def serving_lock(config: Config) -> Iterator[None]:
    """Held by `potluck serve` for as long as it runs; restore will not run under it."""
    config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(config.home / "serve.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"another potluck serve is already running for {config.home}"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pg_tool(name: str) -> str | None:
    """On PATH, or in Debian's versioned server directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _pg_dump(url: str, out: Path) -> None:
    dump = _pg_tool("pg_dump")
    if dump is None:
        raise BackupError(
            "pg_dump is needed to back up PostgreSQL: apt-get install postgresql-client"
        )
    done = subprocess.run(
        [dump, "--format=custom", "--no-owner", f"--file={out}", url],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()}")


def _add(archive: tarfile.TarFile, name: str, data: bytes, files: dict[str, str]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    archive.addfile(info, io.BytesIO(data))
    files[name] = hashlib.sha256(data).hexdigest()


def backup(config: Config, out: Path) -> Manifest:
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch) / "store"
        database = config.database_url
        if (path := _sqlite_path(database)) is not None:
            if not path.exists():
                raise BackupError(f"no store at {path}: nothing to back up")
            source, target = sqlite3.connect(path), sqlite3.connect(snapshot)
            with target:
                source.backup(target)  # consistent even while the gateway writes
            source.close()
            target.close()
            kind = "sqlite"
        elif database.startswith("postgresql"):
            _pg_dump(database.replace("postgresql+psycopg://", "postgresql://"), snapshot)
            kind = "postgresql"
        else:
            raise BackupError(f"cannot back up a store at {database}")
        partial = out.with_name(out.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            _add(archive, f"store.{kind}", snapshot.read_bytes(), files)
            _add(archive, "gateway.key", config.key_file.read_bytes(), files)
            for name in HOME_FILES:
                if (config.home / name).exists():
                    _add(archive, f"home/{name}", (config.home / name).read_bytes(), files)
            manifest = Manifest(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), kind, files)
            body = json.dumps({"format": FORMAT, **manifest.__dict__}, indent=1).encode()
            _add(archive, "manifest.json", body, {})
        os.replace(partial, out)
    return manifest


def _read(archive_path: Path) -> tuple[Manifest, dict[str, bytes]]:
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            members = {
                m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
                for m in archive.getmembers()
                if m.isfile()
            }
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive_path} is not a Potluck backup: {exc}") from None
    if "manifest.json" not in members:
        raise BackupError(f"{archive_path} has no manifest: not a Potluck backup")
    data = json.loads(members["manifest.json"])
    if data.get("format") != FORMAT:
        raise BackupError(f"backup format {data.get('format')} is not one this version reads")
    manifest = Manifest(data["created"], data["database"], data["files"])
    for name, digest in manifest.files.items():
        if name not in members or hashlib.sha256(members[name]).hexdigest() != digest:
            raise BackupError(f"{archive_path}: {name} is missing or damaged; nothing restored")
    return manifest, members


def restore(config: Config, archive_path: Path, force: bool = False) -> Manifest:
    manifest, members = _read(archive_path)
    try:
        lock = serving_lock(config)
        lock.__enter__()
    except BackupError:
        raise BackupError("potluck serve is running for this home: stop it, then restore") from None
    try:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        key = config.key_file
        if key.exists() and key.read_bytes() != members["gateway.key"] and not force:
            raise BackupError(
                f"{key} holds a different gateway key; restore with --force to replace it "
                "(the old one is kept beside it)"
            )
        path = _sqlite_path(config.database_url)
        if manifest.database == "sqlite":
            if path is None:
                raise BackupError("this backup holds a SQLite store; configure a sqlite:/// URL")
            if path.exists() and not force:
                raise BackupError(f"{path} exists; restore with --force to replace it (kept aside)")
            for suffix in ("", "-wal", "-shm"):
                old = Path(f"{path}{suffix}")
                if old.exists():
                    old.rename(f"{old}.before-restore-{stamp}")
            _write_private(path, members["store.sqlite"])
        else:
            _pg_restore(config.database_url, members["store.postgresql"])
        if key.exists() and key.read_bytes() != members["gateway.key"]:
            key.rename(f"{key}.before-restore-{stamp}")
        _write_private(key, members["gateway.key"])
        for name in HOME_FILES:
            if f"home/{name}" in members:
                _write_private(config.home / name, members[f"home/{name}"])
    finally:
        lock.__exit__(None, None, None)
    return manifest


def _pg_restore(url: str, dump: bytes) -> None:
    tool = _pg_tool("pg_restore")
    if tool is None:
        raise BackupError("pg_restore is needed: apt-get install postgresql-client")
    with tempfile.NamedTemporaryFile(suffix=".dump") as handle:
        handle.write(dump)
        handle.flush()
        done = subprocess.run(
            [tool, "--clean", "--if-exists", "--no-owner", f"--dbname={url}", handle.name],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(partial, path)
