"""`potluck receipts verify --file` and `reveal --check` read files strangers send: every way
such a file can be wrong is named (line by line for a bundle, whose other events are still
checked), with a non-zero exit, never a traceback (issue 13 follow-up)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.receipts.endings import Ending

from .support import potluck


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    potluck(home, "init")
    return home


def genuine_lines(world) -> list[str]:
    _store, ledger, session_of, _solo = world
    sid = session_of(publish=True)
    ledger.person(sid, "web:alice", "hello")
    ledger.close(sid, Ending.STOPPED)
    return list(ledger.export(sid))


def test_a_bundle_s_malformed_lines_are_each_named_and_the_rest_still_checked(
    world, home: Path, tmp_path: Path
) -> None:
    lines = genuine_lines(world)
    poisoned = json.loads(lines[1]) | {"content": "x\ud800"}
    bundle = tmp_path / "bundle.jsonl"
    bundle.write_text(
        "\n".join([lines[0], json.dumps(poisoned), "[" * 100_000, "{}", *lines[2:]]) + "\n",
        encoding="utf-8",
    )
    done = potluck(home, "receipts", "verify", "--file", str(bundle), ok=False)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out, out[-800:]
    assert f"{bundle}:2: not a Nostr event: content holds an unpaired surrogate" in out
    assert f"{bundle}:3: not a Nostr event: maximum recursion depth" in out
    assert f"{bundle}:4: not a Nostr event" in out
    assert "3 line(s) are not Nostr events" in out
    # the well-formed events were still checked: the gap the poisoned line left is named
    assert "2 events" in out and "missing or out of order" in out


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        (b"", "no events in it"),
        (b"\n\n", "no events in it"),
    ],
)
def test_a_bundle_that_is_no_bundle_is_refused_clearly(
    home: Path, tmp_path: Path, content: bytes, said: str
) -> None:
    bundle = tmp_path / "bundle.jsonl"
    bundle.write_bytes(content)
    done = potluck(home, "receipts", "verify", "--file", str(bundle), ok=False)
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr


def test_a_bad_pubkey_is_refused_clearly(world, home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.jsonl"
    bundle.write_text("\n".join(genuine_lines(world)) + "\n", encoding="utf-8")
    done = potluck(
        home, "receipts", "verify", "--file", str(bundle), "--pubkey", "npub1nothing", ok=False
    )
    assert done.returncode == 2 and "--pubkey: not an npub" in done.stderr, done.stderr


def test_a_reveal_that_is_no_reveal_is_refused_clearly(world, home: Path, tmp_path: Path):
    _store, ledger, session_of, _solo = world
    sid = session_of(publish=True)
    event = ledger.person(sid, "web:alice", "hello")
    _event, text, salt = ledger.reveal(event.id)
    good = {"event": event.to_dict(), "text": text, "salt": salt.hex()}
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(good), encoding="utf-8")
    assert "committed to exactly this text" in potluck(
        home, "receipts", "reveal", "--check", str(proof)
    ).stdout.replace("\n", " ")
    cases = [
        (b"not json", "not a reveal"),
        (b"[1, 2]", "must be an object"),
        (b"[" * 100_000, "not a reveal"),
        (json.dumps({**good, "event": None}).encode(), "its event is not a Nostr event"),
        (
            json.dumps({**good, "event": event.to_dict() | {"content": "x\ud800"}}).encode(),
            "unpaired surrogate",
        ),
        (json.dumps({**good, "salt": "zz"}).encode(), "salt hex digits"),
        (json.dumps({**good, "text": None}).encode(), "text must be a string"),
        (json.dumps({**good, "text": "goodbye"}).encode(), "does not match"),
    ]
    for content, said in cases:
        proof.write_bytes(content)
        done = potluck(home, "receipts", "reveal", "--check", str(proof), ok=False)
        assert done.returncode == 2, (content[:60], done.stderr[-600:])
        assert said in done.stderr and "Traceback" not in done.stderr, (content[:60], done.stderr)
