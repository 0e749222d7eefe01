"""Adversarial review (issue 13 follow-up): one room that refuses delivery, and the gateway's
next start. The Telegram adapter, unmodified, against the local Bot API server; the real
gateway, restarted; fails on the code as reviewed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .fake_telegram import FakeTelegram
from .support import TG_ALICE as ALICE
from .support import TG_BOB as BOB
from .support import TG_CHAT as CHAT
from .support import running as gateway
from .support import telegram_home as home
from .support import until

OTHER = -100777  # a second group, whose people did nothing wrong


class KickingTelegram(FakeTelegram):
    """The Bot API as it answers a bot removed from a group (kicked by one of its admins,
    or the group deleted): 403 on every send there, as documented."""

    def __init__(self) -> None:
        super().__init__()
        self.kicked: set[int] = set()

    async def api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        if int(params["chat_id"]) in self.kicked:
            return self.error(403, "Forbidden: bot was kicked from the supergroup chat")
        return await super().api_sendMessage(params)


@pytest.fixture
async def telegram() -> AsyncIterator[KickingTelegram]:
    server = KickingTelegram()
    await server.start()
    server.admins.add(ALICE)
    yield server
    await server.stop()


def texts(server: FakeTelegram, chat: int) -> list[str]:
    return [s.text for s in server.from_bot(chat)]


async def test_a_room_that_refuses_delivery_cannot_keep_the_gateway_from_starting(
    telegram: KickingTelegram, tmp_path: Path
) -> None:
    """Severity: high. `Delivery.send` and `Stream` store a row as "pending", then send; only
    RateLimited, OSError and TimeoutError are retried, anything else (Telegram's Forbidden or
    BadRequest, discord.py's HTTPException) propagates at once and the row stays "pending"
    forever; Matrix's refusal is an OSError, retried eight times and then raised the same
    way. At the next start, `Gateway.add_adapter` → `Delivery.recover` sends that row
    again, the platform refuses again, the exception escapes `build()`, and `potluck serve`
    exits — every restart (systemd's Restart=on-failure), for every room on every platform,
    until someone deletes the row by hand. The attacker gets: an admin of any one allowed
    group (or anyone who can get the bot removed from it, or the group deleted) takes the
    whole gateway down for good: talk to the agents, kick the bot before they answer.
    Smallest fix: a send that fails for good marks its row "failed" (and logs it); recover
    never lets one row's failure stop a start."""
    env = home(tmp_path, telegram)
    env["POTLUCK_ALLOWED_ROOMS"] = f"telegram:{CHAT},telegram:{OTHER}"
    async with gateway(env):
        telegram.say(CHAT, ALICE, "/recipe use duo", name="alice")
        await until(lambda: any("now runs duo@" in t for t in texts(telegram, CHAT)), what="use")
        telegram.kicked.add(CHAT)  # one of the group's admins removes the bot...
        telegram.say(CHAT, BOB, "hello agents", name="bob")  # ...as the agents start to answer
        await until(lambda: telegram.calls.count("sendMessage") > 2, what=lambda: telegram.calls)
    restart = gateway(env)  # the next start (a deploy, a reboot, a crash)
    try:
        await restart.__aenter__()
    except Exception as exc:  # any way the start fails is the finding
        pytest.fail(f"the gateway would not start again: {type(exc).__name__}: {exc}")
    try:
        telegram.say(OTHER, ALICE, "/help", name="alice")
        await until(
            lambda: any("Commands" in t for t in texts(telegram, OTHER)),
            what=lambda: texts(telegram, OTHER),
        )
    finally:
        await restart.__aexit__(None, None, None)
