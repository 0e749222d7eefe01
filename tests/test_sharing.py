"""Recipes travel between installs that share nothing but a relay: install A publishes from
its command line; install B, a gateway in a real Matrix room, fetches it by link, sees what
it will do, forks it, edits it and publishes the fork; A discovers the fork and walks its
lineage back to its own original; a room pinned to A's version hears of A's newer one and
keeps running the pinned one; every version a receipt names stays fetchable by id."""

from __future__ import annotations

import asyncio
import json
import os
import re
from asyncio.subprocess import PIPE
from pathlib import Path

from sqlalchemy import select

from gateway.receipts import kinds
from gateway.receipts.travel import fetch_recipe, public_hint
from gateway.store.models import ReceiptRow
from gateway.updates import check_updates
from runtime.recipes import to_yaml, validate_data

from .support import ECHO_DUO, POTLUCK, make_home, room_with, running, until

LINK = re.compile(r"\b(nevent1[02-9ac-hj-np-z]+|naddr1[02-9ac-hj-np-z]+)")


async def potluck_a(home: Path, relay: str, *args: str) -> str:
    """Install A's command line, as its own process (its own home, key and store), with
    the relay configured."""
    env = {**os.environ, "POTLUCK_HOME": str(home), "POTLUCK_RELAYS": relay}
    env.pop("POTLUCK_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        *POTLUCK, *args, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out + err).decode()
    return out.decode()


def test_a_link_pasted_in_chat_reaches_only_public_relays() -> None:
    # a stranger's link must not make the gateway connect into its own machine or network
    for hint in [
        "ws://127.0.0.1:7447",
        "wss://127.0.0.1",
        "wss://localhost",
        "wss://relay.localhost",
        "wss://10.0.0.5",
        "wss://192.168.1.1",
        "wss://[::1]",
        "wss://169.254.169.254",
        "wss://printer.local",
        "wss://user@relay.example.org",
        "wss://relay.example.org:99999",
        "http://relay.example.org",
    ]:
        assert not public_hint(hint), hint
    assert public_hint("wss://relay.example.org") and public_hint("wss://8.8.8.8:443")


async def test_two_installs_share_fork_and_trace_a_recipe_through_a_relay(
    synapse, people, relay_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    alice, bob, bot = people
    relay = relay_factory()
    relay.start()

    # -- install A: a recipe of its own, published from the command line
    home_a = tmp_path / "a"
    await potluck_a(home_a, relay.url, "init")
    duo_file = tmp_path / "duo.yaml"
    duo_file.write_text(to_yaml(validate_data(ECHO_DUO)))
    await potluck_a(home_a, relay.url, "recipe", "import", str(duo_file))
    published = await potluck_a(home_a, relay.url, "recipe", "publish", "duo")
    assert f"{relay.url}: stored" in published
    nevent = next(m for m in LINK.findall(published) if m.startswith("nevent1"))

    relay.stop()  # the relay restarts between publishing and fetching: nothing is lost
    relay.start()

    # -- install B: a gateway in a Matrix room, the same relay configured, nothing else
    env = make_home(tmp_path, synapse, bot, [f"matrix:{alice.user_id}", f"matrix:{bob.user_id}"])
    env["POTLUCK_RELAYS"] = relay.url
    room = await room_with(alice, bob, bot)

    def said(needle: str) -> list[str]:
        return [m["body"] for m in alice.from_bot(room, bot) if needle in m["body"]]

    async with running(env) as gateway:
        await until(lambda: "join" in alice.memberships(room, bot), what="the bot to join")
        await alice.say(room, f"/recipe fork {nevent} duo-loud")
        shown = (await until(lambda: said("Fork it here"), what="the fetched recipe, shown"))[0]
        # before anything is attached: what it will do, who signed it
        assert "duo@" in shown and "first: scripted/echo" in shown and "signed by npub1" in shown
        command = re.search(r"/recipe fork (\S+) duo-loud", shown).group(0)  # type: ignore[union-attr]
        await alice.say(room, command)
        await until(lambda: said("this room now runs the fork"), what="the fork attached")
        await alice.say(room, "/recipe set agents.first.persona You echo, loudly.")
        await until(lambda: said("runs in this room only"), what="the room's edit")
        edited = gateway.rooms.find(f"matrix:{room}").conversation.saved  # type: ignore[union-attr]
        await bob.say(room, "hello from bob")  # a conversation on the edited fork: receipts
        await until(lambda: len(said("hello from bob")) >= 2, what="both agents' answers")
        await alice.say(room, "/recipe publish")
        report = (await until(lambda: said("stored"), what="the fork published"))[0]
        assert edited.ref in report and "naddr1" in report

        # a second room runs A's version itself, pinned; A then publishes a newer one
        await alice.say(room, f"/recipe use {nevent}")
        attach = (await until(lambda: said("Attach it here"), what="A's recipe, shown"))[0]
        other = await room_with(alice, bob, bot)
        await until(lambda: "join" in alice.memberships(other, bot), what="the bot to join")
        await alice.say(other, re.search(r"/recipe use \S+", attach).group(0))  # type: ignore[union-attr]
        await until(
            lambda: any("now runs duo@" in m["body"] for m in alice.from_bot(other, bot)),
            what="A's version attached in the second room",
        )
        pinned = gateway.rooms.find(f"matrix:{other}").conversation.saved  # type: ignore[union-attr]

        await potluck_a(home_a, relay.url, "recipe", "set", "duo", "title", "Echo duo, improved")
        await potluck_a(home_a, relay.url, "recipe", "publish", "duo")
        told = await check_updates(
            gateway.store,
            gateway.library,
            [relay.url],
            gateway.ledger.keys.pubkey,
            gateway.intake.notice,
        )
        assert told == 1
        news = await until(
            lambda: [m["body"] for m in alice.from_bot(other, bot) if "newer version" in m["body"]],
            what="the room told of A's newer version",
        )
        assert "Echo duo, improved" in news[0] and pinned.ref in news[0]
        assert gateway.rooms.find(f"matrix:{other}").conversation.saved.id == pinned.id  # type: ignore[union-attr]
        # told once: a second check finds nothing new to say
        await check_updates(
            gateway.store,
            gateway.library,
            [relay.url],
            gateway.ledger.keys.pubkey,
            gateway.intake.notice,
        )
        await until(lambda: all(r.idle for r in gateway.rooms.all()), what="quiet rooms")
        await alice.caught_up()
        assert sum("newer version" in m["body"] for m in alice.from_bot(other, bot)) == 1

        with gateway.store.session() as db:
            marks = [
                json.loads(row.event_json)
                for row in db.scalars(
                    select(ReceiptRow).where(ReceiptRow.kind == kinds.SESSION_MARK)
                )
            ]
        # the exact version event each session ran, named by its open mark's `e` tag
        versions = {
            tag[1]
            for event in marks
            if json.loads(event["content"]).get("mark") == "open"
            for tag in event["tags"]
            if tag[0] == "e"
        }
        assert len(versions) == 3  # the fork, the room's edit of it, A's pinned version

    # -- A discovers B's fork, fetches it and walks its lineage back to A's own duo
    found = await potluck_a(home_a, relay.url, "recipe", "discover", "duo-loud")
    assert "duo-loud@" in found
    fork_link = next(m for m in LINK.findall(found) if m.startswith("nevent1"))
    fetched = await potluck_a(home_a, relay.url, "recipe", "fetch", fork_link)
    assert "You echo, loudly." not in fetched  # personas are not shown; agents and models are
    assert "first: scripted/echo" in fetched and "kept as duo-loud@" in fetched
    history = await potluck_a(home_a, relay.url, "recipe", "history", edited.ref)
    assert edited.ref in history and "reached the origin: duo@" in history, history

    # every version a receipt names is still fetchable by id, after newer ones were published
    for event_id in versions:
        got = await asyncio.wait_for(fetch_recipe(event_id, [relay.url]), 30)
        assert got.event.id == event_id


async def test_the_web_rooms_discover_view_finds_and_forks_a_recipe_in_one_click(
    relay_factory, tmp_path: Path
) -> None:
    """A in its command line publishes; B's person opens Discover in a real browser, finds
    it by name, sees its lineage, and forks it with one click."""
    from playwright.async_api import async_playwright

    from gateway.config import load_config
    from gateway.library import Library
    from gateway.receipts.keys import KeyPair, write_key_file
    from gateway.serve import build
    from gateway.store.db import Store

    from .support import ARTIFACTS, launch

    relay = relay_factory()
    relay.start()
    home_a = tmp_path / "a"
    await potluck_a(home_a, relay.url, "init")
    duo_file = tmp_path / "duo.yaml"
    duo_file.write_text(to_yaml(validate_data({**ECHO_DUO, "name": "sunny-duo"})))
    await potluck_a(home_a, relay.url, "recipe", "import", str(duo_file))
    await potluck_a(home_a, relay.url, "recipe", "publish", "sunny-duo")

    home_b = tmp_path / "b"
    home_b.mkdir()
    write_key_file(home_b / "gateway.key", KeyPair.generate())
    config = load_config(
        env={"POTLUCK_HOME": str(home_b), "POTLUCK_WEB_PORT": "0", "POTLUCK_RELAYS": relay.url}
    )
    gateway = await build(config, web=True, sandboxes=False)
    try:
        web = gateway.adapters["web"]
        async with async_playwright() as pw:
            browser = await launch(pw)
            page = await browser.new_page()
            await page.goto(web.url)  # type: ignore[attr-defined]
            await page.click("#nav-discover")
            await page.fill("#discover-q", "sunny-duo")
            await page.click("#discover-search")
            await page.wait_for_selector("[data-found=sunny-duo]", timeout=30_000)
            await page.click("[data-found=sunny-duo] >> text=Lineage")
            await page.wait_for_selector("#discover-detail >> text=reached the origin")
            await page.fill("[data-fork-name=sunny-duo]", "my-sunny")
            await page.click("button[data-fork=sunny-duo]")
            await page.wait_for_selector("#discover-detail >> text=forked as my-sunny@")
            await page.screenshot(path=str(ARTIFACTS / "web-discover.png"), full_page=True)
            await browser.close()
        store = Store(config.database_url)
        try:
            fork = Library(store).get("my-sunny")
            original = Library(store).get(fork.recipe.forked_from or "")
        finally:
            store.close()
        assert original.recipe.name == "sunny-duo" and original.origin == "fetched"
    finally:
        await gateway.close()
        gateway.store.close()
