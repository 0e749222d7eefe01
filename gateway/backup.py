"""`potluck backup` / `potluck restore`: the store and the keys in one archive.

Safe while the gateway runs: SQLite is copied with its online backup API (a consistent
snapshot, even mid-write in WAL mode), PostgreSQL with `pg_dump`. The archive holds secrets
(the gateway key, config, tokens), so it is written with mode 0600. Members are streamed in
and out, never held whole, so a store of any size takes the same little memory. A manifest
lists every member with its SHA-256 and size; restore reads the archive as hostile input,
checks all of it before replacing anything, refuses while a gateway holds this home's lock,
and sets aside what it replaces rather than deleting it (for PostgreSQL, a dump of it).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import tomllib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import Config
from .store.db import sqlite_file

FORMAT = 1
HOME_FILES = ("config.toml", "web.token", "matrix-session.json")
STORES = {"sqlite": "store.sqlite", "postgresql": "store.postgresql"}
MANIFEST = "manifest.json"
MEMBERS = frozenset({*STORES.values(), "gateway.key", *(f"home/{name}" for name in HOME_FILES)})
SMALL = 1024 * 1024  # every member but the store: a key, a config, tokens, the manifest
CHUNK = 1024 * 1024  # members are copied in pieces this size, never held whole
SPARE = 64 * 1024 * 1024  # free space a restore leaves on a disk it writes to
PARTIAL = ".restore-partial"


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Manifest:
    created: str
    database: str  # "sqlite" | "postgresql"
    files: dict[str, str]  # archive member -> sha256
    sizes: dict[str, int] = field(default_factory=dict)  # archive member -> bytes


def _sqlite_path(url: str) -> Path | None:
    return sqlite_file(url)


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


def _pg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _pg_dump(url: str, out: Path) -> None:
    dump = _pg_tool("pg_dump")
    if dump is None:
        raise BackupError(
            "pg_dump is needed to back up PostgreSQL: apt-get install postgresql-client"
        )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a dump holds secrets
    os.close(fd)
    done = subprocess.run(
        [dump, "--format=custom", "--no-owner", f"--file={out}", _pg_url(url)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()}")


def _add_bytes(
    archive: tarfile.TarFile, name: str, data: bytes, manifest: dict[str, dict[str, Any]]
) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    archive.addfile(info, io.BytesIO(data))
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    manifest["sizes"][name] = len(data)


def _add_file(
    archive: tarfile.TarFile, name: str, path: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    """A file streamed into the archive (hashed on the way), never read whole."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = source.tell(), 0o600, int(time.time())
        source.seek(0)
        archive.addfile(info, source)
    manifest["files"][name] = digest.hexdigest()
    manifest["sizes"][name] = info.size


def _small(path: Path) -> bytes:
    """A key, config or token file, read once so that what is hashed is what is stored."""
    with path.open("rb") as handle:
        data = handle.read(SMALL + 1)
    if len(data) > SMALL:
        raise BackupError(f"{path} is larger than {SMALL >> 20} MiB; is it the right file?")
    return data


def backup(config: Config, out: Path) -> Manifest:
    """Everything an install needs, streamed into one archive (mode 0600)."""
    manifest: dict[str, dict[str, Any]] = {"files": {}, "sizes": {}}
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
            _pg_dump(database, snapshot)
            kind = "postgresql"
        else:
            raise BackupError(f"cannot back up a store at {database}")
        # A name nobody could have planted (random, created exclusively, mode 0600, never
        # through a link): backups are often written to shared folders such as /tmp.
        fd, partial_name = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=".partial", dir=out.parent
        )
        partial = Path(partial_name)
        try:
            result = _write_archive(fd, config, kind, snapshot, manifest)
            os.replace(partial, out)  # replaces a link at `out` itself, never its target
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, BackupError):
                raise BackupError(f"cannot write {out}: {exc}; choose another place") from None
            raise
    return result


