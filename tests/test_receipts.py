"""Receipts in the store: a session's chain verifies, and any tampering is named."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from gateway.receipts import kinds
from gateway.receipts.chain import reveal_matches, verify_chain
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.store.models import ReceiptRow


def conversation(ledger: Ledger, sid: str) -> None:
    ledger.person(sid, "web:alice", "What is 2+2? \x01 é 😀")
    ledger.turn(
        sid,
        agent="assistant",
        model="local/smollm2-135m",
        text="4.",
        tokens_in=20,
        tokens_out=2,
        cost_usd=0.0,
    )
    ledger.tool(
        sid,
        agent="assistant",
        tool="shell",
        command="echo $((2+2))",
        exit_code=0,
        output="4\n",
        wall_ms=12,
    )
    ledger.close(sid, Ending.COMPLETED)


def test_a_session_chain_verifies_and_commits_instead_of_revealing(world) -> None:
    _store, ledger, session, solo = world
    sid = session()
    conversation(ledger, sid)
    report = ledger.verify_session(sid)
    assert report.ok and report.checked == 5 and report.notes == []
    events = ledger.events(sid)
    assert [e.kind for e in events] == [
        kinds.SESSION_MARK,
        kinds.PERSON_MESSAGE,
        kinds.AGENT_TURN,
        kinds.TOOL_CALL,
        kinds.SESSION_MARK,
    ]
    assert all(e.tag_value("recipe") == solo.id for e in events)
    person = events[1]
    body = json.loads(person.content)
    assert "text" not in body and "What is" not in person.content
    assert "alice" not in person.content and len(body["sender"]) == 64
    event, text, salt = ledger.reveal(person.id)
    assert text.startswith("What is 2+2?") and reveal_matches(event, text, salt)
    assert not reveal_matches(event, text + " ", salt)
    turn = json.loads(events[2].content)
    assert (turn["agent"], turn["model"], turn["tokens_out"]) == (
        "assistant",
        "local/smollm2-135m",
        2,
    )
    assert json.loads(events[3].content)["exit_code"] == 0


def test_a_transparent_room_signs_the_text_itself(world) -> None:
    _store, ledger, session, _solo = world
    sid = session(transparent=True)
    event = ledger.person(sid, "web:alice", "hello there")
    assert json.loads(event.content)["text"] == "hello there"
    assert ledger.verify_session(sid).ok


def test_the_same_person_gets_the_same_pseudonym_and_others_differ(world) -> None:
    _store, ledger, session, _solo = world
    sid = session()
    a1 = json.loads(ledger.person(sid, "web:alice", "x").content)["sender"]
    a2 = json.loads(ledger.person(sid, "web:alice", "y").content)["sender"]
    b = json.loads(ledger.person(sid, "web:bob", "z").content)["sender"]
    assert a1 == a2 != b


@pytest.mark.parametrize("where", ["content", "sig", "created_at", "plaintext", "kind-tag"])
def test_tampering_with_any_stored_byte_is_caught(world, where: str) -> None:
    store, ledger, session, _solo = world
    sid = session()
    conversation(ledger, sid)
    victim = ledger.rows(sid)[1]
    event = json.loads(victim.event_json)
    values: dict = {}
    if where == "content":
        event["content"] = event["content"].replace('"chars":', '"chars":1')
    elif where == "sig":
        event["sig"] = ("0" if event["sig"][0] != "0" else "1") + event["sig"][1:]
    elif where == "created_at":
        event["created_at"] += 1
    elif where == "kind-tag":
        event["tags"][1][1] = "another-session"
    if where == "plaintext":
        values["plaintext"] = victim.plaintext + "!"
    else:
        values["event_json"] = json.dumps(event)
    with store.engine.begin() as conn:
        conn.execute(update(ReceiptRow).where(ReceiptRow.id == victim.id).values(**values))
    report = ledger.verify_session(sid)
    assert not report.ok
    assert any(p.startswith("#1") for p in report.problems), report.problems


def test_missing_and_reordered_events_are_named(world) -> None:
    _store, ledger, session, _solo = world
    sid = session()
    conversation(ledger, sid)
    events = ledger.events(sid)
    missing = verify_chain(events[:2] + events[3:])
    assert any("#2" in p and "missing or out of order" in p for p in missing.problems)
    swapped = verify_chain([events[0], events[2], events[1], *events[3:]])
    assert not swapped.ok and any("seq is 2, expected 1" in p for p in swapped.problems)
    truncated = verify_chain(events[:-1])
    assert truncated.ok and truncated.notes  # a cut end is reported, not hidden
    headless = verify_chain(events[1:])
    assert any("start is missing" in p for p in headless.problems)


def test_a_foreign_key_cannot_slip_into_a_chain(world) -> None:
    _store, ledger, session, _solo = world
    sid = session()
    conversation(ledger, sid)
    report = verify_chain(ledger.events(sid), pubkey=KeyPair.generate().pubkey)
    assert any("signed by another key" in p for p in report.problems)


def test_chain_continues_across_a_restart(world, tmp_path) -> None:
    store, ledger, session, _solo = world
    sid = session()
    ledger.person(sid, "web:alice", "before restart")
    fresh = Ledger(store, ledger.keys)  # a restarted gateway: no cached chain tip
    fresh.person(sid, "web:alice", "after restart")
    assert fresh.verify_session(sid).ok
    with store.session() as db:
        assert list(
            db.scalars(
                select(ReceiptRow.seq).where(ReceiptRow.session_id == sid).order_by(ReceiptRow.seq)
            )
        ) == [0, 1, 2]
