"""Receipts signed and stored per second, as a ratio to raw coincurve signing in this run.

Goal: ≥ 0.5×. Usage: .venv/bin/python bench/receipts.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coincurve import PrivateKey

from gateway.library import Library
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.store.db import Store
from gateway.store.rooms import ensure_room, start_session


def raw_signing(n: int, secret: bytes) -> float:
    key = PrivateKey(secret)
    messages = [os.urandom(32) for _ in range(n)]
    start = time.perf_counter()
    for message in messages:
        key.sign_schnorr(message, os.urandom(32))
    return n / (time.perf_counter() - start)


def ledger_appends(n: int, keys: KeyPair, directory: str, per_commit: int = 1) -> float:
    store = Store(f"sqlite:///{directory}/bench-{per_commit}.db")
    solo = next(s for s in Library(store).sync_bundled() if s.recipe.name == "solo")
    ledger = Ledger(store, keys)
    room = ensure_room(store, "web", "bench")
    session = start_session(store, room, solo.id)
    ledger.open(session, "solo", solo.id)
    start = time.perf_counter()
    for first in range(0, n, per_commit):
        with ledger.batch():
            for i in range(first, min(n, first + per_commit)):
                ledger.turn(
                    session,
                    agent="assistant",
                    model="local/smollm2-135m",
                    text=f"turn {i} " * 20,
                    tokens_in=100,
                    tokens_out=40,
                    cost_usd=0.0,
                )
    rate = n / (time.perf_counter() - start)
    assert ledger.verify_session(session).ok
    store.close()
    return rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    keys = KeyPair.generate()
    with tempfile.TemporaryDirectory() as directory:
        raw = raw_signing(n, keys.secret)
        single = ledger_appends(n, keys, directory, per_commit=1)
        exchange = ledger_appends(n, keys, directory, per_commit=4)
        bulk = ledger_appends(n, keys, directory, per_commit=100)
    print(f"raw coincurve schnorr signing (baseline): {raw:8.0f} /s")
    print(f"receipts, one commit each:                {single:8.0f} /s  ratio {single / raw:.2f}x")
    print(
        f"receipts, 4 per commit (one exchange):    {exchange:8.0f} /s  ratio {exchange / raw:.2f}x"
    )
    print(f"receipts, 100 per commit (bulk):          {bulk:8.0f} /s  ratio {bulk / raw:.2f}x")
    print("goal: >= 0.5x; SQLite WAL, synchronous=NORMAL")


if __name__ == "__main__":
    main()
