"""Review 2: a crafted `apscheduler_jobs` table in a store restored from a stranger's backup
(revision 0006) against migration 0007.

Finding M1 — severity MEDIUM (denial of service of the gateway's start, and a store left
half-migrated so that every later start fails too).
Attack: the migration guards the unpickling of `job_state` (any exception → row dropped), but
not what it does with the fields afterwards: `datetime.fromtimestamp(next_run_time)` on an
attacker's REAL column (1e300, NaN, -1e20) raises OverflowError/ValueError, and a string field
holding a lone surrogate ("\\ud800", which pickle's BINUNICODE decodes with surrogatepass) or a
NUL or a recipe over 255 characters (both refused by PostgreSQL; only room and schedule_id
lengths are checked) makes the INSERT raise. Both escape `upgrade()`, so `Store(url)`
raises and `potluck` cannot start on the restored store.
What the attacker gets: a backup that bricks the install that restores it. Worse on SQLite:
pysqlite opens no transaction for DDL, so `CREATE TABLE schedules` is committed before the
failing INSERT while `alembic_version` stays at 0006; the next start re-runs 0007 and fails on
"table schedules already exists" even once the bad row is gone.
Smallest fix: treat every field as untrusted inside the per-row guard — convert `next_run_time`
inside a try (drop or null it on OverflowError/ValueError/OSError, also reject non-finite), and
drop rows whose strings fail `s.encode("utf-8")` or contain "\\x00"; and make the SQLite
migration transactional (e.g. `engine.begin()` with the pysqlite "BEGIN" event recipe, or
Alembic's `transactional_ddl`) so a failure leaves the store exactly at 0006.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import pytest
from sqlalchemy import text

GOOD = {"room": "mem:r1", "recipe": "duo", "text": "good morning", "schedule_id": "ab12cd"}


def _job(**kwargs: str) -> bytes:
    return pickle.dumps(
        {"func": "gateway.schedules:fire", "name": "daily 7:00", "kwargs": {**GOOD, **kwargs}}
    )


def _old_store(
    tmp_path: Path, rows: list[tuple[str, object, bytes]], url: str | None = None
) -> str:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from gateway.store.db import MIGRATIONS, make_engine

    url = url or f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
    with engine.begin() as db:
        blob = "BYTEA" if engine.dialect.name == "postgresql" else "BLOB"
        db.execute(
            text(
                "CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, "
                f"next_run_time FLOAT, job_state {blob} NOT NULL)"
            )
        )
        for row_id, next_run, state in rows:
            db.execute(
                text("INSERT INTO apscheduler_jobs VALUES (:i, :n, :s)"),
                {"i": row_id, "n": next_run, "s": state},
            )
    engine.dispose()
    return url


def _open_keeps_good_row(url: str) -> None:
    from gateway.store.db import Store
    from gateway.store.schedules import every

    store = Store(url)  # opening the store upgrades it; a hostile row must not stop that
    try:
        kept = [(s.room, s.schedule_id, s.recipe, s.text) for s in every(store)]
    finally:
        store.close()
    assert ("mem:r1", "ab12cd", "duo", "good morning") in kept


@pytest.mark.parametrize("next_run", [1e300, -1e20])
def test_hostile_next_run_time_does_not_stop_the_upgrade(tmp_path: Path, next_run: float) -> None:
    state = _job(schedule_id="ev1l00")
    url = _old_store(tmp_path, [("mem:r1|ab12cd", 1.0, _job()), ("mem:r1|ev1l00", next_run, state)])
    _open_keeps_good_row(url)


def test_lone_surrogate_in_a_field_does_not_stop_the_upgrade(tmp_path: Path) -> None:
    state = _job(schedule_id="ev1l00", text="hello \ud800 there")
    url = _old_store(tmp_path, [("mem:r1|ab12cd", 1.0, _job()), ("mem:r1|ev1l00", 1.0, state)])
    _open_keeps_good_row(url)


@pytest.mark.parametrize(
    "fields",
    [{"recipe": "r" * 300}, {"text": "a NUL \x00 here"}],
    ids=["recipe-over-255", "nul-in-text"],
)
def test_fields_the_table_cannot_hold_do_not_stop_the_upgrade(
    tmp_path: Path, database_url: str, fields: dict[str, str]
) -> None:
    """On PostgreSQL `recipe` is VARCHAR(255) and text cannot hold NUL: such a row must be
    dropped, not fail the whole upgrade (SQLite accepts both, so it passes there)."""
    state = _job(schedule_id="ev1l00", **fields)
    rows = [("mem:r1|ab12cd", 1.0, _job()), ("mem:r1|ev1l00", 1.0, state)]
    _open_keeps_good_row(_old_store(tmp_path, rows, database_url))


def test_a_failed_upgrade_leaves_the_store_at_0006(tmp_path: Path) -> None:
    """Whatever makes 0007 fail, the store must be left as it was (no `schedules` table at
    revision 0006), so that removing the cause lets the next start succeed."""
    from gateway.store.db import Store, make_engine

    url = _old_store(tmp_path, [("mem:r1|ev1l00", 1e300, _job(schedule_id="ev1l00"))])
    with contextlib.suppress(Exception):  # today's code raises here; the state after matters
        Store(url).close()
    engine = make_engine(url)
    with engine.connect() as db:
        version = db.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        tables = {
            r[0] for r in db.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        }
    engine.dispose()
    assert version == "0007" or "schedules" not in tables, (
        f"store left half-migrated: alembic_version={version} but tables {sorted(tables)}"
    )
