"""The `potluck` command as a user runs it: a real process, a real home directory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from .support import POTLUCK, V2, potluck


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    potluck(home, "init")
    return home


def test_init_writes_private_files_and_is_idempotent(home: Path) -> None:
    for name in ("config.toml", "gateway.key"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    key = (home / "gateway.key").read_text()
    again = potluck(home, "init")
    assert "kept" in again.stdout and (home / "gateway.key").read_text() == key
    assert "npub1" in again.stdout


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    potluck(tmp_path, "init")
    (tmp_path / "gateway.key").chmod(0o644)
    done = potluck(tmp_path, "init", ok=False)
    assert done.returncode == 2 and "chmod 600" in done.stderr


def test_list_fork_set_diff_history_export(home: Path, tmp_path: Path) -> None:
    listing = potluck(home, "recipe", "list").stdout
    for name in ("code-review", "debate", "crush", "board", "solo"):
        assert f"{name}@" in listing
    assert (
        "forked from code-review@" in potluck(home, "recipe", "fork", "code-review", "mine").stdout
    )
    set_out = potluck(
        home, "recipe", "set", "mine", "agents.architect.model", "openai/gpt-5"
    ).stdout
    assert "agents.architect.model: anthropic/claude-sonnet-4-5 → openai/gpt-5" in set_out
    diff = potluck(home, "recipe", "diff", "code-review", "mine").stdout
    assert "~ name: code-review → mine" in diff and "openai/gpt-5" in diff
    history = potluck(home, "recipe", "history", "mine").stdout.splitlines()
    assert len(history) == 3 and history[-1].lstrip().startswith("← code-review@")
    out = tmp_path / "mine.yaml"
    potluck(home, "recipe", "export", "mine", "-o", str(out))
    validated = potluck(home, "recipe", "validate", str(out)).stdout
    mine_ref = history[0].split()[0]
    assert validated.strip().endswith(f"ok ({mine_ref})")  # same id after export


def test_import_a_character_card_then_show_it(home: Path, tmp_path: Path) -> None:
    card = tmp_path / "owl.json"
    card.write_text(json.dumps(V2))
    assert "imported senor-buho@" in potluck(home, "recipe", "import", str(card)).stdout
    shown = potluck(home, "recipe", "show", "senor-buho").stdout
    assert "senor_buho: local/smollm2-135m" in shown


def test_errors_are_messages_not_tracebacks(home: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("potluck: 1\nname: Bad Name\ntitle: x\nagents: []\n")
    done = potluck(home, "recipe", "validate", str(broken), ok=False)
    assert done.returncode == 1
    assert f"{broken}:2: name:" in done.stderr and "Traceback" not in done.stderr
    done = potluck(home, "recipe", "set", "solo", "protocol.max_turns", "lots", ok=False)
    assert done.returncode == 2 and "valid integer" in done.stderr
    done = potluck(home, "recipe", "show", "nothing-here", ok=False)
    assert "no such recipe" in done.stderr and "Traceback" not in done.stderr


def _session_with_receipts(home: Path) -> str:
    """A session written through the library and ledger, as the gateway will."""
    from gateway.config import load_config
    from gateway.library import Library
    from gateway.receipts.endings import Ending
    from gateway.receipts.keys import read_key_file
    from gateway.receipts.ledger import Ledger
    from gateway.store.db import Store
    from gateway.store.rooms import ensure_room, start_session

    config = load_config(home, env={})
    store = Store(config.database_url)
    solo = Library(store).get("solo")
    ledger = Ledger(store, read_key_file(config.key_file))
    sid = start_session(store, ensure_room(store, "web", "cli-room"), solo.id)
    ledger.open(sid, "solo", solo.id)
    ledger.person(sid, "web:alice", "Is this thing on?")
    ledger.turn(
        sid,
        agent="assistant",
        model="local/smollm2-135m",
        text="It is.",
        tokens_in=9,
        tokens_out=3,
        cost_usd=0.0,
    )
    ledger.close(sid, Ending.COMPLETED)
    store.close()
    return sid


def test_receipts_verify_export_and_reveal(home: Path, tmp_path: Path) -> None:
    sid = _session_with_receipts(home)
    assert (
        "(format v2): 4 events, ids, signatures and chain verified"
        in potluck(home, "receipts", "verify", "--session", sid).stdout
    )
    assert "verified" in potluck(home, "receipts", "verify", "--room", "web:cli-room").stdout
    bundle, reveals = tmp_path / "s.jsonl", tmp_path / "s.reveals"
    potluck(home, "receipts", "export", sid, "-o", str(bundle), "--reveals", str(reveals))
    assert stat.S_IMODE(reveals.stat().st_mode) == 0o600
    npub = potluck(home, "init").stdout.split("npub:")[1].split()[0]
    ok = potluck(home, "receipts", "verify", "--file", str(bundle), "--pubkey", npub)
    assert "verified" in ok.stdout

    lines = bundle.read_text().splitlines()
    tampered = tmp_path / "t.jsonl"
    altered = json.loads(lines[1])
    altered["content"] = altered["content"].replace('"chars":', '"chars":9')
    tampered.write_text("\n".join([lines[0], json.dumps(altered), *lines[2:]]))
    bad = potluck(home, "receipts", "verify", "--file", str(tampered), ok=False)
    assert bad.returncode == 1 and "#1" in bad.stdout and "id does not match" in bad.stdout
    dropped = tmp_path / "d.jsonl"
    dropped.write_text("\n".join([lines[0], *lines[2:]]))
    bad = potluck(home, "receipts", "verify", "--file", str(dropped), ok=False)
    assert "missing or out of order" in bad.stdout

    person_id = json.loads(lines[1])["id"]
    proof = json.loads(potluck(home, "receipts", "reveal", person_id).stdout)
    assert proof["text"] == "Is this thing on?" and proof["matches"] is True
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(proof))
    assert (
        "committed to exactly this text"
        in potluck(home, "receipts", "reveal", "--check", str(proof_file)).stdout
    )
    proof_file.write_text(json.dumps({**proof, "text": "Is this thing off?"}))
    lie = potluck(home, "receipts", "reveal", "--check", str(proof_file), ok=False)
    assert "does not match" in lie.stderr

    page = tmp_path / "s.html"  # checked in a browser by tests/test_web.py
    potluck(home, "receipts", "share", sid, "-o", str(page), "--title", "CLI <test>")
    html = page.read_text()
    assert "Is this thing on?" in html and "CLI &lt;test&gt;" in html
    assert html.count('"event"') == 4 and "<script>window" not in html
    missing = potluck(home, "receipts", "share", "nope", "-o", str(page), ok=False)
    assert "no receipts for session nope" in missing.stderr


def test_run_holds_a_whole_conversation_in_the_terminal_with_receipts(
    home: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "duo.yaml"
    recipe.write_text(
        "potluck: 1\nname: duo\ntitle: Duo\n"
        "agents:\n"
        "  - {name: first, model: scripted/echo, persona: You echo.}\n"
        "  - {name: second, model: scripted/echo, persona: You echo too.}\n"
        "protocol: {kind: round_robin, max_rounds: 1, max_turns: 2}\n"
    )
    done = potluck(home, "run", str(recipe), "ping <b>")
    out = done.stdout
    assert "duo@" in out and "you: ping <b>" in out
    assert out.index("first ") < out.index("second ")
    assert "echo: you: ping <b>" in out
    assert "2 turns" in out and "receipts: " in out and "chain verified" in out
    session = out.rsplit("session ", 1)[1].split()[0]
    verified = potluck(home, "receipts", "verify", "--session", session, ok=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_run_with_an_unknown_recipe_says_so(home: Path) -> None:
    done = potluck(home, "run", "no-such-recipe", "hi", ok=False)
    assert done.returncode != 0 and "no-such-recipe" in done.stderr
    assert "Traceback" not in done.stderr


def test_chat_is_a_local_room_driven_by_the_gateway(home: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "pair.yaml"
    recipe.write_text(
        "potluck: 1\nname: pair\ntitle: Pair\ntrigger: every_message\n"
        "agents:\n"
        "  - {name: left, model: scripted/echo, persona: You echo.}\n"
        "  - {name: right, model: scripted/echo, persona: You echo too.}\n"
        "protocol: {kind: round_robin, max_rounds: 1, max_turns: 2}\n"
    )
    potluck(home, "recipe", "import", str(recipe))
    env = {**os.environ, "POTLUCK_HOME": str(home)}
    env.pop("POTLUCK_DATABASE_URL", None)
    done = subprocess.run(
        [*POTLUCK, "chat", "pair"],
        input="good morning\n/recipe frob\n/receipts\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "Potluck local room · pair@" in out
    assert "left: echo: " in out and "right: echo: " in out and "good morning" in out
    assert "'frob' is not a recipe command" in out
    assert "chain verified" in out
