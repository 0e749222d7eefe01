"""Receipts in the store: a session's chain verifies, and any tampering is named."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select, update

from gateway.receipts import kinds
from gateway.receipts.chain import Link, RecipeRef, receipt, reveal_matches, verify_chain
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger, LedgerError
from gateway.store.models import ReceiptRow, Room
from gateway.store.models import Session as SessionRow
from gateway.store.rooms import ensure_room, start_session

from .support import conversation, exchange, resigned


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


# -- format v2: endings, counts, restarts, and v1 alongside ----------------------------------


def test_endings_and_counts_are_signed_and_recomputed(world) -> None:
    _store, ledger, session, _solo = world
    sid = session()
    exchange(ledger, sid, Ending.COMPLETED)
    exchange(ledger, sid, Ending.LIMIT_BUDGET, killed="timeout")
    ledger.close(sid, Ending.STOPPED, "recipe changed")
    events = ledger.events(sid)
    report = ledger.verify_session(sid)
    assert report.ok, report.problems
    assert report.format_label == "format v2"
    ends = [json.loads(e.content) for e in events if e.kind == kinds.EXCHANGE_END]
    assert [
        (e["ending"], e["from_seq"], e["turns"], e["tool_ok"], e["tool_timeouts"]) for e in ends
    ] == [
        ("completed", 1, 1, 1, 0),
        ("limit_budget", 5, 1, 0, 1),
    ]
    close = json.loads(events[-1].content)
    assert (close["ending"], close["exchanges"], close["turns"], close["tokens_in"]) == (
        "stopped",
        2,
        2,
        14,
    )
    assert close["cost_usd"] == 0.00025 and close["models"] == ["local/smollm2-135m"]
    assert events[-1].tag("l") == ("l", "stopped", "potluck.ending")
    with pytest.raises(ValueError, match="not an ending; endings are: completed"):
        ledger.close(sid, "the user got bored")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("where", "change", "named"),
    [
        ("exchange", {"turns": 0}, "turns says 0, the events show 1"),
        ("exchange", {"cost_usd": 0.0}, "cost_usd says 0.0"),
        ("exchange", {"ending": "victory"}, "not an ending"),
        ("close", {"tool_timeouts": 0}, "tool_timeouts says 0"),
        ("close", {"ending": "cut"}, "label does not say cut"),
        ("close", {"exchanges": 5}, "exchanges says 5"),
    ],
)
def test_a_count_or_ending_that_disagrees_with_the_events_is_named(
    world, where: str, change: dict, named: str
) -> None:
    _store, ledger, session, _solo = world
    sid = session()
    exchange(ledger, sid, Ending.COMPLETED, killed="timeout")
    ledger.close(sid, Ending.COMPLETED)
    events = ledger.events(sid)
    index = 4 if where == "exchange" else len(events) - 1
    events[index] = resigned(ledger, events[index], **change)
    for later in range(index + 1, len(events)):  # re-link what follows, as a forger would
        tags = [list(t) for t in events[later].tags]
        tags[4][1] = events[later - 1].id
        events[later] = ledger.signer.sign(
            events[later].created_at, events[later].kind, tags, events[later].content
        )
    report = verify_chain(events)
    assert any(named in p for p in report.problems), report.problems


def test_nothing_may_follow_the_close_mark(world) -> None:
    _store, ledger, session, _solo = world
    sid = session()
    ledger.close(sid, Ending.COMPLETED)
    events = ledger.events(sid)
    after = ledger.signer.sign(
        events[-1].created_at,
        kinds.PERSON_MESSAGE,
        [
            ["format", "2"],
            ["session", sid],
            ["seq", "2"],
            ["E", events[0].id, "", ledger.signer.pubkey],
            ["e", events[-1].id, "", ledger.signer.pubkey],
            list(events[0].tag("a")),
            list(events[0].tag("recipe")),
        ],
        "{}",
    )
    report = verify_chain([*events, after])
    assert any("after the session's close mark" in p for p in report.problems)


def test_open_writes_no_room_settings_and_a_restart_keeps_the_counts(world) -> None:
    store, ledger, session, solo = world
    sid = session()
    with store.session() as db:
        room_id = db.get(SessionRow, sid).room_id
        assert "recipe_name" not in (db.get(Room, room_id).settings or {})
    exchange(ledger, sid, Ending.COMPLETED)
    ledger.person(sid, "web:alice", "half an exchange")
    ledger.turn(
        sid,
        agent="assistant",
        model="other/model",
        text="…",
        tokens_in=1,
        tokens_out=1,
        cost_usd=0.5,
    )
    restarted = Ledger(store, ledger.keys)  # no cached tip, no settings to read it from
    restarted.end_exchange(sid, Ending.CUT, "shutdown")
    restarted.close(sid, Ending.CUT)
    assert restarted.verify_session(sid).ok
    close = json.loads(restarted.events(sid)[-1].content)
    assert (close["turns"], close["exchanges"], close["models"]) == (
        2,
        2,
        ["local/smollm2-135m", "other/model"],
    )
    opened = restarted.events(sid)[0]
    assert opened.tag_value("recipe") == solo.id
    assert opened.tag("e")[3] == ledger.signer.pubkey  # the version event, by its author
    with pytest.raises(LedgerError, match="already open"):
        ledger.open(sid, "solo")
    with pytest.raises(LedgerError, match="not"):
        ledger.open(session(), "solo", "f" * 64)


def test_v1_chains_keep_verifying_and_continue_in_v1(world) -> None:
    """A session opened before v2 (as the old ledger wrote it) still verifies, continues in
    its own format after an upgrade, and says which format it is."""
    store, ledger, _session, solo = world
    sid = start_session(store, ensure_room(store, "web", "old"), solo.id)
    ref = RecipeRef("solo", solo.id, ledger.signer.pubkey)
    prev, rows = None, []
    for seq, (kind, fields) in enumerate(
        [(kinds.SESSION_MARK, {"mark": "open"}), (kinds.PERSON_MESSAGE, {"sender": "x"})]
    ):
        event = receipt(
            ledger.signer,
            Link(sid, seq, prev, ref, format=1),
            kind,
            fields,
            text=None,
            salt=b"",
            transparent=False,
            created_at=1_700_000_000 + seq,
        )
        assert json.loads(event.content)["v"] == 1 and event.tag("format") is None
        rows.append(
            {
                "id": event.id,
                "session_id": sid,
                "room_id": 1,
                "seq": seq,
                "kind": kind,
                "event_json": event.to_json(),
                "plaintext": None,
                "salt": None,
            }
        )
        prev = event.id
    with store.engine.begin() as conn:
        conn.execute(insert(ReceiptRow), rows)
    upgraded = Ledger(store, ledger.keys)
    upgraded.person(sid, "web:alice", "after the upgrade")
    upgraded.close(sid, Ending.COMPLETED)
    events = upgraded.events(sid)
    assert [e.tag("format") for e in events] == [None] * 4
    assert events[2].tag("e") == ("e", events[1].id, "", "prev")
    report = upgraded.verify_session(sid)
    assert report.ok and report.format_label == "format v1", report.problems
    mixed = verify_chain([*events[:3], ledger.events(_v2(world))[1]])
    assert any("a v2 event in a v1 chain" in p for p in mixed.problems)
    assert mixed.format_label == "mixed formats: 3 v1, 1 v2"


def _v2(world) -> str:
    _store, ledger, session, _solo = world
    sid = session()
    ledger.person(sid, "web:bob", "v2")
    return sid
