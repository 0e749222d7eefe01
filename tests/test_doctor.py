"""`potluck doctor`: passes on a sound home, and names the fix for each broken thing —
platform tokens asked of the local Telegram and Discord servers, a dead relay, a key others
can read, a config that lacks what a platform needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway import doctor
from gateway.config import load_config
from gateway.receipts.keys import KeyPair, write_key_file

from .fake_discord import FakeDiscord
from .fake_telegram import FakeTelegram


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


async def test_tokens_relays_and_config_are_checked_with_fixes(tmp_path: Path) -> None:
    telegram = FakeTelegram()
    await telegram.start()
    discord = await FakeDiscord().start()
    write_key_file(tmp_path / "gateway.key", KeyPair.generate())
    env = {
        "POTLUCK_HOME": str(tmp_path),
        "POTLUCK_TELEGRAM_TOKEN": telegram.token,
        "POTLUCK_TELEGRAM_BASE_URL": f"{telegram.url}/bot",
        "POTLUCK_DISCORD_TOKEN": discord.token,
        "POTLUCK_DISCORD_API_BASE": discord.api_base,
        "POTLUCK_RELAYS": "ws://127.0.0.1:9/",  # nothing listens there
        "POTLUCK_ALLOWED_USERS": "telegram:1",
    }
    try:
        checks = by_name(await doctor.run(load_config(env=env), sandbox=False))
        assert checks["telegram token"].status == doctor.OK
        assert "@potluck_bot" in checks["telegram token"].detail
        assert checks["discord token"].status == doctor.OK
        assert checks["relay ws://127.0.0.1:9/"].status == doctor.WARN
        for name in ("config", "gateway key", "store", "disk", "local model", "web room"):
            assert checks[name].status == doctor.OK, checks[name]

        env["POTLUCK_TELEGRAM_TOKEN"] = "999:wrong"
        env["POTLUCK_DISCORD_TOKEN"] = "wrong"
        checks = by_name(await doctor.run(load_config(env=env), sandbox=False))
        assert checks["telegram token"].status == doctor.FAIL
        assert "@BotFather" in checks["telegram token"].fix
        assert checks["discord token"].status == doctor.FAIL
        assert "Reset Token" in checks["discord token"].fix

        env["POTLUCK_MATRIX_HOMESERVER"] = "http://127.0.0.1:9"
        checks = by_name(await doctor.run(load_config(env=env), sandbox=False))
        assert checks["config"].status == doctor.FAIL
        assert "user_id" in checks["config"].detail and "password" in checks["config"].detail
    finally:
        await telegram.stop()
        await discord.stop()


def test_the_command_exits_1_and_says_chmod_for_a_readable_key(tmp_path: Path) -> None:
    env = {**os.environ, "POTLUCK_HOME": str(tmp_path)}
    env.pop("POTLUCK_DATABASE_URL", None)
    run = [sys.executable, "-m", "gateway"]
    subprocess.run([*run, "init"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [*run, "doctor", "--no-sandbox"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout
    assert "0 failed" in done.stdout
    (tmp_path / "gateway.key").chmod(0o644)
    done = subprocess.run(
        [*run, "doctor", "--no-sandbox"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"fix: chmod 600 {tmp_path / 'gateway.key'}" in done.stdout
    assert "1 failed" in done.stdout
