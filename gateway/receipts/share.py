"""The I/O around `transcript_html`: a session's stored receipts and the vendored verifier."""

from __future__ import annotations

import json
from importlib import resources

from .ledger import Ledger
from .transcript import Entry, transcript_html

STATIC = resources.files("adapters") / "web_static"


def verifier_scripts() -> dict[str, str]:
    """Module name -> source, as the import maps of the web room and the exports name them."""
    return {
        "noble-secp256k1": (STATIC / "noble-secp256k1.js").read_text(encoding="utf-8"),
        "potluck-receipts": (STATIC / "receipts.js").read_text(encoding="utf-8"),
    }


def session_entries(ledger: Ledger, session_id: str) -> list[Entry]:
    return [
        Entry(json.loads(row.event_json), row.plaintext, row.salt)
        for row in ledger.rows(session_id)
    ]


def share_html(ledger: Ledger, session_id: str, title: str) -> str:
    """One session as a self-verifying HTML file (texts included: sharing reveals them)."""
    entries = session_entries(ledger, session_id)
    if not entries:
        raise LookupError(f"no receipts for session {session_id}")
    return transcript_html(
        entries,
        title=title,
        session_id=session_id,
        pubkey=ledger.keys.pubkey,
        npub=ledger.keys.npub,
        scripts=verifier_scripts(),
        licence=(STATIC / "noble-secp256k1.LICENSE").read_text(encoding="utf-8"),
    )
