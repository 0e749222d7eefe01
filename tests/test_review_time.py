"""Adversarial review (issue 13 follow-up): the wall clock is not monotonic. Real ledger,
real store; fails on the code as reviewed."""

from __future__ import annotations

from gateway.receipts.endings import Ending
from gateway.receipts.ledger import Ledger
from gateway.store.rooms import ensure_room, start_session


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
