"""A tool call's output, as a published receipt signs it (issue 13 follow-up, beyond the
review's own test): salted in commitment form, with a salt of its own that revealing the
command does not give away; plain SHA-256 in transparent rooms; and receipts signed before
the change (plain `output_sha256` in commitment form) still verify and still open. The
Python verifier (chain.output_matches), the browser's (receipts.js checkOutput, in a real
headless Chromium) and the track record's figures agree on all three forms."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gateway.receipts import kinds
from gateway.receipts.chain import output_matches
from gateway.receipts.ledger import Ledger
from gateway.receipts.nostr import Event
from gateway.receipts.share import verifier_scripts
from gateway.receipts.transcript import _module, _script_json
from gateway.records.figures import compute

from .support import launch

PIN = "4821\n"


def tool_call(ledger: Ledger, sid: str, output: str = PIN) -> Event:
    return ledger.tool(
        sid,
        agent="assistant",
        tool="shell",
        command="cat pin.txt",
        exit_code=0,
        output=output,
        wall_ms=5,
    )


def signed_before_the_change(ledger: Ledger, sid: str, output: str = PIN) -> Event:
    """A commitment-form tool receipt as the ledger signed them before outputs were salted:
    the same fields, `output_sha256` plain, through the same append."""
    fields = {
        "agent": "assistant",
        "tool": "shell",
        "exit_code": 0,
        "wall_ms": 5,
        "output_sha256": hashlib.sha256(output.encode()).hexdigest(),
        "output_bytes": len(output.encode()),
        "killed": None,
    }
    return ledger._append(sid, kinds.TOOL_CALL, fields, "cat pin.txt")


def test_a_published_output_opens_with_its_own_salt_only(world) -> None:
    _store, ledger, session_of, _solo = world
    sid = session_of(publish=True)
    event = tool_call(ledger, sid)
    fields = json.loads(event.content)
    assert "output_sha256" not in fields and len(fields["output_commitment"]) == 64
    salt = ledger.output_salt(event.id)
    assert output_matches(event, PIN, salt)
    assert not output_matches(event, "4822\n", salt)
    assert not output_matches(event, PIN)  # no salt, nothing to check against
    # Revealing the command publishes the receipt's salt: it must not open the output.
    _event, command, command_salt = ledger.reveal(event.id)
    assert command == "cat pin.txt"
    assert command_salt != salt and not output_matches(event, PIN, command_salt)
    # Two calls printing the same PIN sign different commitments: equal outputs stay unlinked.
    again = tool_call(ledger, sid)
    assert json.loads(again.content)["output_commitment"] != fields["output_commitment"]
    assert ledger.verify_session(sid).ok


def test_a_transparent_room_keeps_the_plain_output_digest(world) -> None:
    _store, ledger, session_of, _solo = world
    sid = session_of(publish=True, transparent=True)
    event = tool_call(ledger, sid)
    fields = json.loads(event.content)
    assert fields["output_sha256"] == hashlib.sha256(PIN.encode()).hexdigest()
    assert "output_commitment" not in fields
    assert output_matches(event, PIN) and not output_matches(event, "0000\n")


def test_receipts_signed_before_the_change_still_verify_and_open(world) -> None:
    _store, ledger, session_of, _solo = world
    sid = session_of(publish=True)
    old = signed_before_the_change(ledger, sid)
    new = tool_call(ledger, sid)
    assert ledger.verify_session(sid).ok
    assert output_matches(old, PIN) and not output_matches(old, "0000\n")
    assert output_matches(new, PIN, ledger.output_salt(new.id))


def test_the_track_record_reads_tool_calls_of_every_form(world) -> None:
    """figures reads a tool call's exit code and time from its content without parsing the
    JSON when the layout is the usual one; the new field must not send it to the slow path
    (or, worse, miscount)."""
    from gateway.records.figures import _PATTERNS

    _store, ledger, session_of, _solo = world
    published, transparent = session_of(publish=True), session_of(transparent=True)
    events = [
        tool_call(ledger, published),
        signed_before_the_change(ledger, published),
        tool_call(ledger, transparent, output="x"),
    ]
    fast = _PATTERNS[False][0]
    assert all(fast.search(e.content) for e in events), [e.content for e in events]
    items = [("s", n, e.kind, e.content, None, e.id) for n, e in enumerate(events)]
    record = compute(items)
    assert (record.tool_calls, record.tool_ok, record.tool_failed) == (3, 3, 0)


async def test_the_browser_checks_outputs_as_the_python_verifier_does(world, tmp_path: Path):
    from playwright.async_api import async_playwright

    _store, ledger, session_of, _solo = world
    published = session_of(publish=True)
    new, old = tool_call(ledger, published), signed_before_the_change(ledger, published)
    plain = tool_call(ledger, session_of(transparent=True))
    salt = ledger.output_salt(new.id).hex()
    _e, _c, command_salt = ledger.reveal(new.id)
    cases = [
        (new, PIN, salt),
        (new, "4822\n", salt),
        (new, PIN, None),
        (new, PIN, command_salt.hex()),
        (new, PIN, "not hex"),
        (old, PIN, None),
        (old, "0000\n", None),
        (plain, PIN, None),
        (plain, PIN, salt),  # a salt offered for a plain digest is not needed
    ]
    expected = [
        output_matches(e, text, bytes.fromhex(s) if s and s != "not hex" else None)
        for e, text, s in cases
    ]
    assert expected == [True, False, False, False, False, True, False, True, True]
    imports = {"imports": {name: _module(src) for name, src in verifier_scripts().items()}}
    script = """
      import { checkOutput } from "potluck-receipts";
      const cases = JSON.parse(document.getElementById("cases").textContent);
      const got = [];
      for (const [event, text, salt] of cases) got.push(await checkOutput(event, text, salt));
      document.body.dataset.got = JSON.stringify(got);
    """
    page_cases = [[e.to_dict(), text, s] for e, text, s in cases]
    path = tmp_path / "outputs.html"
    path.write_text(
        "<!doctype html><html><body>"
        f'<script type="application/json" id="cases">{_script_json(page_cases)}</script>'
        f'<script type="importmap">{_script_json(imports)}</script>'
        f'<script type="module">{script}</script></body></html>',
        encoding="utf-8",
    )
    async with async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page()
        await page.goto(path.as_uri())
        await page.wait_for_function("() => document.body.dataset.got", timeout=20_000)
        got = json.loads(await page.evaluate("() => document.body.dataset.got"))
        await browser.close()
    assert got == expected
