"""Adversarial review (issue 13 follow-up): receipts under a wall clock that steps back, and
what a published receipt gives away. Real ledger, real store; fails on the code as reviewed."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.receipts.endings import Ending
from gateway.receipts.ledger import Ledger
from gateway.store.rooms import ensure_room, start_session

from .support import potluck


class SteppedClock:
    """A wall clock that NTP (or a VM restore, or `date -s`) steps back by a minute."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_a_clock_stepped_back_mid_session_does_not_make_its_receipts_fail(world) -> None:
    """Severity: low. `Ledger._append` stamps each receipt `int(self.clock())` (time.time)
    while `verify_chain` (and receipts.js in the browser) flags an event "created before
    the event it follows". A wall clock stepped back during a session — NTP correcting a
    drift, a VM snapshot restored, an operator fixing the date; or an attacker who can move
    an unauthenticated NTP answer — makes the gateway's own, honest session fail
    verification forever (`potluck receipts verify`, the web badge, exported transcripts),
    indistinguishable from tampering. The attacker gets: a way to discredit every session
    that spans the step. Smallest fix: stamp `max(int(clock()), previous.created_at)` per
    session (the ledger already does `+ 1` for recipe version events)."""
    store, _ledger, _session, solo = world
    clock = SteppedClock()
    ledger = Ledger(store, _ledger.keys, clock=clock)
    room = ensure_room(store, "web", "kitchen")  # the fixture's web room
    session = start_session(store, room, solo.id)
    ledger.open(session, "solo", solo.id)
    ledger.person(session, "web:alice", "before the step")
    clock.now -= 60  # the clock is corrected a minute back
    ledger.person(session, "web:alice", "after the step")
    ledger.close(session, Ending.STOPPED, "done")
    report = ledger.verify_session(session)
    assert report.ok, report.problems


def test_a_published_tool_receipt_does_not_expose_a_short_output(world) -> None:
    """Severity: medium. In a room that publishes (not transparent), a receipt is meant to
    carry "a commitment (a salted hash of the content) plus metadata, so a conversation can
    be proven later without being exposed now". A tool call's receipt salts the command but
    carries `output_sha256`: the plain, unsalted SHA-256 of what the sandboxed process
    printed, and its exact length. Anyone reading the relay can test guesses against it:
    a PIN, a yes/no, a number, a short file's content (`cat otp.txt`), an exit message —
    10^6 PINs take well under a second. The attacker gets: the output of low-entropy tool
    calls of any published session, from the relay, without the reveal. Smallest fix: a
    salted commitment to the output too (the same `commitment(salt, text)` the command
    gets, with its own salt kept beside the command's for `receipts reveal`)."""
    import hashlib
    import json

    _store, ledger, session_of, _solo = world
    session = session_of(publish=True)  # commitment form: the default for published rooms
    pin = "4821\n"
    event = ledger.tool(
        session,
        agent="assistant",
        tool="shell",
        command="cat pin.txt",
        exit_code=0,
        output=pin,
        wall_ms=5,
    )
    fields = json.loads(event.content)
    assert "text" not in fields  # not transparent: the command itself is committed, salted
    guesses = {f"{n:04d}\n" for n in range(10_000)}
    exposed = [g for g in guesses if hashlib.sha256(g.encode()).hexdigest() in event.content]
    assert exposed == [], f"the published receipt confirms the output was {exposed!r}"


def test_verifying_a_stranger_s_bundle_with_a_lone_surrogate_says_what_is_wrong(
    tmp_path: Path,
) -> None:
    """Severity: low. `potluck receipts verify --file` reads a bundle someone sent; an event
    whose content holds the JSON escape `\\ud800` parses into a lone surrogate and
    `nostr.serialize` dies with UnicodeEncodeError: a traceback instead of "event #0 is
    malformed", and nothing else in the bundle is checked. (The same poison crashes
    fetching from relays; see test_review_relays.py.) Smallest fix: `parse_event` refuses
    strings with unpaired surrogates (EventFormatError), as safe_json does for cards."""
    home = tmp_path / "home"
    potluck(home, "init")
    bundle = tmp_path / "bundle.jsonl"
    event = {
        "id": "a" * 64,
        "pubkey": "b" * 64,
        "created_at": 1,
        "kind": 4740,
        "tags": [],
        "content": "x\ud800",
        "sig": "c" * 128,
    }
    bundle.write_text(json.dumps(event) + "\n", encoding="ascii")
    done = potluck(home, "receipts", "verify", "--file", str(bundle), ok=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-600:]