def _write_archive(
    fd: int, config: Config, kind: str, snapshot: Path, manifest: dict[str, dict[str, Any]]
) -> Manifest:
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        _add_file(archive, STORES[kind], snapshot, manifest)
        _add_bytes(archive, "gateway.key", _small(config.key_file), manifest)
        for name in HOME_FILES:
            if (config.home / name).exists():
                _add_bytes(archive, f"home/{name}", _small(config.home / name), manifest)
        result = Manifest(
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            kind,
            manifest["files"],
            manifest["sizes"],
        )
        body = json.dumps({"format": FORMAT, **result.__dict__}, indent=1).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
        archive.addfile(info, io.BytesIO(body))
    return result


# -- restore ---------------------------------------------------------------------------------
#
# A backup may come from anywhere (a download, a colleague, an old disk), so it is read as
# hostile: one pass over the archive streams each member to a temporary file beside where
# it will go, hashing it on the way; only names from a fixed list are accepted, only as
# regular files, each once. Then the manifest is checked against what arrived (schema,
# every member present, size, SHA-256, nothing unlisted) and the contents against what they
# claim to be (a SQLite database, a key, TOML). Only then is anything replaced, each file by
# one rename, with what it replaces set aside; a failure part-way puts everything back.


@dataclass
class _Staged:
    name: str
    temp: Path
    target: Path
    sha256: str
    size: int


def _target(config: Config, name: str) -> Path:
    if name == "store.sqlite":
        path = _sqlite_path(config.database_url)
        if path is None:
            raise BackupError(
                "this backup holds a SQLite store, but the store here is "
                f"{config.database_url.split('://')[0]}; configure a sqlite:/// URL"
            )
        return path
    if name == "store.postgresql":
        if not config.database_url.startswith("postgresql"):
            raise BackupError(
                "this backup holds a PostgreSQL store; configure a postgresql:// URL first"
            )
        return config.home / "store.postgresql"
    if name == "gateway.key":
        return config.key_file
    return config.home / name.removeprefix("home/")


def _refuse_member(member: tarfile.TarInfo, seen: set[str]) -> str | None:
    """Why this archive member may not be restored, or None."""
    name = member.name
    if name != MANIFEST and name not in MEMBERS:
        return f"{name!r} is not part of a Potluck backup"
    if name in seen:
        return f"{name} appears twice"
    if member.issym() or member.islnk():
        return f"{name} is a link, not a file"
    if member.ischr() or member.isblk():
        return f"{name} is a device, not a file"
    if not member.isreg() or member.sparse is not None:
        return f"{name} is not a regular file"
    if name not in STORES.values() and member.size > SMALL:
        return f"{name} is {member.size} bytes; it should be a small file"
    return None


def _stream(source: IO[bytes], target: Path, size: int) -> str:
    """Copy `size` bytes to a new 0600 file at `target`, synced; their SHA-256."""
    digest = hashlib.sha256()
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _stage(config: Config, archive_path: Path, staged: list[_Staged]) -> bytes:
    """Stream every member to its temporary file (appended to `staged` as it is made, so
    the caller can remove them whatever happens); the manifest's bytes."""
    manifest: bytes | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive_path, "r|gz") as archive:
            for member in archive:
                problem = _refuse_member(member, seen)
                if problem:
                    raise BackupError(problem)
                seen.add(member.name)
                source = archive.extractfile(member)
                assert source is not None  # a regular file, checked above
                if member.name == MANIFEST:
                    manifest = source.read(SMALL)
                    continue
                target = _target(config, member.name)
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                free = shutil.disk_usage(target.parent).free
                if member.size + SPARE > free:
                    raise BackupError(
                        f"{member.name} needs {member.size >> 20} MiB at {target.parent}, "
                        f"which has {free >> 20} MiB free"
                    )
                temp = target.with_name(target.name + PARTIAL)
                staged.append(_Staged(member.name, temp, target, "", 0))
                staged[-1].sha256 = _stream(source, temp, member.size)
                staged[-1].size = temp.stat().st_size
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(f"the archive is damaged or not a Potluck backup ({exc})") from None
    if manifest is None:
        raise BackupError("the archive has no manifest: not a Potluck backup")
    return manifest


