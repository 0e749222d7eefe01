"""Potluck's events as strangers see them: a third party with a relay and one event id
fetches and verifies a whole session with the documented filters, and an independent Nostr
implementation (rust-nostr's `nostr-sdk`) parses and verifies every kind Potluck writes, v1
and v2, decodes its NIP-19 links, and runs the documented filters against a real relay."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import nostr_sdk
import pytest

from gateway.library import Library
from gateway.receipts import filters, kinds
from gateway.receipts.audit import AuditError, fetch_session, sessions_of_version
from gateway.receipts.chain import Link, RecipeRef, receipt
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.receipts.nip19 import (
    Address,
    EventPointer,
    naddr_decode,
    naddr_encode,
    nevent_decode,
    nevent_encode,
)
from gateway.receipts.nostr import Event, Signer
from gateway.receipts.publisher import publish_pending
from gateway.receipts.travel import publish_recipe
from gateway.store.db import Store
from gateway.store.rooms import ensure_room, start_session, update_settings
from runtime.recipes import fork

from .lying_relay import LyingRelay


@dataclass
class Published:
    store: Store
    ledger: Ledger
    keys: KeyPair
    url: str
    sid: str
    events: list[Event]
    version: Event
    pointer: Event
    fork: Event


@pytest.fixture
async def published(tmp_path: Path, relay_factory):
    """One install's session, with two exchanges (turns, a tool call, a time-out), published
    to a real relay with its recipe version, pointer, and a fork of that version."""
    relay = relay_factory()
    relay.start()
    store = Store(f"sqlite:///{tmp_path / 'one.db'}")
    library = Library(store)
    solo = next(s for s in library.sync_bundled() if s.recipe.name == "solo")
    keys = KeyPair.generate()
    ledger = Ledger(store, keys)
    room = ensure_room(store, "matrix", "!public:hs")
    update_settings(store, room, publish=True, relays=[relay.url])
    sid = start_session(store, room, solo.id)
    ledger.open(sid, "solo", solo.id)
    for n, (ending, killed) in enumerate(
        [(Ending.COMPLETED, None), (Ending.LIMIT_TURNS, "timeout")]
    ):
        ledger.person(sid, "matrix:@alice:hs", f"question {n}")
        ledger.turn(
            sid,
            agent="assistant",
            model="scripted/echo",
            text=f"answer {n}",
            tokens_in=10 + n,
            tokens_out=3,
            cost_usd=0.00012,
        )
        ledger.tool(
            sid,
            agent="assistant",
            tool="shell",
            command="sleep 9",
            exit_code=137 if killed else 0,
            output="",
            wall_ms=900,
            killed=killed,
        )
        ledger.end_exchange(sid, ending, "scripted")
    ledger.close(sid, Ending.STOPPED, "recipe changed")
    result = await publish_pending(store, keys)
    assert result.rejected == 0 and not result.errors
    version = ledger.recipe_version(solo)
    pointer = ledger.recipe_pointer("solo")
    forked = ledger.recipe_version(library.save(fork(solo.recipe, "solo-fork")))
    sent = await publish_recipe([pointer, forked], [relay.url])
    assert sent[relay.url].ok
    yield Published(
        store, ledger, keys, relay.url, sid, ledger.events(sid), version, pointer, forked
    )
    store.close()


# -- a third party -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["open mark", "a tool call", "close mark"])
async def test_a_third_party_verifies_a_whole_session_from_one_event_id(published, which):
    p = published
    start = {"open mark": 0, "a tool call": 3, "close mark": len(p.events) - 1}[which]
    audit = await fetch_session(p.events[start].id, [p.url])
    assert audit.report.ok, audit.report.problems
    assert [e.id for e in audit.events] == [e.id for e in p.events]
    assert audit.root_id == p.events[0].id and audit.closed
    assert audit.version is not None and audit.version.event.id == p.version.id
    close = json.loads(audit.events[-1].content)
    assert (close["ending"], close["exchanges"], close["turns"], close["tool_timeouts"]) == (
        "stopped",
        2,
        2,
        1,
    )
    marks = await sessions_of_version(p.version.id, [p.url])
    assert [m.id for m in marks] == [p.events[0].id]


async def test_a_relay_that_withholds_or_slips_in_a_receipt_is_caught(published):
    p = published
    stranger = KeyPair.generate()
    others = [e.to_dict() for e in p.events]
    withheld = others[:3] + others[4:]  # one receipt missing
    fake = receipt(  # a receipt by another key, claiming a place in the session
        Signer(stranger.secret),
        Link(
            p.sid,
            3,
            p.events[2].id,
            RecipeRef("solo", "0" * 64, stranger.pubkey, "0" * 64),
            p.events[0].id,
        ),
        kinds.AGENT_TURN,
        {"agent": "assistant", "model": "evil", "tokens_in": 0, "tokens_out": 0, "cost_usd": 0},
        text="trust me",
        salt=b"s",
        transparent=True,
        created_at=int(time.time()),
    )
    version = p.version.to_dict()
    async with LyingRelay([*withheld, fake.to_dict(), version]) as liar:
        audit = await fetch_session(p.events[0].id, [liar.url], timeout=3)
    assert fake.id not in {e.id for e in audit.events}  # another author: not the session's
    assert not audit.report.ok
    assert any("missing or out of order" in problem for problem in audit.report.problems)


async def test_a_v1_receipt_or_a_stranger_event_is_not_audited_as_a_session(published):
    p = published
    v1 = v1_events(KeyPair.generate())[1]
    async with LyingRelay([v1.to_dict()]) as liar:
        with pytest.raises(AuditError, match="v1 receipt"):
            await fetch_session(v1.id, [liar.url], timeout=3)
    with pytest.raises(AuditError, match="not a Potluck receipt"):
        await fetch_session(p.version.id, [p.url])


# -- an independent implementation -----------------------------------------------------------


def v1_events(keys: KeyPair) -> list[Event]:
    """The events format v1 wrote: receipts with "prev"-marked links, and a recipe version
    as an addressable event."""
    signer = Signer(keys.secret)
    ref = RecipeRef("solo", "ab" * 32, keys.pubkey)
    out, prev = [], None
    for seq, (kind, fields) in enumerate(
        [
            (kinds.SESSION_MARK, {"mark": "open"}),
            (kinds.PERSON_MESSAGE, {"sender": "cd" * 32}),
            (kinds.SESSION_MARK, {"mark": "close", "reason": "ended", "count": 3}),
        ]
    ):
        event = receipt(
            signer,
            Link("s-1", seq, prev, ref, format=1),
            kind,
            fields,
            text="hello" if kind == kinds.PERSON_MESSAGE else None,
            salt=b"salt",
            transparent=False,
            created_at=1_700_000_000 + seq,
        )
        out.append(event)
        prev = event.id
    tags = [["d", "solo"], ["version", "ab" * 32], ["title", "Solo"], ["alt", "Potluck recipe"]]
    out.append(signer.sign(1_700_000_000, kinds.RECIPE_VERSION_V1, tags, '{"potluck":1}'))
    return out


def sdk_event(event: Event) -> nostr_sdk.Event:
    return nostr_sdk.Event.from_json(event.to_json())


async def test_nostr_sdk_parses_and_verifies_every_kind_potluck_writes(published):
    p = published
    written = [*p.events, p.version, p.pointer, p.fork, *v1_events(p.keys)]
    assert {e.kind for e in written} == {
        *kinds.RECEIPT_KINDS,
        kinds.RECIPE_VERSION,
        kinds.RECIPE_LATEST,
        kinds.RECIPE_VERSION_V1,
    }
    for event in written:
        theirs = sdk_event(event)
        assert theirs.verify() and theirs.verify_id() and theirs.verify_signature(), event.kind
        assert theirs.id().to_hex() == event.id and theirs.author().to_hex() == event.pubkey
        assert theirs.kind().as_u16() == event.kind
        assert [t.to_vec() for t in theirs.tags()] == [list(t) for t in event.tags]
    assert sdk_event(p.pointer).kind().is_addressable()
    assert sdk_event(p.version).kind().is_regular()
    forged = Event(**{**p.events[1].__dict__, "content": p.events[1].content + " "})
    assert not sdk_event(forged).verify()


def test_nostr_sdk_reads_our_links_and_we_read_theirs() -> None:
    keys = KeyPair.generate()
    pointer = EventPointer(
        "ab" * 32, ("ws://127.0.0.1:7447", "wss://relay.example"), keys.pubkey, kinds.RECIPE_VERSION
    )
    theirs = nostr_sdk.Nip19Event.from_bech32(nevent_encode(pointer))
    assert theirs.event_id().to_hex() == pointer.event_id
    assert theirs.author().to_hex() == keys.pubkey and theirs.kind().as_u16() == 4745
    assert [str(r) for r in theirs.relays()] == list(pointer.relays)
    assert nevent_decode(theirs.to_bech32()) == pointer
    address = Address("solo-remix", keys.pubkey, kinds.RECIPE_LATEST, ("ws://127.0.0.1:7447",))
    coordinate = nostr_sdk.Nip19Coordinate.from_bech32(naddr_encode(address))
    assert coordinate.coordinate().identifier() == "solo-remix"
    assert coordinate.coordinate().public_key().to_hex() == keys.pubkey
    assert coordinate.coordinate().kind().as_u16() == kinds.RECIPE_LATEST
    assert naddr_decode(coordinate.to_bech32()) == address


async def test_nostr_sdk_runs_the_documented_filters_against_the_relay(published):
    p = published
    pk, root, v = p.keys.pubkey, p.events[0].id, p.version.id
    receipts = {e.id for e in p.events}
    ends = {e.id for e in p.events if e.kind == kinds.EXCHANGE_END}
    completed = {e.id for e in p.events if json.loads(e.content).get("ending") == "completed"}
    expected = [
        (filters.session(root, pk), receipts),
        ([filters.by_id(p.events[3].id)], {p.events[3].id}),
        ([filters.sessions_of_version(v)], {root}),
        ([filters.sessions_of_recipe(pk, "solo")], {root, p.events[-1].id}),
        ([filters.sessions_with_recipes_of(pk)], {root}),
        ([filters.endings(pk, "solo")], ends | {p.events[-1].id}),
        ([filters.endings(pk, "solo", Ending.COMPLETED)], completed),
        ([filters.version_by_id(p.version.tag_value("x"))], {v}),
        ([filters.versions_of(pk, "solo")], {v}),
        ([filters.latest(pk, "solo")], {p.pointer.id}),
        ([filters.forks_of(v)], {p.fork.id}),
        ([filters.by_name("solo")], {p.pointer.id}),
        ([filters.by_topic("assistant")], {v, p.pointer.id, p.fork.id}),
    ]
    client = nostr_sdk.Client()
    await client.add_relay(nostr_sdk.RelayUrl.parse(p.url))
    await client.connect()
    try:
        for documented, ids in expected:
            sdk_filters = [nostr_sdk.Filter.from_json(json.dumps(f)) for f in documented]
            found = await client.fetch_events(
                nostr_sdk.ReqTarget.auto(sdk_filters), timeout=timedelta(seconds=10)
            )
            assert {e.id().to_hex() for e in found} == ids, documented
            assert all(e.verify() for e in found)
            for event in found:  # and our own matcher agrees with theirs
                ours = next(
                    x
                    for x in [*p.events, p.version, p.pointer, p.fork]
                    if x.id == event.id().to_hex()
                )
                assert filters.matches_any(documented, ours)
    finally:
        await client.shutdown()
