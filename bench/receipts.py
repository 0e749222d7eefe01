"""Receipts signed and stored per exchange, as a ratio to raw signing in the same run.

An exchange is what the gateway signs for one conductor run: the person's message, an agent
turn, a tool call and the exchange's end (four format-v2 receipts), stored in one commit.
The baseline is coincurve's BIP-340 signing (`PrivateKey.sign_schnorr`) of as many 32-byte
digests, measured in rounds interleaved with the ledger's, so a busy machine slows both
alike; the figure is the median of the rounds' ratios. Goal: >= 0.5x, on SQLite and on
PostgreSQL. The ledger signs with a key pair derived once (nostr.Signer), which skips two
of sign_schnorr's five curve operations; the ratio against that primitive is printed too,
so the gain from signing and the cost of everything else can be told apart.

Usage: .venv/bin/python bench/receipts.py [EXCHANGES_PER_ROUND] [ROUNDS]
PostgreSQL: a throwaway cluster is started when initdb/pg_ctl are installed, or set
POTLUCK_BENCH_POSTGRES_URL to use a server of your own (a database is created and dropped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coincurve import PrivateKey

from gateway.library import Library
from gateway.receipts.endings import Ending
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.receipts.nostr import Signer
from gateway.store.db import Store
from gateway.store.rooms import ensure_room, start_session

PER_EXCHANGE = 4


def raw_signing(count: int, sign: Callable[[bytes, bytes], bytes]) -> float:
    digests = [os.urandom(32) for _ in range(count)]
    start = time.perf_counter()
    for digest in digests:
        sign(digest, os.urandom(32))
    return count / (time.perf_counter() - start)


def exchanges(ledger: Ledger, session: str, count: int, first: int) -> float:
    """Receipts per second over `count` exchanges, one commit each."""
    start = time.perf_counter()
    for n in range(first, first + count):
        with ledger.batch():
            ledger.person(session, "matrix:@alice:hs", f"question {n}: " + "words " * 30)
            ledger.turn(
                session,
                agent="assistant",
                model="local/smollm2-135m",
                text=f"answer {n}: " + "more words " * 40,
                tokens_in=420,
                tokens_out=80,
                cost_usd=0.00031,
            )
            ledger.tool(
                session,
                agent="assistant",
                tool="shell",
                command="ls -la /workspace",
                exit_code=0,
                output="total 0\n",
                wall_ms=35,
            )
            ledger.end_exchange(session, Ending.COMPLETED)
    return count * PER_EXCHANGE / (time.perf_counter() - start)


def measure(url: str, per_round: int, rounds: int) -> tuple[float, float, float, float]:
    """Median raw signing rate, median ledger rate, median of the rounds' ratios to
    coincurve's signing and to the ledger's own signing primitive."""
    keys = KeyPair.generate()
    store = Store(url)
    solo = next(s for s in Library(store).sync_bundled() if s.recipe.name == "solo")
    ledger = Ledger(store, keys)
    session = start_session(store, ensure_room(store, "web", "bench"), solo.id)
    ledger.open(session, "solo", solo.id)
    key, signer = PrivateKey(keys.secret), Signer(keys.secret)
    exchanges(ledger, session, max(1, per_round // 10), 0)  # warm caches and the statement
    raws, rates, ratios, own = [], [], [], []
    for index in range(rounds):
        raw = raw_signing(per_round * PER_EXCHANGE, key.sign_schnorr)
        rate = exchanges(ledger, session, per_round, (index + 1) * per_round)
        primitive = raw_signing(per_round * PER_EXCHANGE, signer.schnorr)
        raws.append(raw)
        rates.append(rate)
        ratios.append(rate / raw)
        own.append(rate / primitive)
    ledger.close(session, Ending.COMPLETED)
    report = ledger.verify_session(session)
    assert report.ok, report.problems[:3]
    store.close()
    return (
        statistics.median(raws),
        statistics.median(rates),
        statistics.median(ratios),
        statistics.median(own),
    )


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """A database URL: the one given, a throwaway cluster, or None when neither exists."""
    if given := os.environ.get("POTLUCK_BENCH_POSTGRES_URL"):
        yield given
        return
    bindir = _pg_bin()
    if bindir is None:
        yield None
        return
    data = Path(tempfile.mkdtemp(prefix="potluck-bench-pg-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(data, user="postgres")
        data.chmod(0o700)
        run_as = ["runuser", "-u", "postgres", "--"]
    ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "potluck", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*ctl, "-l", str(data / "log"), "-w", "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://potluck@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    per_round = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"{rounds} rounds of {per_round} exchanges ({PER_EXCHANGE} receipts, one commit each)")
    with tempfile.TemporaryDirectory() as directory:
        results = {"SQLite (WAL)": measure(f"sqlite:///{directory}/bench.db", per_round, rounds)}
    with postgres() as url:
        if url is None:
            print("PostgreSQL: not installed (initdb/pg_ctl), skipped")
        else:
            results["PostgreSQL"] = measure(url, per_round, rounds)
    for name, (raw, rate, ratio, own) in results.items():
        verdict = "meets" if ratio >= 0.5 else "BELOW"
        print(
            f"{name:13} raw signing {raw:6.0f}/s  receipts stored {rate:6.0f}/s  "
            f"ratio {ratio:.2f}x ({verdict} the 0.5x goal; {own:.2f}x of the ledger's own "
            "signing primitive)"
        )


if __name__ == "__main__":
    main()
