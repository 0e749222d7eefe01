"""The gateway's platform-free parts: command parsing, message splitting, streaming by
throttled edits through the outbox, rate limits, and the room rules (permissions, triggers,
nothing twice) — driven through an in-memory platform that speaks the adapter contract."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from adapters.base import Incoming, Outgoing
from gateway.commands import Command, CommandError, help_text, parse
from gateway.config import load_config
from gateway.library import Library
from gateway.outbox import Delivery, Stream, split_paragraphs
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.service import Gateway
from gateway.store.db import Store
from gateway.store.models import Outbox
from runtime.models.client import Models
from runtime.recipes import validate_data

from .support import ECHO, MemoryPlatform, msg, said, settle

# -- pure parts -------------------------------------------------------------------------------


def test_commands_parse_with_usage_help_on_every_mistake() -> None:
    assert parse("hello") is None
    use = parse("/recipe use debate@abc1234")
    assert isinstance(use, Command) and use.name == "recipe use" and use.args == ("debate@abc1234",)
    assert parse("!potluck recipe list") == Command("recipe list", (), "")
    assert parse("/run tell me 'a story'") == Command(
        "run", ("tell", "me", "a story"), "tell me 'a story'"
    )
    assert parse("/stop@potluck_bot", bot_names=("potluck_bot",)) == Command("stop", (), "")
    assert parse("/stop@other_bot", bot_names=("potluck_bot",)) is None
    for text, needle in [
        ("/recipe", "/recipe needs a subcommand"),
        ("/recipe frob", "'frob' is not a recipe command"),
        ("/recipe use a b", "usage: /recipe use NAME[@VERSION]"),
        ("/frobnicate", "unknown command /frobnicate. Try /help"),
        ('/run "unclosed', "check your quotes"),
    ]:
        error = parse(text)
        assert isinstance(error, CommandError) and needle in error.message, (text, error)
    assert "/recipe use" not in help_text(is_admin=False)
    assert "/recipe use" in help_text(is_admin=True)


def test_long_text_splits_between_paragraphs() -> None:
    text = "\n\n".join(f"paragraph {n} " + "word " * 30 for n in range(10))
    pieces = split_paragraphs(text, 400)
    assert all(len(p) <= 400 for p in pieces)
    assert "\n\n".join(pieces) == text
    assert all(p.startswith("paragraph") for p in pieces)
    giant = "x" * 1000 + " " + "y" * 50
    assert all(len(p) <= 400 for p in split_paragraphs(giant, 400))
    assert "".join(split_paragraphs(giant, 400)).replace(" ", "") == giant.replace(" ", "")


# -- streaming --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    from gateway.store.rooms import ensure_room

    assert ensure_room(store, "mem", "room") == 1  # the outbox belongs to a room
    return store


async def test_a_turn_streams_by_throttled_edits_and_a_429_loses_nothing(store: Store) -> None:
    platform = MemoryPlatform()
    delivery = Delivery(platform, store)
    stream = Stream(delivery, 1, "room", "critic", interval_s=0.2)
    await stream.open()
    text = ""
    started = time.monotonic()
    for n in range(60):  # 60 tokens over ~0.6 s
        text += f"w{n} "
        if n == 30:
            platform.limit_next = 1  # the platform says 429 mid-stream
        await stream.update(text)
        await asyncio.sleep(0.01)
    platform.limit_next = 2  # and twice more on the final edit
    await stream.finish(text.strip())
    elapsed = time.monotonic() - started
    times = [t for _id, _text, t in platform.edits]
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the final edit is unthrottled
    assert len(platform.edits) < 12  # throttled, not one edit per token
    assert all(gap >= 0.15 for gap in gaps), gaps
    assert platform.texts["m1"] == text.strip()  # the final text arrived whole
    assert elapsed >= 0.6  # the 429s delayed it
    with store.session() as db:
        row = db.get(Outbox, stream.row_id)
        assert row.state == "sent" and row.platform_message_id == "m1"


async def test_a_turn_longer_than_a_message_continues_in_new_messages(store: Store) -> None:
    platform = MemoryPlatform()
    stream = Stream(Delivery(platform, store), 1, "room", "critic", interval_s=0.0)
    await stream.open()
    long = "\n\n".join("para " + "x" * 200 for _ in range(6))
    await stream.finish(long)
    bodies = [platform.texts[f"m{n}"] for n in range(1, len(platform.sent) + 1)]
    assert len(bodies) >= 3 and all(len(b) <= 500 for b in bodies)
    assert "\n\n".join(bodies) == long


# -- rooms ------------------------------------------------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path, store: Store):  # type: ignore[no-untyped-def]
    config = load_config(
        env={
            "POTLUCK_HOME": str(tmp_path),
            "POTLUCK_ALLOWED_USERS": "mem:alice,mem:bob",
            "POTLUCK_ADMINS": "mem:alice",
        }
    )
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO))
    gw = Gateway(
        config,
        store,
        library,
        Ledger(store, KeyPair.generate()),
        Models(),
        default_recipe="echo-room",
    )
    platform = MemoryPlatform()
    await gw.add_adapter(platform)
    yield gw, platform
    await gw.close()


async def test_room_rules_closed_by_default_mentions_and_nothing_twice(gateway) -> None:  # type: ignore[no-untyped-def]
    gw, platform = gateway
    await platform.on_incoming(msg("mallory", "@echo hi", "e0", True))  # not allowed
    await platform.on_incoming(msg("bob", "just chatting", "e1"))  # observed, not addressed
    await platform.on_incoming(msg("bob", "@echo what do you think?", "e2"))
    await platform.on_incoming(msg("bob", "@echo what do you think?", "e2"))  # redelivered
    await settle(gw)
    answers = [t for t in said(platform) if t.startswith("echo:")]
    assert len(answers) == 1 and "what do you think" in answers[0]
    assert gw.counters["refused"] == 1 and gw.counters["incoming"] == 2
    await platform.on_incoming(msg("bob", "/recipe use debate", "e3"))
    await settle(gw)
    assert any("only room admins" in t for t in said(platform))
    await platform.on_incoming(msg("alice", "/recipe use debate", "e4"))
    await settle(gw)
    assert any("now runs debate@" in t for t in said(platform))


async def test_a_command_stored_before_a_crash_is_judged_by_its_sender_after_it(
    tmp_path: Path, store: Store
) -> None:
    from gateway.store.models import Message
    from gateway.store.rooms import ensure_room

    room_id = ensure_room(store, "mem", "r1")
    with store.session.begin() as db:  # stored, never handled: the gateway died here
        db.add(
            Message(
                room_id=room_id,
                platform_event_id="e9",
                direction="in",
                sender="alice",
                sender_id="alice",
                text="/recipe use debate",
                state="received",
            )
        )
    config = load_config(env={"POTLUCK_HOME": str(tmp_path), "POTLUCK_ADMINS": "mem:alice"})
    library = Library(store)
    library.sync_bundled()
    gw = Gateway(config, store, library, Ledger(store, KeyPair.generate()), Models())
    platform = MemoryPlatform()
    await gw.add_adapter(platform)
    try:
        await settle(gw)
        assert any("now runs debate@" in t for t in said(platform)), said(platform)
    finally:
        await gw.close()


async def test_after_a_crash_only_messages_that_addressed_the_bot_are_answered(
    tmp_path: Path, store: Store
) -> None:
    from gateway.store.models import Message
    from gateway.store.rooms import ensure_room

    room_id = ensure_room(store, "mem", "r1")
    with store.session.begin() as db:  # both stored, neither handled: the gateway died here
        for event, text, addressed in (("e1", "just chatting", False), ("e2", "hello?", True)):
            db.add(
                Message(
                    room_id=room_id,
                    platform_event_id=event,
                    direction="in",
                    sender="bob",
                    sender_id="bob",
                    addressed=addressed,
                    text=text,
                    state="received",
                )
            )
    config = load_config(env={"POTLUCK_HOME": str(tmp_path), "POTLUCK_ALLOWED_USERS": "mem:bob"})
    library = Library(store)
    library.save(validate_data(ECHO))
    ledger = Ledger(store, KeyPair.generate())
    gw = Gateway(config, store, library, ledger, Models(), default_recipe="echo-room")
    platform = MemoryPlatform()
    await gw.add_adapter(platform)
    try:
        await settle(gw)
        answers = [t for t in said(platform) if t.startswith("echo:")]
        assert len(answers) == 1 and "hello?" in answers[0], said(platform)
        assert "just chatting" in answers[0]  # still there, as observed context
    finally:
        await gw.close()


async def test_a_notice_resent_after_a_crash_keeps_its_buttons_and_files(store: Store) -> None:
    from adapters.base import Attachment
    from gateway.store.rooms import ensure_room

    room_id = ensure_room(store, "mem", "r1")
    platform = MemoryPlatform()
    delivery = Delivery(platform, store)
    original = Outgoing(
        "r1",
        "Pick one",
        None,
        "e7",
        True,
        (Attachment("a.yaml", "application/yaml", b"name: a\n\x00\xff"),),
        (("Debate", "/recipe use debate"),),
    )
    delivery._row(room_id, original, "pending")  # recorded, then the gateway died
    assert await Delivery(platform, store).recover({room_id: "r1"}) == 1
    assert platform.sent == [original]


def test_budget_periods_are_calendar_windows() -> None:
    from datetime import UTC, datetime

    from gateway.budgets import Spent, over_limit, period_end, period_start

    moment = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # a Wednesday
    assert period_start(moment, "day") == datetime(2026, 11, 25, tzinfo=UTC)
    assert period_start(moment, "week") == datetime(2026, 11, 23, tzinfo=UTC)
    assert period_start(moment, "month") == datetime(2026, 11, 1, tzinfo=UTC)
    assert period_end(moment, "month") == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end(datetime(2026, 12, 31, tzinfo=UTC), "month") == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    limits = {"period": "day", "room_usd": 1.0, "user_tokens": 100}
    assert over_limit(limits, Spent(50, 0.99), Spent(99, 0)) is None
    assert "this room's daily budget of $1.00" in str(
        over_limit(limits, Spent(0, 1.0), Spent(0, 0))
    )
    assert "your daily budget of 100 tokens" in str(over_limit(limits, Spent(0, 0), Spent(100, 0)))


async def test_budgets_per_room_and_person_stop_the_agents_with_a_clear_message(
    tmp_path: Path, store: Store
) -> None:
    config = load_config(
        env={
            "POTLUCK_HOME": str(tmp_path),
            "POTLUCK_ALLOWED_ROOMS": "mem:*",
            "POTLUCK_BUDGET_ROOM_TOKENS": "60",
            "POTLUCK_BUDGET_USER_TOKENS": "100",
        }
    )
    library = Library(store)
    library.save(validate_data({**ECHO, "trigger": "every_message"}))
    ledger = Ledger(store, KeyPair.generate())
    gw = Gateway(config, store, library, ledger, Models(), default_recipe="echo-room")
    platform = MemoryPlatform()
    await gw.add_adapter(platform)
    try:
        for n in range(4):  # the room's 60 tokens go after a few exchanges
            await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", f"hi {n}", f"a{n}"))
        await settle(gw)
        stopped = [t for t in said(platform) if "budget" in t]
        assert stopped and "this room's daily budget of 60 tokens is spent" in stopped[0]
        assert "resets" in stopped[0]
        answered = sum(t.startswith("echo:") for t in said(platform))
        assert 0 < answered < 4

        # another room: bob's own 100 tokens run out there too; carol is still fine
        for n in range(6):
            await platform.on_incoming(Incoming("mem", "r2", "bob", "bob", f"yo {n}", f"b{n}"))
        await settle(gw)
        assert any("your daily budget of 100 tokens is spent" in t for t in said(platform))
        before = sum(t.startswith("echo:") for t in said(platform))
        await platform.on_incoming(Incoming("mem", "r2", "carol", "carol", "me?", "c1"))
        await settle(gw)
        assert sum(t.startswith("echo:") for t in said(platform)) == before + 1

        await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", "/budget", "d1"))
        await settle(gw)
        report = said(platform)[-1]
        assert "echo on scripted/echo:" in report and "(limit 60 tokens)" in report
        assert "you:" in report and "(limit 100 tokens)" in report
    finally:
        await gw.close()


async def test_a_recipe_cannot_ask_for_more_spend_than_the_install_allows(
    tmp_path: Path, store: Store
) -> None:
    """A stranger's recipe asking for 10M tokens and no cost limit a session gets the
    install's ceiling ([budgets] session_tokens / session_usd), and the room is told."""
    config = load_config(
        env={
            "POTLUCK_HOME": str(tmp_path),
            "POTLUCK_ALLOWED_ROOMS": "mem:*",
            "POTLUCK_BUDGET_SESSION_TOKENS": "120",
        }
    )
    greedy = {
        **ECHO,
        "name": "greedy",
        "trigger": "every_message",
        "limits": {"max_tokens": 10_000_000, "max_cost_usd": 0},
    }
    library = Library(store)
    library.save(validate_data(ECHO))
    library.save(validate_data(greedy))
    ledger = Ledger(store, KeyPair.generate())
    gw = Gateway(config, store, library, ledger, Models(), default_recipe="echo-room")
    platform = MemoryPlatform()
    platform.admins.add("alice")
    await gw.add_adapter(platform)
    try:
        await platform.on_incoming(
            Incoming("mem", "r1", "alice", "alice", "/recipe use greedy", "u")
        )
        await settle(gw)
        told = [t for t in said(platform) if "caps the recipe's session budget" in t]
        assert told, said(platform)
        assert "10000000 tokens a session → 120" in told[0]
        assert "no cost limit a session → $2.00" in told[0]
        for n in range(12):
            await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", f"hi {n}", f"a{n}"))
        await settle(gw)
        assert any("the session's token budget (120) is spent" in t for t in said(platform))
        answered = sum(t.startswith("echo:") for t in said(platform))
        assert 0 < answered < 12
    finally:
        await gw.close()


def test_the_watch_hub_forgets_the_quietest_unwatched_room_beyond_its_bound() -> None:
    """Anyone can add the bot to rooms an allow-list like `telegram:*` admits: the hub's
    memory stays bounded, and a room someone is watching is never the one forgotten."""
    from gateway.watch import ROOMS, Watch

    watch = Watch()
    line = {"type": "message", "who": "p", "role": "person", "text": "hi"}
    watch.publish("mem:first", {**line, "id": "0"})
    watched = watch.subscribe("mem:first")
    for n in range(ROOMS + 10):
        watch.publish(f"mem:{n}", {**line, "id": str(n)})
    rooms = watch.rooms()
    assert len(rooms) == ROOMS
    assert "mem:first" in rooms and "mem:0" not in rooms and f"mem:{ROOMS + 9}" in rooms
    assert watched.get_nowait()["text"] == "hi"
    assert len(watch._index) == ROOMS  # one line per room remembered, no more
