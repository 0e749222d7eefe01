"""SIGTERM to `potluck serve` mid-turn: the turn is cut off in the open, the outbox is
flushed, the process exits cleanly, a message sent during the drain is answered after the
restart, and nothing is answered twice. The platform is the local Telegram Bot API."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from sqlalchemy import select

from gateway.library import Library
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.store.db import Store
from gateway.store.models import Message, Outbox
from runtime.recipes import validate_data

from .fake_telegram import FakeTelegram
from .support import ECHO_DUO, quiet_process, serve, until

CHAT, ALICE = -100555, 11
SLOW = {
    **ECHO_DUO,
    "name": "slow",
    "title": "Slow",
    "agents": [{"name": "slowpoke", "model": "scripted/slow", "persona": "You ramble."}],
    "protocol": {"max_rounds": 1, "max_turns": 1, "loop_guard": False},
}


async def test_sigterm_mid_stream_cuts_off_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    telegram = FakeTelegram()
    await telegram.start()
    telegram.admins.add(ALICE)
    write_key_file(tmp_path / "gateway.key", KeyPair.generate())
    db = f"sqlite:///{tmp_path / 'potluck.db'}"
    store = Store(db)
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(SLOW))
    env = {
        **os.environ,
        "POTLUCK_HOME": str(tmp_path),
        "POTLUCK_DATABASE_URL": db,
        "POTLUCK_TELEGRAM_TOKEN": telegram.token,
        "POTLUCK_TELEGRAM_BASE_URL": f"{telegram.url}/bot",
        "POTLUCK_TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
        "POTLUCK_ALLOWED_ROOMS": f"telegram:{CHAT}",
        "POTLUCK_DEFAULT_RECIPE": "slow",
        "POTLUCK_WEB_PORT": "0",
        "POTLUCK_SHUTDOWN_GRACE_S": "0.5",
    }
    log = tmp_path / "serve.log"
    process = serve(env, log)
    try:
        telegram.say(CHAT, ALICE, "please ramble", name="alice")
        await until(  # the turn is streaming
            lambda: any(s.edits and "tick" in s.text for s in telegram.from_bot(CHAT)),
            what=lambda: log.read_text()[-2000:],
        )
        process.send_signal(signal.SIGTERM)
        await until(lambda: '"stopping"' in log.read_text(), what="the drain to begin")
        telegram.say(CHAT, ALICE, "said during the drain", name="alice")
        await until(lambda: process.poll() is not None, what="serve to exit after SIGTERM")
        assert process.returncode == 0, log.read_text()[-3000:]
        assert "stopped cleanly" in log.read_text()
        records = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
        assert records and telegram.token not in log.read_text()  # JSON lines, no secret
        cut = [s for s in telegram.from_bot(CHAT) if "shutting down" in s.text]
        assert len(cut) == 1 and "tick" in cut[0].text and "tick199" not in cut[0].text
        with store.session() as session:
            states = dict(session.execute(select(Message.text, Message.state)).all())
            streaming = session.scalars(select(Outbox).where(Outbox.state == "streaming")).all()
        assert states["please ramble"] == "handled" and not streaming

        process = serve(env, log)  # back up: the line sent while draining gets its answer
        await until(
            lambda: any(
                "tick199" in s.text and not s.text.endswith("…") for s in telegram.from_bot(CHAT)
            ),
            what=lambda: [s.text[-40:] for s in telegram.from_bot(CHAT)],
            timeout=60,
        )
        await quiet_process(log)  # nothing more is coming
        texts = [s.text for s in telegram.from_bot(CHAT)]
        assert not any("cut off by a restart" in t for t in texts)  # it was a clean stop
        assert sum("tick199" in t for t in texts) == 1  # answered once, the cut one not redone
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        store.close()
        await telegram.stop()
