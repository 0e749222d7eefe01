"""People's 👍/👎 from every platform, each in its own way, counted once per person per
session: Telegram message reactions and Discord reactions from the local servers speaking
their documented contracts (python-telegram-bot and discord.py unchanged), Matrix
`m.reaction` annotations and their redactions on a real Synapse, and the web room's buttons.
A reaction from someone the room does not let in is not even stored; one on a message that
shows no agent turn, or that is not a thumbs, is kept and said why it is not a vote."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from adapters.base import Reaction
from gateway.library import Library
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.records.store import Scope, record
from gateway.store.db import Store
from gateway.store.models import ReactionRow, Vote
from gateway.store.reactions import Reactions
from gateway.store.rooms import room_ids
from runtime.recipes import validate_data

from .fake_discord import FakeDiscord
from .fake_telegram import FakeTelegram
from .support import ECHO_DUO, Person, Synapse, make_home, room_with, until
from .support import running as gateway

CHAT, ALICE, BOB, CAROL = -100777, 11, 22, 33


def reactions(store: Store) -> list[ReactionRow]:
    with store.session() as db:
        return list(db.scalars(select(ReactionRow).order_by(ReactionRow.id)))


def votes(store: Store) -> dict[str, int]:
    with store.session() as db:
        return {v.voter: v.value for v in db.scalars(select(Vote))}


def settled(store: Store, count: int) -> bool:
    found = reactions(store)
    return len(found) >= count and all(r.state in ("counted", "ignored") for r in found)


def seeded(tmp: Path) -> None:
    write_key_file(tmp / "gateway.key", KeyPair.generate())
    store = Store(f"sqlite:///{tmp / 'potluck.db'}")
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO_DUO))
    store.close()


# -- Telegram ----------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.admins.add(ALICE)
    yield server
    await server.stop()


async def test_telegram_reactions_count_once_per_person_and_session(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    seeded(tmp_path)
    env = {
        "POTLUCK_HOME": str(tmp_path),
        "POTLUCK_TELEGRAM_TOKEN": telegram.token,
        "POTLUCK_TELEGRAM_BASE_URL": f"{telegram.url}/bot",
        "POTLUCK_TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
        "POTLUCK_ALLOWED_USERS": f"telegram:{ALICE},telegram:{BOB}",  # not carol
        "POTLUCK_DEFAULT_RECIPE": "duo",
    }
    async with gateway(env) as gw:
        asked = await until(lambda: telegram.allowed_updates, what="getUpdates")
        assert "message_reaction" in asked  # Telegram sends them only when asked for
        hello = telegram.say(CHAT, BOB, "hello agents", name="bob")
        turns = await until(
            lambda: (
                [s for s in telegram.from_bot(CHAT) if "echo" in s.text][:2]
                if sum("echo" in s.text for s in telegram.from_bot(CHAT)) >= 2
                else None
            ),
            what=lambda: [s.text for s in telegram.from_bot(CHAT)],
        )
        first, second = turns[0].message_id, turns[1].message_id
        store = gw.store

        telegram.react(CHAT, BOB, first, ["👍"], name="bob")
        await until(lambda: settled(store, 1), what=lambda: reactions(store))
        assert list(votes(store).values()) == [1]
        telegram.react(CHAT, BOB, second, ["👍"], name="bob")  # another turn, same session
        telegram.react(CHAT, BOB, first, ["👎"], old=["👍"], name="bob")  # changed his mind
        await until(lambda: settled(store, 4), what=lambda: reactions(store))
        assert list(votes(store).values()) == [-1]  # one vote: his latest
        telegram.react(CHAT, CAROL, first, ["👍"], name="carol")  # not let in
        telegram.react(CHAT, BOB, hello, ["👍"], name="bob")  # his own message: no turn
        telegram.react(CHAT, ALICE, second, ["❤", "👍"], name="alice")  # the admin
        await until(lambda: settled(store, 7), what=lambda: reactions(store))
        found = reactions(store)
        assert not any(r.sender == str(CAROL) for r in found)
        ignored = {r.reason for r in found if r.state == "ignored"}
        assert ignored == {"the message shows no agent turn", "'❤' is not a thumbs up or down"}
        assert telegram.dropped == []
        duo = gw.library.get("duo")
        got = record(store, Scope((duo.id,)))
        assert (got.up, got.down, got.insider_up, got.voters) == (0, 1, 1, 2)


# -- Discord -----------------------------------------------------------------------------------


async def test_discord_reactions_on_webhook_voices_count_and_a_removal_removes(
    tmp_path: Path,
) -> None:
    server = await FakeDiscord().start()
    try:
        alice, bob = server.person("alice", admin=True), server.person("bob")
        carol = server.person("carol")
        seeded(tmp_path)
        env = {
            "POTLUCK_HOME": str(tmp_path),
            "POTLUCK_DISCORD_TOKEN": server.token,
            "POTLUCK_DISCORD_API_BASE": server.api_base,
            "POTLUCK_ALLOWED_USERS": f"discord:{alice['id']},discord:{bob['id']}",
            "POTLUCK_DEFAULT_RECIPE": "duo",
        }
        channel = server.channel_id
        async with gateway(env) as gw:
            hello = await server.say(channel, bob, "hello agents")
            agents = await until(
                lambda: (
                    [p for p in server.from_bot(channel) if p.data.get("webhook_id")][:2]
                    if sum(
                        1
                        for p in server.from_bot(channel)
                        if p.data.get("webhook_id") and "echo" in p.text
                    )
                    >= 2
                    else None
                ),
                what=lambda: [p.text for p in server.from_bot(channel)],
            )
            store = gw.store
            await server.react(agents[0].data["id"], bob, "👍")
            await until(lambda: settled(store, 1), what=lambda: reactions(store))
            assert list(votes(store).values()) == [1]
            assert reactions(store)[0].target.startswith("w")  # the id `send` returned
            await server.react(agents[0].data["id"], bob, "👍", remove=True)
            await until(lambda: settled(store, 2), what=lambda: reactions(store))
            assert votes(store) == {}  # taken back: no vote
            await server.react(agents[1].data["id"], carol, "👍")  # not let in
            await server.react(hello, bob, "👎")  # a person's message
            await server.react(agents[1].data["id"], bob, "👎")
            await until(lambda: settled(store, 4), what=lambda: reactions(store))
            assert not any(r.sender == carol["id"] for r in reactions(store))
            assert list(votes(store).values()) == [-1]
            got = record(store, Scope((gw.library.get("duo").id,)))
            assert (got.up, got.down) == (0, 1)
    finally:
        await server.stop()


# -- Matrix (a real Synapse) -------------------------------------------------------------------


async def test_matrix_annotations_count_and_a_redaction_takes_the_vote_back(
    synapse: Synapse, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    alice = await Person(synapse, synapse.register(f"alice{tag}")).login()
    bob = await Person(synapse, synapse.register(f"bob{tag}")).login()
    carol = await Person(synapse, synapse.register(f"carol{tag}")).login()
    bot = synapse.register(f"potluck{tag}")
    try:
        env = make_home(
            tmp_path, synapse, bot, [f"matrix:{alice.user_id}", f"matrix:{bob.user_id}"]
        )
        env["POTLUCK_DEFAULT_RECIPE"] = "duo"
        room = await room_with(alice, bob, bot)
        await alice.client.room_invite(room, carol.user_id)
        await carol.client.join(room)  # in the room, but not on the allow-list
        async with gateway(env) as gw:
            await until(lambda: "join" in alice.memberships(room, bot), what="the bot to join")
            await bob.say(room, "hello agents")
            turns = await until(
                lambda: (
                    [m for m in bob.from_bot(room, bot) if "echo" in m["body"]][:2]
                    if sum("echo" in m["body"] for m in bob.from_bot(room, bot)) >= 2
                    else None
                ),
                what=lambda: bob.from_bot(room, bot),
            )
            store = gw.store

            async def react(person: Person, event_id: str, key: str) -> str:
                sent = await person.client.room_send(
                    room,
                    "m.reaction",
                    {
                        "m.relates_to": {
                            "rel_type": "m.annotation",
                            "event_id": event_id,
                            "key": key,
                        }
                    },
                )
                return sent.event_id

            mine = await react(bob, turns[0]["id"], "👍️")
            await until(lambda: settled(store, 1), what=lambda: reactions(store))
            assert list(votes(store).values()) == [1]
            await bob.client.room_redact(room, mine)  # takes it back
            await until(lambda: settled(store, 2), what=lambda: reactions(store))
            assert votes(store) == {}
            await react(carol, turns[1]["id"], "👍")
            down = await react(bob, turns[1]["id"], "👎")
            await until(lambda: settled(store, 3), what=lambda: reactions(store))
            assert not any(r.sender == carol.user_id for r in reactions(store))
            assert list(votes(store).values()) == [-1]
            await alice.client.room_redact(room, down)  # a moderator takes it away
            await until(lambda: settled(store, 4), what=lambda: reactions(store))
            assert votes(store) == {}
    finally:
        for person in (alice, bob, carol):
            await person.close()


# -- the web room ------------------------------------------------------------------------------


async def test_the_web_rooms_buttons_are_reactions_too(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.serve import build

    seeded(tmp_path)
    config = load_config(env={"POTLUCK_HOME": str(tmp_path), "POTLUCK_WEB_PORT": "0"})
    gw = await build(config, web=True)
    try:
        web = gw.adapters["web"]
        base = f"http://127.0.0.1:{web.port}"
        headers = {"X-Potluck-Token": web.token, "Origin": base}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=headers) as r:
                room = (await r.json())["room"]
            async with http.ws_connect(f"{base}/ws/{room}", headers=headers) as ws:
                await ws.send_json({"text": "hello"})
                turns: list[str] = []
                async for message in ws:
                    line = message.json()
                    if line["type"] == "receipt" and line["event"]["kind"] == 4741:
                        turns.append(line["id"])
                        if len(turns) == 2:
                            break
                await ws.send_json({"react": turns[0], "emoji": "👍"})
                await ws.send_json({"react": turns[1], "emoji": "👍", "removed": False})
                await until(lambda: settled(gw.store, 2), what=lambda: reactions(gw.store))
                await ws.send_json({"react": turns[1], "emoji": "👍", "removed": True})
                await until(lambda: settled(gw.store, 3), what=lambda: reactions(gw.store))
                await ws.send_json({"react": "x" * 100, "emoji": "👍"})  # refused, told
                error = await ws.receive_json(timeout=10)
                assert error["type"] == "error"
                # the room sees the record before choosing: /recipe record, /recipe show
                for command, expect in (
                    ("/recipe record", "people's verdicts"),
                    ("/recipe show", "track record: 100% of 1 exchanges completed"),
                    ("/recipe record duo solo", "too few to tell"),
                    ("/recipe use", "duo — Echo duo (track record: 100% of 1"),
                ):
                    await ws.send_json({"text": command})
                    async for message in ws:
                        line = message.json()
                        if line.get("role") == "notice" and expect in line.get("text", ""):
                            break
            async with http.get(f"{base}/api/records?ref=duo", headers=headers) as r:
                body = await r.json()
        assert [v for v in votes(gw.store).values()] == [1]
        local = body["local"]
        # the person at this machine owns the install: an insider, counted apart
        assert local["record"]["verdicts"]["insiders"] == {"up": 1, "down": 0}
        assert local["record"]["exchanges"]["n"] == 1 and "exchanges completed" in local["summary"]
    finally:
        await gw.close()
        gw.store.close()
    # A reaction stored just before a crash is counted after the restart, and only once.
    store = Store(f"sqlite:///{tmp_path / 'potluck.db'}")
    room_id = next(iter(room_ids(store, "web")))
    late = Reaction("web", room, "you", "you", turns[1], "👎", "stored-before-the-crash")
    assert Reactions(store).record(room_id, late) is not None
    assert Reactions(store).record(room_id, late) is None  # a redelivery is a no-op
    store.close()
    gw = await build(config, web=True)
    try:
        await until(lambda: settled(gw.store, 4), what=lambda: reactions(gw.store))
        assert list(votes(gw.store).values()) == [-1]
    finally:
        await gw.close()
        gw.store.close()


async def test_in_a_real_browser_a_thumb_is_counted_and_the_gallery_shows_the_record(
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    from .support import ARTIFACTS, launch, web_gateway

    async with web_gateway(tmp_path) as gw, async_playwright() as pw:
        web = gw.adapters["web"]
        browser = await launch(pw)
        page = await browser.new_page()
        await page.goto(web.url)
        await page.click("button[data-recipe=duo]")
        await page.wait_for_selector("text=now runs duo@")
        await page.fill("#text", "a plan for the weekend")
        await page.click("#send")
        # each agent's signed turn gets 👍/👎 once its receipt arrives
        await page.wait_for_function(
            "() => document.querySelectorAll('.msg.agent .votes').length >= 2", timeout=60_000
        )
        thumb = page.locator(".msg.agent").first.locator("button[data-vote='👍']")
        await thumb.click()
        await until(lambda: settled(gw.store, 1), what=lambda: reactions(gw.store))
        assert list(votes(gw.store).values()) == [1]
        assert await thumb.evaluate("b => b.classList.contains('on')")
        await page.click("#nav-gallery")
        card = page.locator(".recipe", has=page.locator("button[data-open=duo]"))
        await card.locator(".record").wait_for()
        assert "100% of 1 exchanges completed" in await card.locator(".record").inner_text()
        await page.click("button[data-open=duo]")
        await page.wait_for_function(
            "() => document.querySelector('#record').textContent.includes(\"people's verdicts\")"
        )
        text = await page.inner_text("#record")
        assert "insiders apart (room admins, the owner): 👍 1" in text
        await page.fill("#compare-with", "solo")
        await page.click("#compare")
        await page.wait_for_function(
            "() => document.querySelector('#comparison').textContent.includes('completed')"
        )
        await page.screenshot(path=str(ARTIFACTS / "web-record.png"), full_page=True)
        await browser.close()
