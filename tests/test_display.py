"""Hostile text on a terminal: a card whose name writes the clipboard (OSC 52), clears the
screen and reverses itself with bidi overrides is shown by the real `potluck` command as
visible, inert characters; model output streamed into the terminal room likewise."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from adapters.base import Outgoing
from adapters.terminal import TerminalAdapter
from runtime.text import terminal_safe

from .support import CLEAR, HOSTILE, assert_inert, on_a_terminal, potluck


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain\ttext\nnext line", "plain\ttext\nnext line"),
        ("\x1b]52;c;eA==\x07", "␛]52;c;eA==␇"),
        ("\x1b[2J", "␛[2J"),
        ("a\r\nb\rc", "a\nbc"),
        ("\x9b31m", "\ufffd31m"),
        ("\x7f\x00", "␡␀"),
        ("\u202egnp.exe", "\ufffdgnp.exe"),
        ("\u2066x\u2069", "\ufffdx\ufffd"),
        ("half \ud800", "half \ufffd"),
        ("héllo 😀 عربي", "héllo 😀 عربي"),  # ordinary text, right-to-left too, is untouched
    ],
)
def test_terminal_safe_shows_every_control_as_a_visible_character(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown
    assert terminal_safe(shown) == shown  # idempotent: safe text stays as it is
    half = len(text) // 2  # a stream cut anywhere comes out the same
    assert terminal_safe(text[:half]) + terminal_safe(text[half:]) == shown


def test_one_line_fields_cannot_forge_the_lines_after_them() -> None:
    assert terminal_safe("Title\nsolo@1234567  bundled  Fake", one_line=True) == (
        "Title␤solo@1234567  bundled  Fake"
    )


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home with an imported card whose every text field is hostile; its ref."""
    home = tmp_path_factory.mktemp("home")
    potluck(home, "init")
    card = home / "evil.json"
    data = {
        "name": "Evil " + HOSTILE + "\nsolo@1234567  bundled  Forged line",
        "description": "Persona " + HOSTILE,
        "first_mes": "Greeting " + HOSTILE,
        "creator_notes": "Notes " + HOSTILE,
        "creator": "Author " + HOSTILE,
    }
    card.write_text(json.dumps({"spec": "chara_card_v2", "data": data}))
    done = potluck(home, "recipe", "import", str(card))
    assert_inert(done.stdout + done.stderr)
    ref = done.stdout.split()[1]
    return home, ref


def test_recipe_list_and_show_print_hostile_card_text_inert(evil: tuple[Path, str]) -> None:
    home, ref = evil
    listing = potluck(home, "recipe", "list").stdout
    assert_inert(listing)
    (line,) = [row for row in listing.splitlines() if row.startswith(ref)]
    assert "Evil ␛]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==␇␛[2J" in line  # visible, not acted on
    assert "␤solo@1234567  bundled  Forged line" in line  # the forged line stays in its own
    assert not any(row.startswith("solo@1234567") for row in listing.splitlines())

    shown = potluck(home, "recipe", "show", ref).stdout
    assert_inert(shown)
    assert "Notes ␛]52;c;" in shown
    as_yaml = potluck(home, "recipe", "show", ref, "--yaml").stdout
    assert_inert(as_yaml)
    assert "Greeting" in as_yaml and "Author" in as_yaml and "Persona" in as_yaml


def test_history_set_diff_and_errors_print_hostile_text_inert(
    evil: tuple[Path, str], tmp_path: Path
) -> None:
    home, ref = evil
    name = ref.split("@")[0]
    for args in (
        ("recipe", "history", ref),
        ("recipe", "set", name, "description", "calm now"),  # prints the old description
        ("recipe", "diff", ref, name),
        ("recipe", "set", name, "title", "Evil again " + HOSTILE),
    ):
        done = potluck(home, *args)
        assert_inert(done.stdout + done.stderr)
    assert "␛]52;c;" in done.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        json.dumps({"potluck": 1, "name": "x", "title": "t", HOSTILE: 1, "agents": []}),
        encoding="utf-8",
    )
    for args in (("recipe", "validate", str(bad)), ("recipe", "show", str(bad))):
        done = potluck(home, *args, ok=False)
        assert done.returncode in (1, 2) and "unknown field" in done.stderr
        assert_inert(done.stdout + done.stderr)


