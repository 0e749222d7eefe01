"""Publishing to a real Nostr relay on loopback: opt-in only, exactly once, AUTH, outages."""

from __future__ import annotations

import asyncio
import json

from gateway.receipts import kinds
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.receipts.nostr import sign_event
from gateway.receipts.publisher import publication_counts, publish_pending
from gateway.receipts.relay import RelayClient
from gateway.store.rooms import ensure_room, start_session, update_settings

from .support import conversation, until


async def stored_on(url: str, pubkey: str) -> list:
    async with RelayClient(url) as client:
        return await client.query({"authors": [pubkey], "limit": 5000})


def published_room(world, url: str) -> tuple[Ledger, str]:
    store, ledger, _session, solo = world
    room = ensure_room(store, "matrix", "!public:hs")
    update_settings(store, room, publish=True, relays=[url])
    sid = start_session(store, room, solo.id)
    ledger.open(sid, "solo", solo.id)
    return ledger, sid


def version_of(ledger: Ledger, sid: str) -> str:
    """The recipe version event a session's open mark names: it is published with it."""
    return ledger.events(sid)[0].tag_value("e")


async def test_only_opted_in_rooms_reach_the_relay_in_commitment_form(world, relay_factory):
    store, ledger, session, _solo = world
    relay = relay_factory()
    relay.start()
    private = session()  # the default room: not published
    conversation(ledger, private)
    ledger_pub, public = published_room(world, relay.url)
    conversation(ledger_pub, public)
    result = await publish_pending(store, ledger.keys)
    assert (result.accepted, result.rejected, result.errors) == (6, 0, [])  # and the version
    on_relay = await stored_on(relay.url, ledger.keys.pubkey)
    receipts = [e for e in on_relay if e.kind in kinds.RECEIPT_KINDS]
    assert sorted(e.id for e in receipts) == sorted(e.id for e in ledger.events(public))
    assert {e.id for e in on_relay} - {e.id for e in receipts} == {version_of(ledger, public)}
    assert not {e.id for e in on_relay} & {e.id for e in ledger.events(private)}
    person = next(e for e in on_relay if e.kind == 4740)
    assert "What is 2+2" not in person.content and "commitment" in json.loads(person.content)
    again = await publish_pending(store, ledger.keys, force=True)
    assert again.accepted == 0  # nothing is sent twice once accepted


async def test_relay_down_then_killed_mid_way_loses_nothing_and_doubles_nothing(
    world, relay_factory
):
    store, ledger, _session, _solo = world
    relay = relay_factory()
    ledger_pub, sid = published_room(world, relay.url)
    for n in range(150):
        ledger_pub.person(sid, "matrix:@alice:hs", f"message {n}")
    down = await publish_pending(store, ledger.keys)  # relay not started yet
    assert down.accepted == 0 and down.errors and "cannot reach" in down.errors[0]
    assert publication_counts(store) == {"pending": 152}  # 151 receipts and their recipe

    relay.start()
    task = asyncio.create_task(publish_pending(store, ledger.keys, force=True))
    while publication_counts(store).get("ok", 0) < 20 and not task.done():
        await asyncio.sleep(0.005)
    relay.stop()  # kill -9 mid-way
    partial = await task
    relay.start()
    final = await publish_pending(store, ledger.keys, force=True)
    assert publication_counts(store) == {"ok": 152}
    assert partial.accepted + final.accepted >= 152
    ids = [e.id for e in await stored_on(relay.url, ledger.keys.pubkey)]
    assert len(ids) == len(set(ids)) == 152
    assert set(ids) == {e.id for e in ledger.events(sid)} | {version_of(ledger_pub, sid)}


async def test_nip42_auth_when_the_relay_requires_it(world, relay_factory):
    store, ledger, _session, _solo = world
    relay = relay_factory(auth=True)
    relay.start()  # creates the relay's tables; then grant our key the writer role
    relay.cli("role", "set", "-p", ledger.keys.pubkey, "-r", "w")
    ledger_pub, sid = published_room(world, relay.url)
    ledger_pub.person(sid, "matrix:@alice:hs", "needs auth")
    result = await publish_pending(store, ledger.keys)
    assert result.accepted == 3, (result, publication_counts(store))  # 2 and the version
    stranger = KeyPair.generate()  # a key the relay does not know
    event = sign_event(stranger.secret, 1700000000, kinds.PERSON_MESSAGE, [], "{}")
    async with RelayClient(relay.url) as client:
        outcome = await client.publish(event)
    assert not outcome.accepted


async def test_the_gateways_scheduler_publishes_on_its_own(world, relay_factory):
    from gateway.scheduler import start_scheduler

    store, ledger, _session, _solo = world
    relay = relay_factory()
    relay.start()
    ledger_pub, sid = published_room(world, relay.url)
    ledger_pub.person(sid, "matrix:@alice:hs", "published by the scheduler")
    scheduler, _schedules = start_scheduler(store, ledger.keys, publish_every_s=1)
    try:
        await until(
            lambda: publication_counts(store) == {"ok": 3},
            what=lambda: f"every publication accepted: {publication_counts(store)}",
        )
    finally:
        scheduler.shutdown(wait=False)
    assert publication_counts(store) == {"ok": 3}  # two receipts and their recipe version
    assert len(await stored_on(relay.url, ledger.keys.pubkey)) == 3
