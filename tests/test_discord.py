"""The Discord adapter, unmodified discord.py, against a local server speaking Discord's REST
API and Gateway WebSocket (tests/fake_discord.py): slash commands with autocomplete, one
webhook voice per agent, streaming edits through a 429, threads, buttons, files, the
Message Content intent check, and a restart that neither loses nor repeats a message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.library import Library
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.store.db import Store
from runtime.recipes import validate_data

from .fake_discord import MANAGE_WEBHOOKS, FakeDiscord
from .support import ECHO_DUO, by, discord_texts, settle, until
from .support import running as gateway

SLOW_DUO = {
    **ECHO_DUO,
    "name": "slowduo",
    "title": "Slow duo",
    "agents": [
        {"name": "first", "model": "scripted/slow", "persona": "You ramble."},
        {"name": "second", "model": "scripted/echo", "persona": "You echo."},
    ],
}


@pytest.fixture
async def discord_server() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.stop()


def home(tmp: Path, server: FakeDiscord, allowed: list[dict[str, Any]]) -> dict[str, str]:
    if not (tmp / "gateway.key").exists():
        write_key_file(tmp / "gateway.key", KeyPair.generate())
    store = Store(f"sqlite:///{tmp / 'potluck.db'}")
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO_DUO))
    library.save(validate_data(SLOW_DUO))
    store.close()
    return {
        "POTLUCK_HOME": str(tmp),
        "POTLUCK_DISCORD_TOKEN": server.token,
        "POTLUCK_DISCORD_API_BASE": server.api_base,
        "POTLUCK_ALLOWED_USERS": ",".join(f"discord:{u['id']}" for u in allowed),
        "POTLUCK_DEFAULT_RECIPE": "duo",
    }


async def test_slash_commands_agents_as_webhooks_a_429_mid_stream_and_non_admins(
    discord_server: FakeDiscord, tmp_path: Path
) -> None:
    server = discord_server
    alice, bob = server.person("alice", admin=True), server.person("bob")
    channel = server.channel_id
    async with gateway(home(tmp_path, server, [alice, bob])):
        names = {c["name"] for c in server.commands}
        assert {"recipe", "help", "run", "stop", "budget", "receipts", "sandbox"} <= names
        recipe = next(c for c in server.commands if c["name"] == "recipe")
        assert {"use", "fork", "set", "import"} <= {o["name"] for o in recipe["options"]}
        assert "duo" in await server.autocomplete(channel, alice, "recipe", "use", "d")
        assert await server.autocomplete(channel, alice, "recipe", "fork", "duo sl") == [
            "duo slowduo"
        ]

        interaction = await server.slash(channel, alice, "recipe", "use", args="slowduo")
        callback = await server.callback_for(interaction["id"])
        assert callback["type"] == 4 and "recipe use slowduo" in callback["data"]["content"]
        await until(
            lambda: any("now runs slowduo@" in t for t in discord_texts(server, channel)),
            what=lambda: discord_texts(server, channel),
        )
        server.rate_limit["PATCH webhook"] = 1  # a 429 in the middle of the stream
        await server.say(channel, bob, "hello agents")
        await until(
            lambda: any(t.startswith("echo:") for t in by(server, channel, "second")),
            what=lambda: discord_texts(server, channel),
            timeout=60,
        )
        first = next(p for p in server.from_bot(channel) if p.data["author"]["username"] == "first")
        assert first.data["webhook_id"] and first.text.endswith("tick199")  # nothing lost
        assert len(first.edits) >= 2 and server.limited == ["PATCH webhook"]
        assert by(server, channel, "second")[0].startswith("echo:")  # it heard "first"

        await server.say(channel, bob, "!potluck recipe use duo")
        await until(
            lambda: any("only room admins" in t for t in discord_texts(server, channel)),
            what="refusal",
        )
        interaction = await server.slash(channel, bob, "help")
        await until(
            lambda: any("Manage Webhooks" in t for t in discord_texts(server, channel)), what="help"
        )
        assert not any(
            "/recipe use NAME" in t for t in discord_texts(server, channel)
        )  # not an admin

        thread = await server.start_thread("side talk", alice)  # a room of its own
        await server.say(thread, alice, "over here", mention_bot=True)
        await until(
            lambda: any(t.startswith("echo:") for t in by(server, thread, "second")),
            what=lambda: discord_texts(server, thread),
        )
        assert all(p.data["webhook_id"] for p in server.from_bot(thread))


async def test_a_restart_neither_loses_nor_repeats_a_message(
    discord_server: FakeDiscord, tmp_path: Path
) -> None:
    server = discord_server
    bob = server.person("bob")
    channel = server.channel_id
    env = home(tmp_path, server, [bob])
    async with gateway(env):
        await server.say(channel, bob, "first message")
        await until(
            lambda: any(t.startswith("echo:") for t in by(server, channel, "second")),
            what="the first answer",
        )
    await server.say(channel, bob, "said while the gateway was down", online=False)
    async with gateway(env) as gw:
        await until(
            lambda: sum(t.startswith("echo:") for t in by(server, channel, "second")) >= 2,
            what=lambda: discord_texts(server, channel),
        )
        await settle(gw)  # nothing more is coming: rooms idle, outbox drained
    seconds = by(server, channel, "second")
    assert len(seconds) == 2 and "down" in seconds[1] and "down" not in seconds[0]
    answers = by(server, channel, "first")
    assert sum("first message" in t and "down" not in t for t in answers) == 1


async def test_threads_are_rooms_and_without_webhooks_agents_get_labels(
    discord_server: FakeDiscord, tmp_path: Path
) -> None:
    server = discord_server
    alice = server.person("alice", admin=True)
    server.bot_permissions &= ~MANAGE_WEBHOOKS
    async with gateway(home(tmp_path, server, [alice])):
        thread = await server.start_thread("planning", alice)
        await server.say(thread, alice, "in the thread", mention_bot=True)
        said = await until(
            lambda: [t for t in discord_texts(server, thread) if t.startswith("**second**: echo")],
            what=lambda: discord_texts(server, thread),
        )
        assert "in the thread" in said[0]
        shown = discord_texts(server, thread)
        assert sum("Manage Webhooks" in t for t in shown) == 1  # said once, not per turn
        assert shown.index(next(t for t in shown if t.startswith("**first**"))) > 0
        assert not server.from_bot(server.channel_id)  # nothing leaked into the parent


async def test_buttons_pick_a_recipe_and_recipes_travel_as_files(
    discord_server: FakeDiscord, tmp_path: Path
) -> None:
    server = discord_server
    alice = server.person("alice", admin=True)
    channel = server.channel_id
    async with gateway(home(tmp_path, server, [alice])):
        await server.say(channel, alice, "!potluck recipe use")
        picker = await until(
            lambda: next((p for p in server.from_bot(channel) if p.data["components"]), None),
            what="the picker",
        )
        buttons = [c for row in picker.data["components"] for c in row["components"]]
        debate = next(b for b in buttons if b["custom_id"] == "potluck:/recipe use debate")
        await server.press(picker.data["id"], debate["custom_id"], alice)
        await until(lambda: any("now runs debate@" in t for t in discord_texts(server, channel)))

        await server.say(channel, alice, "!potluck recipe export duo")
        exported = await until(
            lambda: next((p for p in server.from_bot(channel) if p.data["attachments"]), None),
            what="the exported file",
        )
        attachment = exported.data["attachments"][0]
        assert attachment["filename"] == "duo.yaml"
        card = server.files[attachment["id"]].replace(b"name: duo", b"name: duo-copy")
        await server.slash(channel, alice, "recipe", "import", file=("duo-copy.yaml", card))
        await until(
            lambda: any("imported duo-copy@" in t for t in discord_texts(server, channel)),
            what=lambda: discord_texts(server, channel),
        )


async def test_a_missing_message_content_intent_is_explained(tmp_path: Path) -> None:
    server = await FakeDiscord(content_intent=False).start()
    try:
        with pytest.raises(RuntimeError, match="MESSAGE CONTENT INTENT"):
            async with gateway(home(tmp_path, server, [])):
                pass
    finally:
        await server.stop()