def run_in_terminal(home: Path, *args: str) -> str:
    """`potluck ARGS` with its stdout on a pseudo-terminal, as a person would run it."""
    code, shown, stderr = on_a_terminal(home, *args, stderr_too=False, timeout=60)
    assert code == 0, stderr
    return shown.decode("utf-8")


def test_export_is_exact_into_a_pipe_and_inert_on_a_terminal(evil: tuple[Path, str]) -> None:
    home, ref = evil
    piped = potluck(home, "recipe", "export", ref).stdout
    assert "\u202e" in piped  # the file's bytes, exactly, for `> file`
    on_terminal = run_in_terminal(home, "recipe", "export", ref)
    assert_inert(on_terminal.replace("\r\n", "\n"))  # the pty itself turns \n into \r\n
    assert "Greeting" in on_terminal


async def test_the_terminal_room_shows_model_output_inert() -> None:
    out = io.StringIO()
    room = TerminalAdapter(stdin=io.StringIO(""), stdout=out)
    first = await room.send(Outgoing("local", "…", agent="agent" + CLEAR))
    streamed = ""
    for piece in [HOSTILE[i : i + 3] for i in range(0, len(HOSTILE), 3)]:
        streamed += piece  # each edit carries the whole text so far, as the gateway sends it
        await room.edit("local", first, Outgoing("local", streamed, agent="agent"))
    await room.edit("local", first, Outgoing("local", "rewritten " + HOSTILE, agent="agent"))
    await room.send(Outgoing("local", "notice " + HOSTILE))
    await asyncio.sleep(0)
    shown = out.getvalue()
    assert_inert(shown)
    assert "␛]52;c;" in shown and "rewritten ␛]52;c;" in shown and "notice ␛]52;c;" in shown
    assert "agent␛[2J␛[H: " in shown  # an agent's label is one line of inert text too


def test_terminal_safe_is_used_in_the_terminal_room_with_colour() -> None:
    """With colour on (a real terminal), the room's own colour codes are the only ESCs."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    room = TerminalAdapter(stdin=io.StringIO(""), stdout=out)
    asyncio.run(room.send(Outgoing("local", HOSTILE, agent="agent")))
    shown = out.getvalue()
    assert "␛]52;c;" in shown
    own = shown.replace("\033[0m", "").replace(next(iter(room._colours.values())), "")
    assert_inert(own)


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("pseudo-terminals as Linux has them")


def test_receipts_reveal_and_export_are_inert_on_a_terminal(evil: tuple[Path, str]) -> None:
    """A person's message is signed as said; printed to a terminal it is shown, not run."""
    from gateway.config import load_config
    from gateway.library import Library
    from gateway.receipts.endings import Ending
    from gateway.receipts.keys import read_key_file
    from gateway.receipts.ledger import Ledger
    from gateway.store.db import Store
    from gateway.store.rooms import ensure_room, start_session

    home, _ = evil
    config = load_config(home, env={})
    store = Store(config.database_url)
    try:
        solo = Library(store).get("solo")
        ledger = Ledger(store, read_key_file(config.key_file))
        sid = start_session(store, ensure_room(store, "web", "display-room"), solo.id)
        ledger.open(sid, "solo")
        said = ledger.person(sid, "web:mallory", "look " + HOSTILE)
        ledger.close(sid, Ending.COMPLETED)
    finally:
        store.close()

    piped = json.loads(potluck(home, "receipts", "reveal", said.id).stdout)
    assert piped["text"] == "look " + HOSTILE and piped["matches"]  # exact into a pipe
    for args in (("receipts", "reveal", said.id), ("receipts", "export", sid)):
        on_terminal = run_in_terminal(home, *args).replace("\r\n", "\n")
        assert_inert(on_terminal)
    shown = run_in_terminal(home, "receipts", "reveal", said.id)
    assert "\\u001b]52;c;" in shown and "\ufffdevil\ufffd" in shown  # JSON-escaped, bidi shown
