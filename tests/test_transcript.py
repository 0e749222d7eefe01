"""An exported transcript is one HTML file whose texts are anyone's: a participant who
writes `<!--<script>` or `</script>` must not be able to stop it verifying, or run script
in it. Checked in real Chromium from file://, offline."""

from __future__ import annotations

from pathlib import Path

from gateway.receipts.endings import Ending
from gateway.receipts.share import share_html
from gateway.receipts.transcript import _script_json

from .support import ARTIFACTS, launch

HOSTILE_TEXTS = [
    "<!-- a comment --> and --> alone",  # (a later `-->` would undo the next one)
    "<!--<script>",  # script data "escaped", then "double escaped": swallows the page's end
    "before </script> after",
    "shouting </SCRIPT > and <ScRiPt>",
    "</script><script>document.body.dataset.pwned = 'yes'</script>",
    "<img src=x onerror=\"document.body.dataset.pwned = 'yes'\">",
    "line\u2028separator and paragraph\u2029separator",
    "ampersands &amp; &lt;script&gt; & <b>bold</b>",
]


def test_embedded_json_has_no_markup_characters_at_all() -> None:
    embedded = _script_json({"texts": HOSTILE_TEXTS, "key<>&": "\u2028"})
    for character in "<>&\u2028\u2029":
        assert character not in embedded
    import json

    assert json.loads(embedded) == {"texts": HOSTILE_TEXTS, "key<>&": "\u2028"}


async def test_a_transcript_of_hostile_texts_verifies_in_chromium(tmp_path: Path, world) -> None:
    from playwright.async_api import async_playwright

    _store, ledger, session, _solo = world
    sid = session()
    for index, text in enumerate(HOSTILE_TEXTS):
        if index % 2:
            ledger.turn(
                sid,
                agent="mallory",
                model="scripted/echo",
                text=text,
                tokens_in=1,
                tokens_out=1,
                cost_usd=0.0,
            )
        else:
            ledger.person(sid, "web:mallory", text)
    ledger.close(sid, Ending.COMPLETED)
    exported = tmp_path / "hostile.html"
    exported.write_text(
        share_html(ledger, sid, "A </title><script>title</script>"), encoding="utf-8"
    )

    async with async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page()
        await page.goto(exported.as_uri())
        await page.wait_for_function("() => document.body.dataset.verified", timeout=20_000)
        status = await page.text_content("#status")
        await page.screenshot(path=str(ARTIFACTS / "transcript-hostile.png"), full_page=True)
        assert await page.evaluate("() => document.body.dataset.verified") == "yes", status
        assert "receipts verified" in status
        shown = await page.eval_on_selector_all(".text", "nodes => nodes.map(n => n.textContent)")
        assert shown == HOSTILE_TEXTS  # every text shown exactly as it was said, as text
        assert await page.evaluate("() => document.body.dataset.pwned") is None
        assert await page.title() == "A </title><script>title</script> — Potluck transcript"
        await browser.close()
