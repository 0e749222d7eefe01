"""Adversarial review (issue 13 follow-up): a backup from someone else, restored and served.
Real `potluck backup`, `restore` and `serve`; fails on the code as reviewed."""

from __future__ import annotations

import os
import pickle
import sqlite3
import time
from pathlib import Path

from gateway.scheduler import start_scheduler

from .support import potluck, running


class _Opens:
    """What unpickling runs: `open(path, "w")`, a harmless stand-in for any callable."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


async def test_a_restored_backup_cannot_run_code_when_the_gateway_starts(tmp_path: Path) -> None:
    """Severity: high. restore's own docstring: "A backup may come from anywhere (a
    download, a colleague, an old disk), so it is read as hostile." It checks the archive's
    shape, hashes, the SQLite header and `PRAGMA quick_check` — not what the tables hold.
    The store carries APScheduler's job table (`apscheduler_jobs`), whose `job_state` column
    APScheduler reads with `pickle.loads` when the job is due (a next_run_time in the past:
    within the first second of `potluck serve`, seen with the real command) or when anyone
    lists schedules (`/schedule list`, as here); and a job's state names any importable
    callable to run when it fires. A backup whose store
    has one crafted row runs the attacker's code as the gateway's user on the first
    `potluck serve` after `potluck restore`. The attacker gets: code execution on the
    restoring machine (the gateway key, every API key, the Docker broker's socket).
    Smallest fix: on restore, refuse a store whose `apscheduler_jobs` rows are not
    exactly what `Schedules.add` writes — better, keep schedules in a table of plain
    columns (room, when, recipe, text) and rebuild the APScheduler jobs from it at start,
    never unpickling anything from the store."""
    marker = tmp_path / "code-ran-here"
    origin, restored = tmp_path / "theirs", tmp_path / "mine"
    potluck(origin, "init")
    store = origin / "potluck.db"
    with sqlite3.connect(store) as db:  # what their store may hold: one crafted job
        db.execute(
            "CREATE TABLE IF NOT EXISTS apscheduler_jobs (id VARCHAR(191) NOT NULL PRIMARY "
            "KEY, next_run_time FLOAT, job_state BLOB NOT NULL)"
        )
        db.execute(
            "INSERT INTO apscheduler_jobs VALUES (?, ?, ?)",
            ("web:x|abc123", time.time() + 3600, pickle.dumps(_Opens(marker))),
        )
    archive = tmp_path / "theirs.backup"
    potluck(origin, "backup", str(archive))

    done = potluck(restored, "restore", str(archive), ok=False)
    if done.returncode != 0:  # refused: the attack is stopped at the door
        assert "nothing was restored" in done.stderr, done.stderr
        return
    # `potluck serve` after the restore: the gateway, and its scheduler as serve starts it;
    # then what `/schedule list` asks of it (every job of the store, read back).
    env = {**os.environ, "POTLUCK_HOME": str(restored), "POTLUCK_WEB_PORT": "0"}
    env.pop("POTLUCK_DATABASE_URL", None)
    async with running(env) as gateway:
        scheduler, schedules = start_scheduler(gateway.store, gateway.ledger.keys, gateway.intake)
        try:
            listed = schedules.of_room("web:x")  # type: ignore[union-attr]
        except Exception as exc:  # a job that cannot be read back may be refused loudly
            listed = [f"refused: {exc}"]
        finally:
            scheduler.shutdown(wait=False)
    assert not marker.exists(), (
        "the gateway unpickled the restored store's job and ran the attacker's callable "
        f"(/schedule list saw {listed})"
    )
