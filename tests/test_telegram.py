"""The Telegram adapter, unmodified, against a local server speaking the Bot API contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .fake_telegram import FakeTelegram
from .support import TG_ALICE, TG_BOB, TG_CHAT, settle, telegram_home, until
from .support import running as gateway


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.admins.add(TG_ALICE)
    yield server
    await server.stop()


def texts(server: FakeTelegram) -> list[str]:
    return [s.text for s in server.from_bot(TG_CHAT)]


async def test_a_group_runs_a_recipe_with_streaming_and_refuses_non_admins(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = telegram_home(tmp_path, telegram)
    async with gateway(env):
        assert "recipe" in telegram.commands["all_group_chats"]
        assert "recipe" in telegram.commands["all_chat_administrators"]
        telegram.say(TG_CHAT, TG_ALICE, "/recipe use duo", name="alice")
        await until(lambda: any("now runs duo@" in t for t in texts(telegram)), what="attach")
        telegram.rate_limit["editMessageText"] = 1  # a 429 in the middle of the stream
        telegram.say(TG_CHAT, TG_BOB, "hello agents", name="bob")
        answers = await until(
            lambda: (
                [
                    t
                    for t in texts(telegram)
                    if t.startswith(("<b>first</b>", "first")) and "echo" in t
                ]
                and [t for t in texts(telegram) if "second" in t and "echo" in t]
            ),
            what=lambda: texts(telegram),
        )
        assert answers
        streamed = [s for s in telegram.from_bot(TG_CHAT) if s.edits]
        assert streamed and all(s.text.endswith("hello agents") for s in streamed[:1])
        assert "editMessageText" in telegram.calls
        telegram.say(TG_CHAT, TG_BOB, "/recipe use debate", name="bob")
        await until(lambda: any("only room admins" in t for t in texts(telegram)), what="refusal")
        telegram.say(TG_CHAT, TG_BOB, "/help", name="bob")
        await until(lambda: any("privacy mode" in t for t in texts(telegram)), what="help")


async def test_a_restart_neither_loses_nor_repeats_a_message(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = telegram_home(tmp_path, telegram)
    async with gateway(env):
        telegram.say(TG_CHAT, TG_ALICE, "/recipe use duo", name="alice")
        telegram.say(TG_CHAT, TG_BOB, "first message", name="bob")
        await until(
            lambda: sum("first message" in t for t in texts(telegram)) >= 2,
            what=lambda: texts(telegram),
        )
    telegram.say(TG_CHAT, TG_BOB, "said while the gateway was down", name="bob")
    async with gateway(env) as gw:
        await until(
            lambda: sum("while the gateway was down" in t for t in texts(telegram)) >= 2,
            what=lambda: texts(telegram),
        )
        await until(lambda: not telegram.updates, what="every update confirmed by the bot")
        await settle(gw)  # nothing more is coming: updates confirmed, rooms idle, outbox drained
    # not answered again (later echoes may quote it, so count only its own answers)
    assert sum("first message" in t and "down" not in t for t in texts(telegram)) == 2
    assert sum("while the gateway was down" in t for t in texts(telegram)) == 2


async def test_forum_topics_are_rooms_and_unchanged_edits_are_tolerated(
    telegram: FakeTelegram,
) -> None:
    from adapters.base import Outgoing
    from adapters.telegram import TelegramAdapter, TelegramSettings, chat_and_thread, room_of

    assert room_of(TG_CHAT, 5, is_forum=True) == f"{TG_CHAT}:5"
    assert room_of(TG_CHAT, 5, is_forum=False) == str(TG_CHAT)
    assert chat_and_thread(f"{TG_CHAT}:5") == (TG_CHAT, 5)
    adapter = TelegramAdapter(
        TelegramSettings(telegram.token, base_url=f"{telegram.url}/bot"), [("help", "h", False)]
    )
    await adapter.connect()
    try:
        message_id = await adapter.send(Outgoing(f"{TG_CHAT}:5", "hi", agent="critic"))
        assert telegram.sent[int(message_id)].thread == 5
        same = Outgoing(f"{TG_CHAT}:5", "hi", agent="critic")
        await adapter.edit(f"{TG_CHAT}:5", message_id, same)  # 400 "not modified": no error
        telegram.rate_limit["sendMessage"] = 1
        from adapters.base import RateLimited

        with pytest.raises(RateLimited) as limited:
            await adapter.send(Outgoing(str(TG_CHAT), "again"))
        assert limited.value.retry_after == 1
        telegram.say(TG_CHAT, TG_BOB, "@potluck_bot are you there?", thread=5, forum=True)
        seen: list = []

        async def collect(incoming) -> None:  # type: ignore[no-untyped-def]
            seen.append(incoming)

        async def cursor(_c: str) -> None: ...

        await adapter.start(collect, cursor, None)
        await until(lambda: seen, what="the topic message")
        assert seen[0].room == f"{TG_CHAT}:5" and seen[0].mentions_bot
    finally:
        await adapter.stop()


async def test_buttons_pick_recipes_and_confirm_resets_and_recipes_travel_as_documents(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = telegram_home(tmp_path, telegram)
    async with gateway(env):
        telegram.say(TG_CHAT, TG_ALICE, "/recipe use", name="alice")
        picker = await until(
            lambda: next((s for s in telegram.from_bot(TG_CHAT) if s.buttons), None), what="picker"
        )
        assert ("Echo duo", "/recipe use duo") in picker.buttons
        telegram.press(TG_CHAT, TG_ALICE, picker.message_id, "/recipe use duo")
        await until(lambda: any("now runs duo@" in t for t in texts(telegram)), what="attach")
        assert telegram.answered  # the button press was acknowledged
        telegram.press(TG_CHAT, TG_BOB, picker.message_id, "/recipe use debate")  # not an admin
        await until(lambda: any("only room admins" in t for t in texts(telegram)), what="refusal")

        telegram.say(TG_CHAT, TG_ALICE, "/sandbox reset", name="alice")
        confirm = await until(
            lambda: next(
                (
                    s
                    for s in telegram.from_bot(TG_CHAT)
                    if ("Yes, reset it", "/sandbox reset confirm") in s.buttons
                ),
                None,
            ),
            what="confirmation",
        )
        assert "deleted" in confirm.text

        telegram.say(TG_CHAT, TG_ALICE, "/recipe export", name="alice")
        exported = await until(
            lambda: next((s for s in telegram.from_bot(TG_CHAT) if s.document), None), what="file"
        )
        name, data = exported.document
        assert name == "duo.yaml" and b"name: duo" in data

        card = data.replace(b"name: duo", b"name: duo-copy").replace(
            b"title: Echo duo", b"title: Copy"
        )
        chatter = telegram.post_file(
            TG_CHAT, TG_ALICE, "big.bin", b"x" * 1000, "look", user="alice"
        )
        telegram.post_file(TG_CHAT, TG_ALICE, "duo-copy.yaml", card, "/recipe import", user="alice")
        await until(
            lambda: any("imported duo-copy@" in t for t in texts(telegram)),
            what=lambda: texts(telegram),
        )
        # a file sent with chatter is never downloaded: only a command takes a file
        assert chatter and "file1" not in telegram.fetched and telegram.fetched, telegram.fetched
        telegram.post_file(
            TG_CHAT, TG_ALICE, "broken.yaml", b"potluck: 1\nname: [", "/recipe import", user="alice"
        )
        await until(
            lambda: any("broken.yaml" in t for t in texts(telegram)), what=lambda: texts(telegram)
        )


async def test_webhook_mode_checks_the_secret_and_redelivers_what_was_missed(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    import socket

    import aiohttp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = f"http://127.0.0.1:{port}/telegram/hook"
    env = {
        **telegram_home(tmp_path, telegram),
        "POTLUCK_TELEGRAM_WEBHOOK_URL": hook,
        "POTLUCK_TELEGRAM_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
    }
    async with gateway(env):
        assert telegram.webhook["url"] == hook and len(telegram.webhook["secret"]) >= 32
        telegram.say(TG_CHAT, TG_ALICE, "/recipe use duo", name="alice")
        telegram.say(TG_CHAT, TG_BOB, "by webhook", name="bob")
        await until(
            lambda: sum("by webhook" in t for t in texts(telegram)) >= 2,
            what=lambda: texts(telegram),
        )
        assert "getUpdates" not in telegram.calls
        forged = {
            "update_id": 999,
            "message": {
                "message_id": 1,
                "date": 0,
                "text": "/stop",
                "chat": {"id": TG_CHAT, "type": "group"},
                "from": {"id": TG_BOB, "is_bot": False, "first_name": "bob"},
            },
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(hook, json=forged) as response:
                assert response.status == 403
            headers = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
            async with session.post(hook, json=forged, headers=headers) as response:
                assert response.status == 403
    telegram.say(TG_CHAT, TG_BOB, "while the hook was down", name="bob")  # queued, retried
    await asyncio.sleep(0.5)
    async with gateway(env) as gw:
        await until(
            lambda: sum("while the hook was down" in t for t in texts(telegram)) >= 2,
            what=lambda: texts(telegram),
        )
        await until(lambda: not telegram.updates, what="every update confirmed by the bot")
        await settle(gw)  # nothing more is coming: updates confirmed, rooms idle, outbox drained
    assert sum("by webhook" in t and "down" not in t for t in texts(telegram)) == 2
    assert len(telegram.pushed) == len(set(telegram.pushed)) == 3