def _manifest(body: bytes, source: str) -> Manifest:
    """The manifest's JSON, checked field by field."""
    from runtime.recipes import RecipeError
    from runtime.recipes.safe_json import parse_json

    try:
        data = parse_json(body, source, SMALL, "manifest")
    except RecipeError as exc:
        raise BackupError(exc.problems[0].message) from None
    if not isinstance(data, dict):
        raise BackupError("the manifest is not a JSON object")
    required = ("format", "created", "database", "files")
    missing = [key for key in required if key not in data]
    if missing:
        raise BackupError(f"the manifest lacks {', '.join(missing)}")
    unknown = set(data) - {*required, "sizes"}
    if unknown:
        raise BackupError(f"the manifest has unknown fields {sorted(unknown)}")
    if type(data["format"]) is not int or data["format"] != FORMAT:
        raise BackupError(
            f"backup format {data['format']!r} is not one this version reads ({FORMAT}); "
            "restore it with the Potluck release that made it"
        )
    if data["database"] not in STORES:
        raise BackupError(
            f"the manifest names database {data['database']!r}; not one of {', '.join(STORES)}"
        )
    files, sizes = data["files"], data.get("sizes", {})
    if not (
        isinstance(files, dict)
        and all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in files.values())
    ):
        raise BackupError("the manifest's files must map member names to SHA-256 hashes")
    if not (
        isinstance(sizes, dict)
        and all(type(v) is int and v >= 0 for v in sizes.values())
        and set(sizes) <= set(files)
    ):
        raise BackupError("the manifest's sizes must map its files to byte counts")
    if not isinstance(data["created"], str):
        raise BackupError("the manifest's created must be a date")
    return Manifest(data["created"][:40], data["database"], files, sizes)


def _check(manifest: Manifest, staged: list[_Staged]) -> None:
    """What arrived is exactly what the manifest lists, and each is what it claims."""
    arrived = {item.name: item for item in staged}
    for name in arrived:
        if name not in manifest.files:
            raise BackupError(f"{name} is not listed in the manifest")
    for name, digest in manifest.files.items():
        item = arrived.get(name)
        if item is None or item.sha256 != digest:
            raise BackupError(f"{name} is missing or damaged (its SHA-256 does not match)")
        if name in manifest.sizes and manifest.sizes[name] != item.size:
            raise BackupError(
                f"{name} is {item.size} bytes, not {manifest.sizes[name]} as its manifest says"
            )
    store = STORES[manifest.database]
    if store not in arrived:
        raise BackupError(f"the backup holds no store ({store})")
    other = [name for name in STORES.values() if name != store and name in arrived]
    if other:
        raise BackupError(f"the backup holds {other[0]} but says its store is {store}")
    if "gateway.key" not in arrived:
        raise BackupError("the backup holds no gateway key")
    _check_contents(arrived)


