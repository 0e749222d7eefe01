"""The in-browser verifier (adapters/web_static/receipts.js) agrees with chain.py, in a real
headless Chromium, through the self-verifying transcript it ships in: v1 and v2 sessions
verify; a count re-signed to disagree with the events, an ending outside the closed set and
an event after the close mark are named, as the Python verifier names them."""

from __future__ import annotations

from pathlib import Path

from gateway.receipts import kinds
from gateway.receipts.chain import Link, RecipeRef, receipt
from gateway.receipts.endings import Ending
from gateway.receipts.nostr import Event
from gateway.receipts.share import STATIC, session_entries, verifier_scripts
from gateway.receipts.transcript import Entry, transcript_html

from .support import exchange, launch, resigned


def page_for(entries: list[Entry], pubkey: str, path: Path) -> Path:
    path.write_text(
        transcript_html(
            entries,
            title="t",
            session_id="s",
            pubkey=pubkey,
            npub="npub",
            scripts=verifier_scripts(),
            licence=(STATIC / "noble-secp256k1.LICENSE").read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    return path


async def verdicts(pages: list[Path]) -> list[tuple[str, list[str]]]:
    from playwright.async_api import async_playwright

    out = []
    async with async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page()
        for path in pages:
            await page.goto(path.as_uri())
            await page.wait_for_function("() => document.body.dataset.verified", timeout=20_000)
            verified = await page.evaluate("() => document.body.dataset.verified")
            bad = await page.eval_on_selector_all(".badge.bad", "s => s.map(n => n.textContent)")
            out.append((verified, bad))
        await browser.close()
    return out


def relinked(ledger, events: list[Event], index: int, **change) -> list[Event]:
    """Events with one re-signed with changed fields, and every later link re-signed to
    follow it: what a forger holding the key could produce."""
    events = list(events)
    events[index] = resigned(ledger, events[index], **change)
    for later in range(index + 1, len(events)):
        tags = [list(t) for t in events[later].tags]
        tags[4][1] = events[later - 1].id
        events[later] = ledger.signer.sign(
            events[later].created_at, events[later].kind, tags, events[later].content
        )
    return events


def as_entries(events: list[Event]) -> list[Entry]:
    return [Entry(e.to_dict(), None, None) for e in events]


async def test_the_browser_verifier_checks_v1_and_v2_as_the_python_one_does(world, tmp_path):
    _store, ledger, session, solo = world
    sid = session()
    exchange(ledger, sid, Ending.COMPLETED)
    exchange(ledger, sid, Ending.LIMIT_TURNS, killed="timeout")
    ledger.close(sid, Ending.STOPPED)
    v2 = session_entries(ledger, sid)  # with texts and salts: reveals are checked too
    events = ledger.events(sid)

    ref = RecipeRef("solo", solo.id, ledger.signer.pubkey)
    v1, prev = [], None
    for seq, (kind, fields) in enumerate(
        [
            (kinds.SESSION_MARK, {"mark": "open"}),
            (kinds.PERSON_MESSAGE, {"sender": "x"}),
            (kinds.SESSION_MARK, {"mark": "close", "reason": "ended", "count": 3}),
        ]
    ):
        event = receipt(
            ledger.signer,
            Link("old", seq, prev, ref, format=1),
            kind,
            fields,
            text=None,
            salt=b"",
            transparent=False,
            created_at=1_700_000_000 + seq,
        )
        v1.append(event)
        prev = event.id

    close = len(events) - 1
    after = ledger.signer.sign(
        events[-1].created_at,
        kinds.PERSON_MESSAGE,
        [
            ["format", "2"],
            ["session", sid],
            ["seq", str(len(events))],
            ["E", events[0].id, "", ledger.signer.pubkey],
            ["e", events[-1].id, "", ledger.signer.pubkey],
            list(events[0].tag("a")),
            list(events[0].tag("recipe")),
        ],
        "{}",
    )
    cases = {
        "v2": (v2, None),
        "v1": (as_entries(v1), None),
        "count": (as_entries(relinked(ledger, events, 4, turns=3)), "turns says 3"),
        "ending": (as_entries(relinked(ledger, events, close, ending="won")), "not an ending"),
        "label": (as_entries(relinked(ledger, events, close, ending="cut")), "does not say cut"),
        "after close": (as_entries([*events, after]), "after the session's close mark"),
    }
    pages = [
        page_for(entries, ledger.signer.pubkey, tmp_path / f"case{n}.html")
        for n, (entries, _named) in enumerate(cases.values())
    ]
    results = await verdicts(pages)
    for (name, (_entries, named)), (verified, bad) in zip(cases.items(), results, strict=True):
        if named is None:
            assert verified == "yes" and bad == [], (name, bad)
        else:
            assert verified == "no" and any(named in b for b in bad), (name, bad)
