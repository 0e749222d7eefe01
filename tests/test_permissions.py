"""The home and everything in it are private to the install's user: the store holds every
message and the salts that open receipts. Created so from the first byte (whatever the
umask), repaired by `potluck init`, reported by `potluck doctor`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from gateway.backup import serving_lock
from gateway.config import load_config
from gateway.store.db import Store

POTLUCK = [sys.executable, "-m", "gateway"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def potluck(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POTLUCK_HOME": str(home)}
    env.pop("POTLUCK_DATABASE_URL", None)
    return subprocess.run(
        [*POTLUCK, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),  # the usual umask, which made 0755 and 0644
    )


def test_init_makes_a_private_home_and_store(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / ".potluck"
    done = potluck(home, "init")
    assert done.returncode == 0, done.stderr
    assert mode(home) == 0o700
    for name in ("config.toml", "gateway.key", "potluck.db"):
        assert mode(home / name) == 0o600, name


def test_the_store_and_its_wal_and_shm_are_created_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = tmp_path / "store.db"
        store = Store(f"sqlite:///{path}")
        try:
            with store.write() as conn:  # a write in WAL mode: -wal and -shm exist now
                conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
                conn.execute(text("INSERT INTO probe VALUES (1)"))
            found = {p.name: mode(p) for p in tmp_path.iterdir()}
        finally:
            store.close()
        with serving_lock(load_config(env={"POTLUCK_HOME": str(tmp_path / "h")})):
            found["serve.lock"] = mode(tmp_path / "h" / "serve.lock")
            found["home"] = mode(tmp_path / "h")
    finally:
        os.umask(previous)
    assert {"store.db", "store.db-wal", "store.db-shm"} <= set(found)
    assert found == {name: 0o600 for name in found} | {"home": 0o700}, found


def test_an_old_open_home_is_reported_by_doctor_and_repaired_by_init(tmp_path: Path) -> None:
    home = tmp_path / "old"
    assert potluck(home, "init").returncode == 0
    home.chmod(0o755)  # as releases before this one left it
    (home / "potluck.db").chmod(0o644)
    (home / "web.token").write_text("t")
    (home / "web.token").chmod(0o644)

    done = potluck(home, "doctor", "--no-sandbox")
    assert f"{home} is mode 755" in done.stdout, done.stdout
    assert f"{home / 'potluck.db'} is mode 644" in done.stdout
    assert "fix: potluck init" in done.stdout and "chmod" in done.stdout

    repaired = potluck(home, "init")
    assert repaired.returncode == 0, repaired.stderr
    assert "755 → 700" in repaired.stdout and "644 → 600" in repaired.stdout
    assert mode(home) == 0o700
    assert mode(home / "potluck.db") == 0o600 and mode(home / "web.token") == 0o600
    after = potluck(home, "doctor", "--no-sandbox")
    assert "is mode" not in after.stdout, after.stdout
    assert "✓ config" in after.stdout
