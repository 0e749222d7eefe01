"""One `potluck serve` gateway, three platforms at once: the same recipe attached in a Matrix
room (real Synapse), a Telegram group and a Discord channel (local servers speaking their
APIs), each room holding its own conversation, with receipts that verify per session."""

from __future__ import annotations

import uuid
from pathlib import Path

from gateway.config import load_config
from gateway.serve import build

from .fake_discord import FakeDiscord
from .fake_telegram import FakeTelegram
from .support import Person, Synapse, by, make_home, room_with, until

CHAT, ALICE = -100777, 11


async def test_the_same_recipe_runs_on_matrix_telegram_and_discord_from_one_gateway(
    synapse: Synapse, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    alice = await Person(synapse, synapse.register(f"alice{tag}")).login()
    bob = await Person(synapse, synapse.register(f"bob{tag}")).login()
    bot = synapse.register(f"potluck{tag}")
    telegram = FakeTelegram()
    await telegram.start()
    telegram.admins.add(ALICE)
    discord = await FakeDiscord().start()
    dana = discord.person("dana", admin=True)
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}"])
    env.update(
        {
            "POTLUCK_TELEGRAM_TOKEN": telegram.token,
            "POTLUCK_TELEGRAM_BASE_URL": f"{telegram.url}/bot",
            "POTLUCK_TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
            "POTLUCK_DISCORD_TOKEN": discord.token,
            "POTLUCK_DISCORD_API_BASE": discord.api_base,
            "POTLUCK_ALLOWED_USERS": f"matrix:{alice.user_id},discord:{dana['id']}",
            "POTLUCK_ALLOWED_ROOMS": f"telegram:{CHAT}",
        }
    )
    room = await room_with(alice, bob, bot)
    gateway = await build(load_config(env=env))
    try:
        assert set(gateway.adapters) == {"matrix", "telegram", "discord"}
        await until(lambda: "join" in alice.memberships(room, bot), what="the bot to join")
        await alice.say(room, "/recipe use duo")
        telegram.say(CHAT, ALICE, "/recipe use duo", name="alice")
        await discord.slash(discord.channel_id, dana, "recipe", "use", args="duo")
        await until(
            lambda: (
                any("now runs duo@" in m["body"] for m in alice.from_bot(room, bot))
                and any("now runs duo@" in s.text for s in telegram.from_bot(CHAT))
                and any("now runs duo@" in p.text for p in discord.from_bot(discord.channel_id))
            ),
            what="duo attached in all three rooms",
        )
        await alice.say(room, "hello from matrix")
        telegram.say(CHAT, ALICE, "hello from telegram", name="alice")
        await discord.say(discord.channel_id, dana, "hello from discord")

        def answered() -> bool:
            matrix = [m["body"] for m in alice.from_bot(room, bot) if "echo" in m["body"]]
            tg = [s.text for s in telegram.from_bot(CHAT) if "echo" in s.text]
            dc = [t for t in by(discord, discord.channel_id, "second") if "echo" in t]
            return (
                sum("hello from matrix" in t for t in matrix) >= 2
                and sum("hello from telegram" in t for t in tg) >= 2
                and any("hello from discord" in t for t in dc)
            )

        await until(answered, what="both agents answering in every room", timeout=60)
        # each room heard only its own people
        assert not any("telegram" in m["body"] for m in alice.from_bot(room, bot))
        assert not any("discord" in s.text for s in telegram.from_bot(CHAT))
        sessions = [r.conversation.session_id for r in gateway.rooms.all() if r.conversation]
        assert len(sessions) == 3
        assert all(gateway.ledger.verify_session(s).ok for s in sessions)
    finally:
        await gateway.close()
        gateway.store.close()
        await alice.close()
        await bob.close()
        await telegram.stop()
        await discord.stop()
