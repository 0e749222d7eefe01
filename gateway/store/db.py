"""Engine set-up and migrations: SQLite (WAL) by default, PostgreSQL when configured."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.orm import sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite URL; None for PostgreSQL and in-memory stores."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _create_private(path: Path) -> None:
    """Create the SQLite file with mode 0600 before SQLite opens it. The store holds every
    message and the salts that open receipts; SQLite would create it 0644 (under the usual
    umask), and it gives its -wal and -shm files the mode of the database file, so this one
    mode covers all three."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        if (path := sqlite_file(url)) is not None and path.parent.is_dir():
            _create_private(path)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def head_revision() -> str:
    """The newest migration, by file name: each is `NNNN_what.py` with revision "NNNN"
    (tests/test_store.py holds every file to that)."""
    return max(
        path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )


def at_head(engine: Engine) -> bool:
    """Whether the store is already at the newest migration: then Alembic (a fifth of a
    second to import) is not needed to start."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return list(versions) == [head_revision()]


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration; safe to call at every start."""
    if at_head(engine):
        return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    """One engine and its session factory; the rest of the gateway asks this for sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self._writer: Connection | None = None
        self._write_lock = threading.RLock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction on one held connection, for the many small writes of each exchange:
        a BEGIN and a COMMIT, not a pool checkout and reset as well. Called inside another
        `write()`, it joins that transaction, so the outer one commits all or nothing."""
        with self._write_lock:
            conn = self._writer
            if conn is None or conn.closed or conn.invalidated:
                conn = self._writer = self.engine.connect()
            if conn.in_transaction():
                yield conn
                return
            with conn.begin():
                yield conn

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()
