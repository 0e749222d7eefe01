"""The one exchange path: a message's way from a platform to its receipt, and the bugs that
hid in the gateway's two copies of it (`potluck serve` and `potluck run`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from adapters.base import Capabilities, Incoming
from gateway.admission import admit, allowed, answers, may_invite
from gateway.config import load_config
from gateway.library import Library
from gateway.receipts import kinds
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.service import Gateway
from gateway.store.db import Store
from gateway.store.models import Publication, ReceiptRow, Session
from gateway.store.rooms import update_settings
from runtime.models.client import Models
from runtime.recipes import validate_data

from .support import (
    ECHO,
    ECHO_DUO,
    MemoryPlatform,
    engine,
    running,
    said,
    settle,
)

CRITIC = validate_data(
    {
        "potluck": 1,
        "name": "critics",
        "title": "Critics",
        "agents": [{"name": "critic", "model": "scripted/echo", "persona": "You criticise."}],
        "protocol": {"max_rounds": 1, "max_turns": 1},
        "trigger": "mention",
    }
)


def incoming(text: str, **kw: object) -> Incoming:
    fields = {"platform": "telegram", "room": "-100", "sender": "7", "sender_name": "ann"}
    fields.update(kw)  # type: ignore[arg-type]
    return Incoming(text=text, event_id="e1", **fields)  # type: ignore[arg-type]


# -- the pure decisions -----------------------------------------------------------------------


def test_an_agent_is_woken_by_its_name_as_a_word_not_as_part_of_another() -> None:
    # the gateway used a prefix match ("criticism" woke "critic"); the conductor, word
    # boundaries: one rule now, in both places
    for text, wakes in [
        ("criticism is cheap", False),
        ("the critics agree", False),
        ("critic, what do you think?", True),
        ("what does @critic say", True),
        ("Critic: go", True),
        ("hypercritic", False),
    ]:
        assert answers(CRITIC, incoming(text), addressed=False) is wakes, text
    assert answers(CRITIC, incoming("anyone?"), addressed=True)  # a mention of the bot


def test_commands_are_parsed_once_with_the_bots_own_names() -> None:
    config = load_config(env={"POTLUCK_HOME": "/nonexistent", "POTLUCK_ALLOWED_ROOMS": "*"})
    ours = Capabilities(bot_names=("potluck_bot",))
    assert admit(config, ours, incoming("/stop@potluck_bot")).kind == "stop"
    assert admit(config, ours, incoming("/stop")).kind == "stop"
    other = admit(config, ours, incoming("/stop@other_bot"))
    assert other.kind == "talk" and not other.addressed  # someone else's bot: not ours
    assert admit(config, ours, incoming("/recipe@other_bot use debate")).kind == "talk"
    use = admit(config, ours, incoming("/recipe use debate"))
    assert use.kind == "command" and use.command.name == "recipe use"  # type: ignore[union-attr]


def test_one_allow_list_for_messages_and_invitations() -> None:
    config = load_config(
        env={
            "POTLUCK_HOME": "/nonexistent",
            "POTLUCK_ALLOWED_USERS": "matrix:@ann:hs",
            "POTLUCK_ALLOWED_ROOMS": "telegram:-100",
        }
    )
    closed = Capabilities()
    assert allowed(config, closed, incoming("hi", platform="matrix", sender="@ann:hs"))
    assert not allowed(config, closed, incoming("hi", platform="matrix", sender="@bob:hs"))
    assert may_invite(config, "matrix", "@ann:hs") and not may_invite(config, "matrix", "@bob:hs")
    # a topic of an allowed group is allowed; another group is not
    assert allowed(config, closed, incoming("hi", room="-100:7", parent="-100"))
    assert not allowed(config, closed, incoming("hi", room="-200:7", parent="-200"))
    assert allowed(config, Capabilities(local_owner=True), incoming("hi", platform="web"))


# -- through a running gateway ------------------------------------------------------------------


@pytest.fixture
async def home(tmp_path: Path):  # type: ignore[no-untyped-def]
    keys = KeyPair.generate()
    write_key_file(tmp_path / "gateway.key", keys)
    env = {
        "POTLUCK_HOME": str(tmp_path),
        "POTLUCK_ALLOWED_ROOMS": "mem:*",
        "POTLUCK_ADMINS": "mem:alice",
        "POTLUCK_RELAYS": "ws://127.0.0.1:9",
    }
    config = load_config(env=env)
    store = Store(config.database_url)
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data({**ECHO, "trigger": "every_message"}))
    from gateway.serve import open_ledger

    gateway = Gateway(
        config, store, library, open_ledger(config, store), Models(), default_recipe="echo-room"
    )
    platform = MemoryPlatform()
    platform.admins = {"alice"}
    await gateway.add_adapter(platform)
    yield gateway, platform, env
    await gateway.close()
    store.close()


async def test_the_servers_ledger_publishes_to_the_configured_relays(home) -> None:  # type: ignore[no-untyped-def]
    # `potluck serve` built its ledger without [receipts] relays, so a room that opted in
    # to publishing without naming relays of its own published nowhere
    gateway, platform, _env = home
    room = gateway.rooms.get("mem", "r1")
    update_settings(gateway.store, room.room_id, publish=True)
    await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", "hello", "e1"))
    await settle(gateway)
    assert any(t.startswith("echo:") for t in said(platform))
    with gateway.store.session() as db:
        relays = set(db.scalars(select(Publication.relay)))
    assert relays == {"ws://127.0.0.1:9"}


async def test_a_rooms_edit_is_that_rooms_own_until_chosen_elsewhere(home) -> None:  # type: ignore[no-untyped-def]
    gateway, platform, _env = home
    head = gateway.library.get("debate")
    for room, event, text in [
        ("r1", "a1", "/recipe use debate"),
        ("r1", "a2", "/recipe set agents.advocate.temperature 0.1"),
        ("r2", "b1", "/recipe use debate"),
    ]:
        await platform.on_incoming(Incoming("mem", room, "alice", "alice", text, event))
        await settle(gateway)
    edited = gateway.rooms.find("mem:r1").conversation.saved  # type: ignore[union-attr]
    other = gateway.rooms.find("mem:r2").conversation.saved  # type: ignore[union-attr]
    assert edited.id != head.id and edited.recipe.forked_from == head.id
    assert edited.recipe.agent("advocate").temperature == 0.1
    assert other.id == head.id  # room r2 got debate as it was, not r1's edit
    assert gateway.library.get("debate").id == head.id  # the head did not move
    assert any("runs in this room only" in t for t in said(platform))
    # chosen by its version elsewhere, it runs there too
    await platform.on_incoming(
        Incoming("mem", "r2", "alice", "alice", f"/recipe use {edited.ref}", "b2")
    )
    await settle(gateway)
    assert gateway.rooms.find("mem:r2").conversation.saved.id == edited.id  # type: ignore[union-attr]


async def test_a_rooms_import_never_replaces_the_recipe_other_rooms_get(home) -> None:  # type: ignore[no-untyped-def]
    from adapters.base import Attachment
    from runtime.recipes import to_yaml

    gateway, platform, _env = home
    head = gateway.library.get("debate")
    impostor = validate_data(
        {**json.loads(json.dumps(head.recipe.model_dump(mode="json"))), "title": "Not debate"}
    )
    file = Attachment("debate.yaml", "application/yaml", to_yaml(impostor).encode())
    await platform.on_incoming(
        Incoming("mem", "r1", "alice", "alice", "/recipe import", "i1", attachments=(file,))
    )
    await settle(gateway)
    assert gateway.library.get("debate").id == head.id
    assert any("beside the existing debate" in t for t in said(platform)), said(platform)


async def test_stop_for_another_bot_does_not_stop_ours(home) -> None:  # type: ignore[no-untyped-def]
    gateway, platform, _env = home
    platform.capabilities = Capabilities(max_chars=500, bot_names=("potluck_bot",))
    gateway.intake.capabilities["mem"] = platform.capabilities
    await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", "/stop@other_bot", "s1"))
    await settle(gateway)
    assert "nothing is running." not in said(platform) and "stopped." not in said(platform)
    await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", "/stop@potluck_bot", "s2"))
    await settle(gateway)
    assert "nothing is running." in said(platform)


async def test_every_exchange_ends_with_a_counted_ending_in_its_chain(home) -> None:  # type: ignore[no-untyped-def]
    gateway, platform, _env = home
    await platform.on_incoming(Incoming("mem", "r1", "bob", "bob", "hello", "e1"))
    await platform.on_incoming(Incoming("mem", "r1", "alice", "alice", "/recipe use debate", "e2"))
    await settle(gateway)
    with gateway.store.session() as db:
        marks = [
            json.loads(json.loads(row.event_json)["content"])
            for row in db.scalars(
                select(ReceiptRow)
                .where(ReceiptRow.kind.in_((kinds.SESSION_MARK, kinds.EXCHANGE_END)))
                .order_by(ReceiptRow.created_at, ReceiptRow.seq)
            )
        ]
        ended = db.scalars(select(Session).where(Session.status == "ended")).all()
    endings = [m["ending"] for m in marks if "ending" in m]
    assert endings[:2] == ["completed", "stopped"], marks  # the exchange, then the session
    assert len(ended) == 1


async def test_shutdown_closes_the_sandbox_client_once(home) -> None:  # type: ignore[no-untyped-def]
    gateway, _platform, _env = home

    class Client:  # stands in for the sandbox client: counts what the gateway does to it
        closed = 0

        async def close(self) -> None:
            Client.closed += 1

    gateway.sandboxes = Client()
    await gateway.shutdown(0.1)
    await gateway.close()
    assert Client.closed == 1


def test_potluck_run_and_a_room_sign_the_same_exchange_alike(tmp_path: Path) -> None:
    """`potluck run` was a second, hand-written copy of the conversation path; now both go
    through the one exchange, so the same recipe and words give the same receipts."""
    from gateway.cli import cli

    home_dir = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", str(home_dir), "init"]).exit_code == 0
    recipe = tmp_path / "duo.yaml"
    from runtime.recipes import to_yaml

    recipe.write_text(to_yaml(validate_data(ECHO_DUO)))
    done = runner.invoke(cli, ["--home", str(home_dir), "run", str(recipe), "ping"])
    assert done.exit_code == 0, done.output
    assert "chain verified" in done.output and "completed" in done.output
    store = Store(f"sqlite:///{home_dir / 'potluck.db'}")
    try:
        with store.session() as db:
            rows = db.scalars(select(ReceiptRow).order_by(ReceiptRow.seq)).all()
        shapes = [(r.kind, _shape(r.event_json)) for r in rows]
    finally:
        store.close()
    assert shapes == [
        (kinds.SESSION_MARK, ("open",)),
        (kinds.PERSON_MESSAGE, ()),
        (kinds.AGENT_TURN, ("first", "scripted/echo", "stop")),
        (kinds.AGENT_TURN, ("second", "scripted/echo", "stop")),
        (kinds.EXCHANGE_END, ("completed",)),
        (kinds.SESSION_MARK, ("close", "completed")),
    ]


def _shape(event_json: str) -> tuple[str, ...]:
    content = json.loads(json.loads(event_json)["content"])
    if "agent" in content:
        return (content["agent"], content["model"], content["finish"])
    return tuple(str(content[k]) for k in ("mark", "ending") if k in content)


async def test_a_room_is_told_why_a_model_ran_without_a_key(tmp_path: Path) -> None:
    """A recipe (here set by a room admin in chat) points its agent at a server of its own:
    the install's key does not go there, the answer still comes, and the room hears why."""
    from .fake_providers import FakeProvider

    fake = FakeProvider()
    await fake.start()
    write_key_file(tmp_path / "gateway.key", KeyPair.generate())
    env = {
        "POTLUCK_HOME": str(tmp_path),
        "POTLUCK_ALLOWED_ROOMS": "mem:*",
        "POTLUCK_ADMINS": "mem:alice",
        "POTLUCK_PROVIDERS_OPENAI_API_KEY": "sk-install-key-that-must-stay-home-0123456789",
    }
    try:
        async with running(env) as gateway:
            gateway.library.save(
                validate_data(
                    {
                        **ECHO,
                        "agents": [
                            {"name": "echo", "model": "openai/gpt-test", "persona": "You echo."}
                        ],
                        "trigger": "every_message",
                    }
                )
            )
            platform = MemoryPlatform()
            await gateway.add_adapter(platform)
            for event, text in [
                ("a1", "/recipe use echo-room"),
                ("a2", f"/recipe set agents.echo.api_base {fake.url}"),
                ("a3", "hello there"),
            ]:
                await platform.on_incoming(Incoming("mem", "r1", "alice", "alice", text, event))
                await settle(gateway)
            texts = said(platform)
            assert any("hello from" in t for t in texts), texts  # the model answered
            notice = next(t for t in texts if "without a key" in t)
            assert fake.url.rstrip("/") in notice and "[providers.openai]" in notice
            assert fake.requests and not any(
                "sk-install-key" in value for value in fake.seen_credentials()
            )
            assert not any("sk-install-key" in t for t in texts)
    finally:
        await fake.stop()


