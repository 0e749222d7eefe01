"""Published track records, checked by anyone: install A publishes a signed record of a
recipe version to a real relay; install B, sharing nothing but the relay, fetches it with
every session and verdict it counts, verifies every signature and chain, recomputes every
figure and finds them all matching. Then A lies, one way at a time, and B names the lie: an
altered figure, a session left out, a session of another recipe, a vote on a message that
is not an agent turn, a vote counted twice, a record a relay tampered with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import nostr_sdk
import pytest

from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.nip19 import Address, EventPointer, naddr_encode, nevent_encode
from gateway.receipts.nostr import Event, Signer
from gateway.receipts.publisher import publish_pending
from gateway.receipts.travel import publish_recipe
from gateway.records.assertion import sessions_digest
from gateway.records.events import (
    ASSERTION,
    DELETION,
    LABEL,
    REACTION,
    TurnRef,
    turn_ref,
    vote_event,
)
from gateway.records.judge import judge
from gateway.records.publish import RecordError, prepare, publish
from gateway.records.verify import VerifyError, verify
from gateway.store.rooms import ensure_room, update_settings
from runtime.models import scripted
from runtime.models.client import Models

from .lying_relay import LyingRelay
from .support import ROOT, Install


def nevent(event: Event, relay: str) -> str:
    return nevent_encode(EventPointer(event.id, (relay,), event.pubkey, ASSERTION))


def resign(signer: Signer, event: Event, content: dict, created_at: int, **tags: str) -> Event:
    """The record with its content changed, signed again by its author: a lie A tells."""
    new_tags = [[t[0], tags.get(t[0], t[1]), *t[2:]] for t in event.tags]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return signer.sign(created_at, event.kind, new_tags, text)


@pytest.fixture
def a(tmp_path: Path):
    (tmp_path / "a").mkdir()
    one = Install(tmp_path / "a")
    yield one
    one.store.close()


async def sessions_of_a(one: Install, url: str) -> dict[str, str]:
    """A's published room runs three sessions of duo with verdicts, and one of solo; a
    private room runs one more of duo (counted as run, not published)."""
    update_settings(one.store, one.room, publish=True, relays=[url])
    made = {}
    for n in range(3):
        sid = one.session()
        one.exchange(sid, Ending.COMPLETED, tools=((0, 200 + n, None),), text=f"reply {n}")
        one.exchange(sid, Ending.LIMIT_TURNS if n else Ending.COMPLETED, person="web:bob")
        assert await one.react(sid, 0, f"voter{n}", "👍" if n < 2 else "👎") == "counted"
        if n == 0:  # the same 👍 on a later turn moves the vote there: a deletion, a new one
            assert await one.react(sid, 1, "voter0", "👍") == "counted"
        made[f"duo{n}"] = sid
    one.ledger.close(made["duo0"], Ending.STOPPED)
    made["solo"] = one.session("solo")
    one.exchange(made["solo"], Ending.COMPLETED)
    scripted.SCRIPTS["judge"] = lambda m: (
        "CHALLENGED" if "reply 1" in m[-1]["content"] else "AGREED"
    )
    judged = await judge(one.ledger, Models(), "scripted/judge", [one.duo.id])
    assert judged.labelled == 6
    private = ensure_room(one.store, "web", "private")
    made["private"] = one.session("duo", room=private)
    one.exchange(made["private"], Ending.ERROR)
    result = await publish_pending(one.store, one.keys)
    assert result.rejected == 0 and not result.errors, result
    return made


async def test_a_published_record_verifies_and_every_lie_is_named(
    a: Install, relay_factory, tmp_path: Path
) -> None:
    relay = relay_factory()
    relay.start()
    url = relay.url
    made = await sessions_of_a(a, url)

    prepared, sent = await publish(a.ledger, a.duo.id, [url])
    assert sent[url].ok, sent
    assert len(prepared.counted.sessions) == 3 and prepared.counted.run == 4
    figures = prepared.recount.record.to_dict()
    assert figures["exchanges"]["n"] == 6 and figures["verdicts"] == {
        **figures["verdicts"],
        "up": 2,
        "down": 1,
    }
    (judged,) = figures["challenge"].values()  # the judge's signed labels, counted
    assert (judged["k"], judged["n"]) == (1, 6)

    # B has nothing but the relay and a link.
    link = naddr_encode(Address(prepared.version.id, a.keys.pubkey, ASSERTION, (url,)))
    found = await verify(link, [])
    assert found.ok, (found.problems, found.comparison.mismatches)
    assert found.sessions == 3 and found.comparison.matched > 60
    assert any("ran 4 sessions" in n and "1 not published" in n for n in found.notes)
    assert [c.split(" = ")[0] for c in found.comparison.claimed] == ["diversity", "reach.rooms"]
    # The record may travel elsewhere than the sessions: it names where they were published.
    other = relay_factory()
    other.start()
    assert (await publish_recipe([prepared.event], [other.url]))[other.url].ok
    elsewhere = await verify(nevent(prepared.event, other.url), [])
    assert elsewhere.ok and elsewhere.sessions == 3, elsewhere.problems
    # …and the command line says so too, from B's own (empty) home.
    home = tmp_path / "b"
    home.mkdir()
    env = {**os.environ, "POTLUCK_HOME": str(home), "PYTHONPATH": str(ROOT)}
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "recipe", "record", "--verify", link, "--relay", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "3 sessions fetched and verified" in shown.stdout and "all match" in shown.stdout
    # A's own record on the command line, with what the relays know of forks by others
    own = {**env, "POTLUCK_DATABASE_URL": a.store.url, "POTLUCK_RELAYS": url}
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "recipe", "record", "duo"],
        env=own,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "4 sessions in 2 rooms" in shown.stdout
    assert "forks by others on the relays: 0 (by 0 authors)" in shown.stdout

    # The web room's Discover view finds the records others published about a version.
    from types import SimpleNamespace

    from gateway.records.web import RecordRoutes

    seen = SimpleNamespace(library=a.library, ledger=a.ledger, config=SimpleNamespace(relays=[url]))
    (published,) = await RecordRoutes(seen)._published(prepared.version.id)  # type: ignore[arg-type]
    assert published["author"] == a.keys.pubkey and published["sessions"] == 3
    assert published["figures"] == figures and published["problems"] == []

    # An independent implementation (rust-nostr) verifies every new kind, and runs the
    # documented filter for a session's verdicts against the relay.
    await independent_check(a, prepared.event, url)

    signer, content = a.ledger.signer, json.loads(prepared.event.content)
    stamp = prepared.event.created_at

    async def lie(changed: dict, **tags: str) -> list[str]:
        nonlocal stamp
        stamp += 1
        event = resign(signer, prepared.event, changed, stamp, **tags)
        assert (await publish_recipe([event], [url]))[url].ok
        checked = await verify(nevent(event, url), [])
        assert not checked.ok
        return checked.problems + checked.comparison.mismatches

    # an altered figure (one not in the tags, so only recomputing catches it)
    altered = json.loads(json.dumps(content))
    altered["figures"]["tools"]["ms"]["median"] = 1.0
    said = await lie(altered)
    assert said == ["tools.ms.median: the record says 1.0, the events show 201.0"]
    # an altered figure that is also a tag: the tag contradicts it and the events do too
    altered = json.loads(json.dumps(content))
    altered["figures"]["exchanges"]["endings"]["completed"] += 2
    said = await lie(altered)
    assert any("completed tag says 4" in s for s in said)
    assert any(s.startswith("exchanges.endings.completed: the record says 6") for s in said)

    # a session left out (an unfavourable one), the list and its hash redone to match
    roots = [r for r, _ in content["sessions"]]
    bad = next(e for e in a.ledger.events(made["duo2"]) if e.tag_value("seq") == "0").id
    fewer = json.loads(json.dumps(content))
    fewer["sessions"] = [s for s in content["sessions"] if s[0] != bad]
    fewer["sessions_sha256"] = sessions_digest(tuple(tuple(s) for s in fewer["sessions"]))
    said = await lie(fewer)
    assert any(f"session {bad[:12]}…" in s and "leaves it out" in s for s in said), said

    # a session of another recipe counted as this one's
    solo_root = a.ledger.events(made["solo"])[0].id
    more = json.loads(json.dumps(content))
    more["sessions"] = sorted([*content["sessions"], [solo_root, 4]])
    more["sessions_sha256"] = sessions_digest(tuple(tuple(s) for s in more["sessions"]))
    said = await lie(more)
    assert any(f"session {solo_root[:12]}… ran another recipe version" in s for s in said), said
    assert roots  # the honest list named three

    # a forged vote: A's gateway signs a 👍 on a person's message (not an agent turn), and
    # a second standing 👍 for a voter who already has one; a stranger signs one as well
    events = a.ledger.events(made["duo0"])
    person = next(e for e in events if e.kind == 4740)
    turn = next(e for e in events if e.kind == 4741)
    ref = turn_ref(turn)
    on_person = vote_event(
        signer,
        TurnRef(person.id, ref.session_id, ref.root_id, ref.address, ref.version_id),
        voter="f" * 64,
        value=1,
        insider=False,
        replaces=None,
        created_at=prepared.counted.until - 5,
    )
    voter0 = a.keys.pseudonym("person", "web:voter0")
    twice = vote_event(
        signer,
        ref,
        voter=voter0,
        value=1,
        insider=False,
        replaces=None,
        created_at=prepared.counted.until - 5,
    )
    stranger = vote_event(
        Signer(KeyPair.generate().secret),
        ref,
        voter="e" * 64,
        value=1,
        insider=False,
        replaces=None,
        created_at=prepared.counted.until - 5,
    )
    assert (await publish_recipe([on_person, twice, stranger], [url]))[url].ok
    stamp += 1
    honest_again = resign(signer, prepared.event, content, stamp)
    assert (await publish_recipe([honest_again], [url]))[url].ok
    checked = await verify(nevent(honest_again, url), [])
    assert not checked.ok
    assert any(
        f"verdict {on_person.id[:12]}… is on {person.id[:12]}…, not an agent turn" in p
        for p in checked.problems
    ), checked.problems
    assert any("a vote counted twice" in p for p in checked.problems), checked.problems
    assert any("1 verdicts signed by other keys are not counted" in n for n in checked.notes)

    # a relay that changes a word of the record: its signature no longer holds
    tampered = {**honest_again.to_dict(), "content": honest_again.content.replace('"n":6', '"n":9')}
    async with LyingRelay([tampered]) as liar:
        with pytest.raises(VerifyError, match="forged or damaged"):
            await verify(nevent(honest_again, liar.url), [], timeout=3)


async def independent_check(a: Install, record: Event, url: str) -> None:
    written = [record, *a.events(REACTION, DELETION, LABEL)]
    assert {e.kind for e in written} == {ASSERTION, REACTION, DELETION, LABEL}
    for event in written:
        theirs = nostr_sdk.Event.from_json(event.to_json())
        assert theirs.verify() and theirs.id().to_hex() == event.id, event.kind
        assert [t.to_vec() for t in theirs.tags()] == [list(t) for t in event.tags]
    assert nostr_sdk.Event.from_json(record.to_json()).kind().is_addressable()
    live = {e.id for e in a.events(REACTION)} - {e.tag_value("e") for e in a.events(DELETION)}
    roots = [a.ledger.events(s)[0].id for s in {e.tag_value("session") for e in a.events(REACTION)}]
    client = nostr_sdk.Client()
    await client.add_relay(nostr_sdk.RelayUrl.parse(url))
    await client.connect()
    try:
        query = nostr_sdk.Filter.from_json(json.dumps({"kinds": [REACTION], "#E": roots}))
        found = await client.fetch_events(
            nostr_sdk.ReqTarget.auto([query]), timeout=timedelta(seconds=10)
        )
    finally:
        await client.shutdown()
    # the filter that fetches a session's verdicts brings every one standing
    assert live and live <= {e.id().to_hex() for e in found}


async def test_nothing_published_is_nothing_to_record(a: Install) -> None:
    sid = a.session()
    a.exchange(sid, Ending.COMPLETED)
    with pytest.raises(RecordError, match=r"has been published|no signed version event"):
        prepare(a.ledger, a.duo.id)
