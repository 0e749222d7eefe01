"""Recipes travel between two installs that share nothing but a real relay on loopback:
publish, fetch by nevent and naddr, fork across authors, walk lineage back, keep every
version a receipt names; and whatever a lying relay sends is refused with its reason."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.library import Library
from gateway.receipts import kinds, version_store
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.receipts.nip19 import Address, EventPointer, naddr_encode, nevent_encode
from gateway.receipts.nostr import Signer
from gateway.receipts.publisher import publication_counts, publish_pending
from gateway.receipts.relay import RelayClient, RelayError
from gateway.receipts.travel import (
    FetchError,
    fetch_recipe,
    fetch_version,
    forks,
    lineage,
    publish_recipe,
    search,
)
from gateway.receipts.versions import version_event
from gateway.store.db import Store
from gateway.store.rooms import ensure_room, start_session, update_settings
from runtime.recipes import fork

from .lying_relay import LyingRelay


@dataclass
class Install:
    """One Potluck install: its own store, library, key and ledger."""

    store: Store
    library: Library
    keys: KeyPair
    ledger: Ledger

    @property
    def pubkey(self) -> str:
        return self.keys.pubkey


@pytest.fixture
def installs(tmp_path: Path) -> Iterator[tuple[Install, Install]]:
    made = []
    for name in ("a", "b"):
        store = Store(f"sqlite:///{tmp_path / name}.db")
        library = Library(store)
        library.sync_bundled()
        keys = KeyPair.generate()
        made.append(Install(store, library, keys, Ledger(store, keys)))
    yield made[0], made[1]
    for one in made:
        one.store.close()


def nevent(event_id: str, relay: str, author: str) -> str:
    return nevent_encode(EventPointer(event_id, (relay,), author, kinds.RECIPE_VERSION))


def naddr(name: str, author: str, relay: str) -> str:
    return naddr_encode(Address(name, author, kinds.RECIPE_LATEST, (relay,)))


async def answering(url: str) -> None:
    """A restarted relay accepts connections a moment before it answers queries."""

    async def ready() -> bool:
        try:
            async with RelayClient(url, timeout=1) as client:
                return (await client.collect({"kinds": [0], "limit": 1}, deadline=1)).complete
        except RelayError:
            return False

    deadline = time.monotonic() + 30
    while not await ready():
        assert time.monotonic() < deadline, f"the relay at {url} never answered after a restart"
        await asyncio.sleep(0.1)


def run_session(one: Install, ref: str, relay: str) -> str:
    """A published room's session on `ref`, one exchange, closed; its open mark's id."""
    room = ensure_room(one.store, "matrix", f"!room-{ref}:hs")
    update_settings(one.store, room, publish=True, relays=[relay])
    saved = one.library.get(ref)
    sid = start_session(one.store, room, saved.id)
    opened = one.ledger.open(sid, saved.recipe.name, saved.id)
    one.ledger.person(sid, "matrix:@alice:hs", "hello")
    one.ledger.turn(
        sid,
        agent="assistant",
        model="scripted/echo",
        text="hi",
        tokens_in=5,
        tokens_out=1,
        cost_usd=0.0,
    )
    one.ledger.end_exchange(sid, Ending.COMPLETED)
    one.ledger.close(sid, Ending.STOPPED, "the test is over")
    assert one.ledger.verify_session(sid).ok
    return opened.id


async def test_two_installs_publish_fetch_fork_and_walk_lineage(installs, relay_factory):
    a, b = installs
    relay = relay_factory()
    relay.start()
    url = relay.url

    # A publishes its solo recipe: the version event and its "latest" pointer.
    va = a.ledger.recipe_version(a.library.get("solo"))
    pa = a.ledger.recipe_pointer("solo")
    sent = await publish_recipe([pa, va], [url], keys=a.keys)
    assert sent[url].ok and set(sent[url].accepted) == {va.id, pa.id}

    # B, with no relays configured, fetches it by nevent (the relay hint is enough)…
    by_nevent = await fetch_recipe(nevent(va.id, url, a.pubkey), [])
    assert (by_nevent.author_pubkey, by_nevent.event.id) == (a.pubkey, va.id)
    assert by_nevent.recipe == a.library.get("solo").recipe
    # …and by naddr, which names A's latest version.
    by_naddr = await fetch_recipe(naddr("solo", a.pubkey, url), [])
    assert by_naddr.event.id == va.id and by_naddr.relay == url

    # B forks it in its own library; the fork names A's exact version event and A's key.
    version_store.remember(b.store, by_nevent.event, by_nevent.relay)
    forked = b.library.save(fork(by_nevent.recipe, "solo-remix", author="B"))
    vb = b.ledger.recipe_version(forked)
    assert vb.pubkey == b.pubkey and vb.tag("e") == ("e", va.id, url, a.pubkey)
    assert vb.tag_value("forked_from") == by_nevent.version_id
    sent = await publish_recipe([vb, b.ledger.recipe_pointer("solo-remix")], [url], keys=b.keys)
    assert sent[url].ok

    # The relay is killed and restarted mid-way: nothing published is lost.
    relay.stop()
    relay.start()
    await answering(url)

    # A discovers the fork (forks of its version, and by name) and walks its lineage back
    # across authors to its own original.
    found = await forks(va.id, [url])
    assert [f.event.id for f in found] == [vb.id]
    listed = await search([url], name="solo-remix")
    assert [(f.author_pubkey, f.version_event_id) for f in listed] == [(b.pubkey, vb.id)]
    remix = await fetch_recipe(nevent(vb.id, url, b.pubkey), [url])
    trail = await lineage(remix, [url])
    assert [v.event.id for v in trail.versions] == [vb.id, va.id]
    assert [v.author_pubkey for v in trail.versions] == [b.pubkey, a.pubkey]
    assert trail.end == "origin", trail.reason

    # Both run sessions on these versions, then publish newer versions.
    a_session = run_session(a, "solo", url)
    b.library.save(by_nevent.recipe, origin="import")  # B also runs A's recipe as it is
    b_session = run_session(b, f"solo@{by_nevent.version_id[:12]}", url)
    b_remix_session = run_session(b, "solo-remix", url)
    for one in (a, b):
        result = await publish_pending(one.store, one.keys)
        assert result.rejected == 0 and not result.errors, result
        assert set(publication_counts(one.store)) == {"ok"}
    a2 = a.library.set("solo", "title", "Solo, revised")
    va2 = a.ledger.recipe_version(a2)
    b2 = b.library.set("solo-remix", "title", "Remix, revised")
    vb2 = b.ledger.recipe_version(b2)
    for one, events in (
        (a, [va2, a.ledger.recipe_pointer("solo")]),
        (b, [vb2, b.ledger.recipe_pointer("solo-remix")]),
    ):
        assert (await publish_recipe(events, [url], keys=one.keys))[url].ok

    # The naddr now names the newer version; every version a receipt names stays
    # fetchable by id, whoever ran it.
    assert (await fetch_recipe(naddr("solo", a.pubkey, url), [])).event.id == va2.id
    named = set()
    async with RelayClient(url) as client:
        marks = await client.query(
            {"kinds": [kinds.SESSION_MARK], "ids": [a_session, b_session, b_remix_session]}
        )
    assert len(marks) == 3
    for mark in marks:
        link = mark.tag("e")
        named.add(link[1])
        fetched = await fetch_version(link[1], [url], author=link[3])
        assert fetched.version_id == mark.tag_value("recipe")
    assert named == {va.id, vb.id}  # B's session on A's recipe names A's event, not a copy
    # A's lineage of B's newer version runs through both authors' older versions.
    newest = await fetch_recipe(naddr("solo-remix", b.pubkey, url), [])
    assert [v.event.id for v in (await lineage(newest, [url])).versions] == [vb2.id, vb.id, va.id]


async def test_a_parent_no_relay_has_is_where_the_trail_goes_cold(installs, relay_factory):
    a, _b = installs
    relay = relay_factory()
    relay.start()
    edited = a.library.set("solo", "title", "Solo, edited")  # its parent is never published
    v2 = a.ledger.recipe_version(edited)
    assert (await publish_recipe([v2], [relay.url]))[relay.url].ok
    fetched = await fetch_recipe(nevent(v2.id, relay.url, a.pubkey), [])
    trail = await lineage(fetched, [relay.url])
    assert trail.end == "cold" and len(trail.versions) == 1
    assert trail.cold_at is not None and trail.cold_at.author_pubkey == a.pubkey
    assert "goes cold at" in trail.reason and "not found" in trail.reason


# -- a relay that lies -----------------------------------------------------------------------


def signed_version(keys: KeyPair, library: Library, **changes) -> dict:
    recipe = library.get("solo").recipe
    return version_event(Signer(keys.secret), recipe, None, int(time.time())).to_dict()


def resign(keys: KeyPair, data: dict) -> dict:
    event = Signer(keys.secret).sign(
        data["created_at"], data["kind"], data["tags"], data["content"]
    )
    return event.to_dict()


def tampered(case: str, keys: KeyPair, library: Library) -> tuple[dict, str]:
    good = signed_version(keys, library)
    if case == "bad signature":
        return {**good, "sig": ("0" if good["sig"][0] != "0" else "1") + good["sig"][1:]}, (
            "signature does not verify"
        )
    if case == "id mismatch":
        return {**good, "content": good["content"].replace('"solo"', '"s0lo"')}, (
            "id does not match"
        )
    data = json.loads(good["content"])
    if case == "content not the tagged version":
        data["title"] = "Something else"
        content = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return resign(keys, {**good, "content": content}), "version tag says"
    if case == "secret in a persona":
        data["agents"][0]["persona"] = "Use sk-ant-" + "a" * 40 + " for everything."
        content = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return resign(keys, {**good, "content": content}), "API key"
    if case == "duplicate keys":
        content = good["content"].replace('{"agents"', '{"title":"x","agents"', 1)
        return resign(keys, {**good, "content": content}), "twice"
    if case == "not canonical":
        content = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
        return resign(keys, {**good, "content": content}), "canonical"
    if case == "oversize":
        data["description"] = "x" * 300_000
        content = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return resign(keys, {**good, "content": content}), "cap"
    if case == "another kind":
        return resign(keys, {**good, "kind": 1}), "not a recipe version"
    if case == "old format":
        tags = [t for t in good["tags"] if t[0] != "format"]
        return resign(keys, {**good, "tags": tags}), "format 2"
    raise AssertionError(case)


CASES = [
    "bad signature",
    "id mismatch",
    "content not the tagged version",
    "secret in a persona",
    "duplicate keys",
    "not canonical",
    "oversize",
    "another kind",
    "old format",
]


@pytest.mark.parametrize("case", CASES)
async def test_a_forged_or_tampered_version_is_refused_with_its_reason(installs, case):
    a, _b = installs
    event, reason = tampered(case, a.keys, a.library)
    async with LyingRelay([event]) as liar:
        with pytest.raises(FetchError) as refused:
            await fetch_recipe(event["id"], [liar.url], timeout=3)
    assert reason in str(refused.value), str(refused.value)


async def test_an_naddr_accepts_only_its_own_authors_versions(installs, relay_factory):
    a, b = installs
    relay = relay_factory()
    relay.start()
    # B publishes a pointer named "solo" too: asking for A's solo must not return B's.
    vb = b.ledger.recipe_version(b.library.get("solo"))
    assert (await publish_recipe([vb, b.ledger.recipe_pointer("solo")], [relay.url]))[relay.url].ok
    with pytest.raises(FetchError, match="no latest version of 'solo' by that author"):
        await fetch_recipe(naddr("solo", a.pubkey, relay.url), [])
    # A lying relay that hands B's pointer and version to a request for A's is refused too.
    pointer = version_store.latest_pointer(b.store, b.pubkey, "solo")
    async with LyingRelay([pointer.to_dict(), vb.to_dict()]) as liar:
        with pytest.raises(FetchError, match="by that author"):
            await fetch_recipe(naddr("solo", a.pubkey, liar.url), [], timeout=3)
        with pytest.raises(FetchError, match="not by the author the link names"):
            await fetch_recipe(nevent(vb.id, liar.url, a.pubkey), [], timeout=3)


async def test_a_relay_that_never_ends_costs_a_bounded_wait(installs):
    a, _b = installs
    good = signed_version(a.keys, a.library)
    garbage = ["not json", json.dumps({"EVENT": 1}), json.dumps(["EVENT", "potluck", {"id": 1}])]
    async with LyingRelay([*garbage, good], eose=False, trickle=True) as liar:
        started = time.monotonic()
        fetched = await fetch_recipe(good["id"], [liar.url], timeout=1.5)
        assert fetched.event.id == good["id"]  # what it did send, checked, is used
        async with RelayClient(liar.url, timeout=1.0) as client:
            found = await client.collect({"ids": [good["id"]]}, deadline=1.0)
        assert not found.complete and [e.id for e in found.events] == [good["id"]]
        assert any("malformed" in d for d in found.dropped)
        assert time.monotonic() - started < 10
    async with LyingRelay([], eose=False, trickle=True) as silent:
        started = time.monotonic()
        with pytest.raises(FetchError, match="did not finish answering"):
            await fetch_recipe(good["id"], [silent.url], timeout=1.0)
        assert time.monotonic() - started < 5


async def test_events_nobody_asked_for_are_dropped(installs):
    a, b = installs
    asked = signed_version(a.keys, a.library)
    other = signed_version(b.keys, b.library)
    async with LyingRelay([other, asked]) as liar, RelayClient(liar.url, timeout=3) as client:
        found = await client.collect({"ids": [asked["id"]]})
    assert [e.id for e in found.events] == [asked["id"]]
    assert any("does not match the query" in d for d in found.dropped)


async def test_publishing_retries_a_relay_that_comes_back(installs, relay_factory):
    a, _b = installs
    relay = relay_factory()
    va = a.ledger.recipe_version(a.library.get("solo"))

    async def later() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(relay.start)

    starting = asyncio.create_task(later())
    # retried every half second for up to a minute: however slowly the relay starts here,
    # the publish must outlast the outage, not a guess at its length
    sent = await publish_recipe([va], [relay.url], attempts=120, pause=lambda n: 0.5)
    await starting
    assert sent[relay.url].ok and sent[relay.url].accepted == [va.id]