async def test_a_recipe_asking_for_more_than_the_install_allows_is_capped_and_told(
    tmp_path: Path,
) -> None:
    """Through the real broker: the room hears which of the recipe's requests were capped,
    and the container it gets is the install's ceiling, not the recipe's wish."""

    engine()
    write_key_file(tmp_path / "gateway.key", KeyPair.generate())
    # the install's ceilings, in its config file: the broker it starts reads them there
    (tmp_path / "config.toml").write_text('[sandbox]\nmemory = "256m"\npids = 64\n')
    env = {
        "POTLUCK_HOME": str(tmp_path),
        "POTLUCK_ALLOWED_ROOMS": "mem:*",
        "POTLUCK_ADMINS": "mem:alice",
    }
    greedy = {
        **ECHO,
        "name": "greedy",
        "agents": [{"name": "echo", "model": "scripted/echo", "persona": "x", "tools": ["shell"]}],
        "sandbox": {"memory": "999999g", "pids": 4096, "exec_timeout_s": 3600},
    }
    async with running(env) as gateway:
        assert gateway.sandboxes is not None, "the gateway started no sandbox broker"
        gateway.library.save(validate_data(greedy))
        platform = MemoryPlatform()
        await gateway.add_adapter(platform)
        await platform.on_incoming(
            Incoming("mem", "r1", "alice", "alice", "/recipe use greedy", "g1")
        )
        await settle(gateway)
        notice = next((t for t in said(platform) if "caps the recipe's sandbox" in t), None)
        assert notice is not None, said(platform)
        assert "memory 999999g asked, 256m allowed" in notice and "pids 4096 asked, 64" in notice
        result = await gateway.sandboxes.exec(
            "mem:r1", "cat /sys/fs/cgroup/pids/pids.max", validate_data(greedy).sandbox
        )
        assert result.stdout.strip() == "64", result
        await gateway.sandboxes.reset("mem:r1")
