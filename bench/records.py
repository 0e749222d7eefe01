"""A recipe version's track record with 100,000 receipts in the store, as a ratio to reading
those rows once, in the same run; goal <= 2x, on SQLite and on PostgreSQL.

The store holds one version's sessions in twenty rooms: each exchange a person's message,
one or two agent turns (some by a fallback model), a tool call in most (some fail, a few
time out) and its ending (mostly completed, some limits, stops, errors), with a few hundred
👍/👎 counted through the gateway's own verdict path. The baseline reads those receipts'
rows once, every column (`SELECT` of the rows, each fetched); the record reads them (the
columns it needs) and computes every figure. Rounds interleave the two, so a busy machine
slows both alike; the figure is the median of the rounds' ratios. The ratio against reading
only the columns the record reads is printed too.

Usage: .venv/bin/python bench/records.py [RECEIPTS] [ROUNDS]
PostgreSQL: a throwaway cluster is started when initdb/pg_ctl are installed, or set
POTLUCK_BENCH_POSTGRES_URL to use a server of your own.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from receipts import postgres  # bench/receipts.py: a throwaway PostgreSQL cluster
from sqlalchemy import select

from adapters.base import Reaction
from gateway.library import Library
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.records.store import Scope, record
from gateway.records.verdicts import Verdicts
from gateway.store.db import Store
from gateway.store.models import ReceiptRow, Session
from gateway.store.reactions import Reactions
from gateway.store.rooms import ensure_room, start_session

ENDINGS = [Ending.COMPLETED] * 14 + [
    Ending.LIMIT_TURNS,
    Ending.LIMIT_ROUNDS,
    Ending.STOPPED,
    Ending.LIMIT_BUDGET,
    Ending.ERROR,
]
WORDS = [
    "plan",
    "budget",
    "deadline",
    "risk",
    "idea",
    "draft",
    "test",
    "review",
    "launch",
    "pricing",
    "hire",
    "scope",
]


def fill(store: Store, receipts: int) -> str:
    """Sessions of one version until the store holds `receipts` receipts; its version id."""
    library = Library(store)
    solo = next(s for s in library.sync_bundled() if s.recipe.name == "solo")
    keys = KeyPair.generate()
    ledger = Ledger(store, keys)
    rooms = [ensure_room(store, "matrix", f"!room{n}:hs") for n in range(20)]
    draw = random.Random(16)
    count = 0
    turns: list[tuple[str, str]] = []
    started = time.perf_counter()
    while count < receipts:
        sid = start_session(store, rooms[len(turns) % len(rooms)], solo.id)
        ledger.open(sid, "solo", solo.id)
        count += 1
        with ledger.batch():  # one commit per session: filling is not what is measured
            for x in range(min(100, (receipts - count) // 4 + 1)):
                ledger.person(sid, f"matrix:@p{draw.randrange(60)}:hs", "a question " * 20)
                count += 1
                if draw.random() < 0.8:
                    killed = "timeout" if draw.random() < 0.03 else None
                    ledger.tool(
                        sid,
                        agent="assistant",
                        tool="shell",
                        command="pytest -q",
                        exit_code=0 if draw.random() < 0.85 else 1,
                        output="ok",
                        wall_ms=draw.randrange(50, 5000),
                        killed=killed,
                    )
                    count += 1
                for _ in range(1 + (draw.random() < 0.3)):
                    text = " ".join(draw.choice(WORDS) for _ in range(60))
                    event = ledger.turn(
                        sid,
                        agent="assistant",
                        model="openai/gpt-4o-mini" if draw.random() < 0.9 else "local/smollm2",
                        text=text,
                        tokens_in=draw.randrange(200, 2000),
                        tokens_out=draw.randrange(20, 400),
                        cost_usd=draw.randrange(1, 900) / 1e6,
                    )
                    count += 1
                ledger.end_exchange(sid, draw.choice(ENDINGS))
                count += 1
                if x == 0:
                    turns.append((sid, event.id))
        if count < receipts:
            ledger.close(sid, Ending.STOPPED)
            count += 1
    asyncio.run(_votes(ledger, turns, draw))
    print(f"  filled {count} receipts in {time.perf_counter() - started:.0f} s", flush=True)
    return solo.id


async def _votes(ledger: Ledger, turns: list[tuple[str, str]], draw: random.Random) -> None:
    reactions = Reactions(ledger.store)

    async def nobody_is_admin(_reaction: Reaction) -> bool:
        return False

    verdicts = Verdicts(ledger, reactions, nobody_is_admin)
    room = ensure_room(ledger.store, "web", "votes")
    for n, (sid, turn) in enumerate(turns):
        reactions.shown("web", "votes", [f"m{n}"], turn, sid)
        for person in range(3):
            emoji = "👍" if draw.random() < 0.7 else "👎"
            reaction = Reaction("web", "votes", f"p{person}", "p", f"m{n}", emoji, f"r{n}.{person}")
            row = reactions.record(room, reaction)
            assert row is not None
            await verdicts.handle(row, reaction)


def read_rows(store: Store, version_id: str, columns: list) -> float:  # type: ignore[type-arg]
    started = time.perf_counter()
    query = (
        select(*columns)
        .join(Session, Session.id == ReceiptRow.session_id)
        .where(Session.recipe_version_id == version_id)
        .order_by(ReceiptRow.session_id, ReceiptRow.seq)
    )
    with store.engine.connect() as conn:
        rows = sum(1 for _ in conn.execute(query))
    assert rows
    return time.perf_counter() - started


def measure(url: str, receipts: int, rounds: int) -> tuple[float, float, float, float]:
    """Median seconds to read the rows and to compute the record; median ratios to reading
    every column and to reading the record's columns."""
    store = Store(url)
    version = fill(store, receipts)
    every = list(ReceiptRow.__table__.c)
    needed = [
        ReceiptRow.session_id,
        ReceiptRow.seq,
        ReceiptRow.kind,
        ReceiptRow.event_json,
        ReceiptRow.plaintext,
        ReceiptRow.id,
    ]
    read_rows(store, version, every)  # warm the caches alike
    found = record(store, Scope((version,)))
    reads, computes, ratios, strict = [], [], [], []
    for _ in range(rounds):
        read = read_rows(store, version, every)
        started = time.perf_counter()
        found = record(store, Scope((version,)))
        spent = time.perf_counter() - started
        narrow = read_rows(store, version, needed)
        reads.append(read)
        computes.append(spent)
        ratios.append(spent / read)
        strict.append(spent / narrow)
    print(
        f"  {found.sessions} sessions, {found.exchanges} exchanges, {found.tool_calls} tool "
        f"calls, {found.up + found.down} votes, {found.diversity.pairs if found.diversity else 0}"
        " pairs compared",
        flush=True,
    )
    store.close()
    return (
        statistics.median(reads),
        statistics.median(computes),
        statistics.median(ratios),
        statistics.median(strict),
    )


def main() -> None:
    receipts = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"a version's track record over {receipts} receipts, {rounds} rounds")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        print("SQLite (WAL)", flush=True)
        results["SQLite (WAL)"] = measure(f"sqlite:///{directory}/bench.db", receipts, rounds)
    with postgres() as url:
        if url is None:
            print("PostgreSQL: not installed (initdb/pg_ctl), skipped")
        else:
            print("PostgreSQL", flush=True)
            results["PostgreSQL"] = measure(url, receipts, rounds)
    for name, (read, spent, ratio, strict) in results.items():
        verdict = "meets" if ratio <= 2.0 else "ABOVE"
        print(
            f"{name:13} read {read:5.2f} s  record {spent:5.2f} s  ratio {ratio:.2f}x "
            f"({verdict} the 2x goal; {strict:.2f}x reading only the columns it reads)"
        )


if __name__ == "__main__":
    main()
