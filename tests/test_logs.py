"""Structured logs: JSON lines off a terminal, and no secret in any line or traceback."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from gateway import logs
from gateway.config import load_config

TOKEN = "7000123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
PASSWORD = "correct-horse-battery"
API_KEY = "sk-proj-abcdefghijklmnopqrstuvwx"


def test_json_lines_with_every_secret_redacted(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        f'[telegram]\ntoken = "{TOKEN}"\n[matrix]\nhomeserver = "http://127.0.0.1:1"\n'
        f'user_id = "@b:x"\npassword = "{PASSWORD}"\n[secrets]\nopenai_api_key = "{API_KEY}"\n'
    )
    (tmp_path / "web.token").write_text("web-token-value-123")
    config = load_config(env={"POTLUCK_HOME": str(tmp_path)})
    out = io.StringIO()
    handler = logs.setup(config, stream=out)
    try:
        log = logging.getLogger("potluck.test")
        log.info("GET https://api.telegram.org/bot%s/getUpdates failed", TOKEN)
        log.info("login with %s; key %s; web ?token=web-token-value-123", PASSWORD, API_KEY)
        log.info("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def and café")
        try:
            raise RuntimeError(f"refused password={PASSWORD}")
        except RuntimeError:
            log.exception("login failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    for secret in (TOKEN, PASSWORD, API_KEY, "web-token-value-123", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["level"] for line in lines] == ["info"] * 3 + ["error"]
    assert all(line["logger"] == "potluck.test" and "time" in line for line in lines)
    assert lines[0]["message"].count(logs.MASK) == 1 and "getUpdates" in lines[0]["message"]
    assert "café" in lines[2]["message"]
    assert "RuntimeError" in lines[3]["exception"] and logs.MASK in lines[3]["exception"]


def test_text_on_a_terminal(tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    handler = logs.setup(load_config(env={"POTLUCK_HOME": str(tmp_path)}), stream=out)
    try:
        logging.getLogger("potluck.test").warning("plain %s", "words")
    finally:
        logging.getLogger().removeHandler(handler)
    assert out.getvalue().rstrip().endswith("WARNING potluck.test: plain words")
