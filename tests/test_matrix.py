"""The gateway and its Matrix adapter against a real Synapse on loopback.

People are real Matrix clients (matrix-nio) with their own accounts; the bot is the gateway,
in this process or as a `potluck serve` process that the restart test kills with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from gateway.config import load_config
from gateway.library import Library
from gateway.serve import build
from gateway.store.db import Store
from runtime.recipes import validate_data

from .support import (
    ECHO_DUO,
    Person,
    Synapse,
    make_home,
    quiet_process,
    room_with,
    running,
    serve,
    until,
)


async def test_invited_bot_runs_a_recipe_and_refuses_non_admins(
    synapse: Synapse, people: tuple[Person, Person, str], tmp_path: Path
) -> None:
    alice, bob, bot = people
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}", f"matrix:{bob.user_id}"])
    config = load_config(env=env)
    room = await room_with(alice, bob, bot)
    gateway = await build(config)
    try:
        await until(lambda: "join" in alice.memberships(room, bot), what="the bot to join")
        await alice.say(room, "/recipe use duo")
        await until(
            lambda: any("now runs duo@" in m["body"] for m in alice.from_bot(room, bot)),
            what=lambda: f"the recipe to attach: {alice.from_bot(room, bot)}",
        )
        await alice.say(room, "hello agents")
        answers = await until(
            lambda: (
                [
                    m
                    for m in alice.from_bot(room, bot)
                    if m["msgtype"] == "m.text"
                    and m["body"].startswith(("first:", "second:"))
                    and "echo" in m["body"]
                ][:2]
                if len([m for m in alice.from_bot(room, bot) if "echo" in m["body"]]) >= 2
                else None
            ),
            what="two agent turns",
        )
        assert answers[0]["body"].startswith("first: echo:")
        assert answers[1]["body"].startswith("second: echo:")
        assert "hello agents" in answers[0]["body"]
        # bob is allowed to talk but is no room admin (power level 0)
        await bob.say(room, "/recipe set agents.first.temperature 0.1")
        await until(
            lambda: any("only room admins" in m["body"] for m in alice.from_bot(room, bot)),
            what="the refusal",
        )
        await bob.say(room, "/recipe frobnicate")
        await until(
            lambda: any(
                "'frobnicate' is not a recipe command" in m["body"]
                for m in alice.from_bot(room, bot)
            ),
            what="usage help",
        )
        # the admin may edit; receipts verify
        await alice.say(room, "/recipe set agents.first.temperature 0.1")
        await until(
            lambda: any(
                "~ agents[first].temperature" in m["body"]
                or ("temperature" in m["body"] and "duo@" in m["body"])
                for m in alice.from_bot(room, bot)
            ),
            what="the edit",
        )
        await alice.say(room, "/receipts")
        await until(
            lambda: any("chain verified" in m["body"] for m in alice.from_bot(room, bot)),
            what="receipts",
        )
    finally:
        await gateway.close()
        gateway.store.close()


async def test_a_thread_is_a_room_of_its_own_and_agents_answer_in_it(
    synapse: Synapse, people: tuple[Person, Person, str], tmp_path: Path
) -> None:
    alice, bob, bot = people
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}"])
    # the main room's recipe answers only when addressed: its own timing stays out of this
    env["POTLUCK_DEFAULT_RECIPE"] = "quiet-echo"
    store = Store(env["POTLUCK_DATABASE_URL"])
    Library(store).save(validate_data({**ECHO_DUO, "name": "quiet-echo", "trigger": "mention"}))
    store.close()
    room = await room_with(alice, bob, bot)
    async with running(env):
        await until(lambda: "join" in alice.memberships(room, bot), what="the bot to join")
        root = await alice.say(room, "a thread about duos")
        await alice.say(room, "/recipe use duo", thread=root)
        await until(
            lambda: any("now runs duo@" in m["body"] for m in alice.from_bot(room, bot)),
            what="the recipe to attach in the thread",
        )
        await alice.say(room, "hello thread", thread=root)
        turns = await until(
            lambda: (
                found
                if len(
                    found := [
                        m
                        for m in alice.from_bot(room, bot)
                        if m["msgtype"] == "m.text" and "hello thread" in m["body"]
                    ]
                )
                >= 2
                else None
            ),
            what="two agent turns in the thread",
        )
        in_thread = [
            m
            for m in alice.from_bot(room, bot)
            if "hello thread" in m["body"] or "now runs duo@" in m["body"]
        ]
        assert in_thread and all(m["thread"] == root for m in in_thread), in_thread
        assert [m["profile"] for m in turns[:2]] == ["first", "second"]
        # the main room kept its own (default) recipe: the thread's attach did not touch it
        await alice.say(room, "/recipe show")
        shown = await until(
            lambda: [
                m
                for m in alice.from_bot(room, bot)
                if m["thread"] is None and m["msgtype"] == "m.notice"
            ],
            what=lambda: f"an answer in the main room: {alice.from_bot(room, bot)}",
        )
        assert "duo@" not in shown[0]["body"]
    # a restart resumes the bot's device instead of logging in a new one each time
    session = Path(env["POTLUCK_HOME"]) / "matrix-session.json"
    assert session.stat().st_mode & 0o777 == 0o600
    device = json.loads(session.read_text())["device_id"]
    async with running(env) as gateway:
        assert gateway.adapters["matrix"].client.device_id == device
        await alice.say(room, "still there?", thread=root)
        await until(
            lambda: any("still there?" in m["body"] for m in alice.from_bot(room, bot)),
            what="an answer after the restart",
        )


async def test_an_encrypted_room_is_refused_in_the_open(
    synapse: Synapse, people: tuple[Person, Person, str], tmp_path: Path
) -> None:
    alice, bob, bot = people
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}"])
    room = await room_with(alice, bob, bot, encrypted=True)
    async with running(env):
        await until(lambda: "leave" in alice.memberships(room, bot), what="the bot to leave")
        assert any("end-to-end encrypted" in m["body"] for m in alice.from_bot(room, bot))


async def test_invites_from_strangers_are_declined(
    synapse: Synapse, people: tuple[Person, Person, str], tmp_path: Path
) -> None:
    alice, bob, bot = people
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}"])
    created = await bob.client.room_create(name="bob's", invite=[bot])
    async with running(env):
        await until(lambda: "leave" in bob.memberships(created.room_id, bot), what="decline")
        assert "join" not in bob.memberships(created.room_id, bot)


async def test_kill_9_mid_turn_loses_nothing_and_answers_nothing_twice(
    synapse: Synapse, people: tuple[Person, Person, str], tmp_path: Path
) -> None:
    alice, bob, bot = people
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}"])
    room = await room_with(alice, bob, bot)
    log = tmp_path / "serve.log"
    process = serve(env, log)
    try:
        await until(lambda: "join" in alice.memberships(room, bot), 60, "the bot to join")
        await alice.say(room, "/recipe use slow")
        await until(
            lambda: any("now runs slow@" in m["body"] for m in alice.from_bot(room, bot)),
            what="attach",
        )
        await alice.say(room, "tell me a long story")
        await until(
            lambda: any("tick3" in m["body"] for m in alice.from_bot(room, bot)),
            what="the turn to stream",
        )
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        # while the gateway is down, alice says something it must not miss
        await alice.say(room, "are you still there?")
        process = serve(env, log)
        await until(
            lambda: any("cut off" in m["body"] for m in alice.from_bot(room, bot)),
            60,
            "the cut-off marking",
        )
        turns = await until(
            lambda: (
                [
                    m
                    for m in alice.from_bot(room, bot)
                    if m["body"].startswith("slowpoke:")
                    and m["body"].rstrip().endswith("tick199")
                    and "cut off" not in m["body"]
                ]
                or None
            ),
            90,
            lambda: (
                "the missed message's answer: "
                + str([m["body"][:60] + "…" + m["body"][-30:] for m in alice.from_bot(room, bot)])
            ),
        )
        await quiet_process(log)  # nothing more is coming: the gateway is idle
        await alice.caught_up()
        finished = [m for m in alice.from_bot(room, bot) if m["body"].startswith("slowpoke:")]
        # exactly two turns: the one cut off, and the answer to the message sent meanwhile
        assert len(finished) == 2, [m["body"][:80] for m in finished]
        assert len(turns) == 1
        assert "[cut off" in finished[0]["body"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