def _check_contents(arrived: dict[str, _Staged]) -> None:
    from .receipts.keys import KeyFileError, read_key_file

    if (item := arrived.get("store.sqlite")) is not None:
        with item.temp.open("rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise BackupError("store.sqlite is not a SQLite database")
        try:
            db = sqlite3.connect(f"{item.temp.as_uri()}?immutable=1", uri=True)
            try:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error as exc:
            verdict = str(exc)
        if verdict != "ok":
            raise BackupError(f"store.sqlite fails SQLite's integrity check: {verdict}")
    try:
        read_key_file(arrived["gateway.key"].temp)
    except KeyFileError:
        raise BackupError("gateway.key does not hold a gateway key") from None
    if (item := arrived.get("home/config.toml")) is not None:
        try:
            tomllib.loads(item.temp.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BackupError(f"home/config.toml is not valid TOML: {exc}") from None


def _same(a: Path, b: Path) -> bool:
    """Byte-for-byte equal, read in pieces."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            x, y = left.read(CHUNK), right.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _pg_has_tables(url: str) -> bool:
    import psycopg

    with psycopg.connect(_pg_url(url), connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return bool(row and row[0])


@dataclass
class _Plan:
    """What a restore will do, decided before it does any of it."""

    replace: list[_Staged] = field(default_factory=list)
    set_aside: list[Path] = field(default_factory=list)
    pg_dump: _Staged | None = None
    pg_keep_old: bool = False


def _plan(config: Config, manifest: Manifest, staged: list[_Staged], force: bool) -> _Plan:
    plan = _Plan()
    for item in staged:
        if item.name == "store.postgresql":
            plan.pg_dump = item
            for tool in ("pg_restore", "pg_dump"):
                if _pg_tool(tool) is None:
                    raise BackupError(f"{tool} is needed: apt-get install postgresql-client")
            try:
                plan.pg_keep_old = _pg_has_tables(config.database_url)
            except Exception as exc:
                raise BackupError(f"cannot reach the PostgreSQL store: {exc}") from None
            if plan.pg_keep_old and not force:
                raise BackupError(
                    "the PostgreSQL database already holds tables; restore with --force to "
                    "replace them (a dump of them is kept in the home first)"
                )
            continue
        if item.name == "store.sqlite":
            present = [
                Path(f"{item.target}{s}")
                for s in ("", "-wal", "-shm")
                if Path(f"{item.target}{s}").exists()
            ]
            if present and not force:
                raise BackupError(
                    f"{item.target} exists; restore with --force to replace it (kept aside)"
                )
            plan.set_aside += present
            plan.replace.append(item)
            continue
        if item.target.exists():
            if _same(item.target, item.temp):
                continue
            if not force:
                what = "gateway key" if item.name == "gateway.key" else "file"
                raise BackupError(
                    f"{item.target} holds a different {what}; restore with --force to "
                    "replace it (the old one is kept beside it)"
                )
            plan.set_aside.append(item.target)
        plan.replace.append(item)
    return plan


def _aside(path: Path, stamp: str) -> Path:
    candidate = path.with_name(f"{path.name}.before-restore-{stamp}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.before-restore-{stamp}-{number}")
    return candidate


def _apply(config: Config, plan: _Plan) -> None:
    """Replace, each file by one rename; on any failure, undo every rename made."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    old_dump: Path | None = None
    if plan.pg_dump is not None:
        if plan.pg_keep_old:
            old_dump = _aside(config.home / "store.postgresql", stamp)
            _pg_dump(config.database_url, old_dump)
        try:
            _pg_restore(config.database_url, plan.pg_dump.temp)
        except BackupError:
            if old_dump is not None:
                old_dump.unlink(missing_ok=True)  # the database is as it was
            raise
    undo: list[tuple[Path, Path]] = []  # (from, to) renames that put things back
    try:
        for path in plan.set_aside:
            moved = _aside(path, stamp)
            os.replace(path, moved)
            undo.append((moved, path))
        for item in plan.replace:
            os.replace(item.temp, item.target)
            undo.append((item.target, item.temp))
    except OSError as exc:
        for moved, back in reversed(undo):
            with suppress(OSError):
                os.replace(moved, back)
        raise BackupError(f"could not put the files in place ({exc}); all were put back") from None


def restore(config: Config, archive_path: Path, force: bool = False) -> Manifest:
    """Put a backup back, checked whole before anything is replaced (see above)."""
    try:
        lock = serving_lock(config)
        lock.__enter__()
    except BackupError:
        raise BackupError("potluck serve is running for this home: stop it, then restore") from None
    staged: list[_Staged] = []
    try:
        body = _stage(config, archive_path, staged)
        manifest = _manifest(body, str(archive_path))
        _check(manifest, staged)
        _apply(config, _plan(config, manifest, staged, force))
    except BackupError as exc:
        raise BackupError(f"{archive_path}: {exc}; nothing was restored") from None
    except OSError as exc:
        raise BackupError(
            f"{archive_path}: cannot read or write ({exc}); nothing was restored"
        ) from None
    finally:
        for item in staged:
            item.temp.unlink(missing_ok=True)
        lock.__exit__(None, None, None)
    return manifest


def _pg_restore(url: str, dump: Path) -> None:
    """All or nothing: in one transaction, so a dump that fails part-way changes nothing."""
    tool = _pg_tool("pg_restore")
    if tool is None:
        raise BackupError("pg_restore is needed: apt-get install postgresql-client")
    done = subprocess.run(
        [
            tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={_pg_url(url)}",
            str(dump),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()[-2000:]}")
