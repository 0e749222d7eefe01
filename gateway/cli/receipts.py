"""`potluck receipts …`: verify, export, share, reveal and publish signed receipts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .app import Context, _fail, cli, pass_context
from .output import emit_data, say

if TYPE_CHECKING:
    from ..receipts.nostr import Event

# -- receipts ------------------------------------------------------------------------------


@cli.group()
def receipts() -> None:
    """Verify, export, reveal and publish the signed receipts of conversations."""


def _ledger(context: Context):  # type: ignore[no-untyped-def]
    from ..receipts.ledger import Ledger

    return Ledger(
        context.library.store, context.keys(), default_relays=tuple(context.config.relays)
    )


def _print_report(name: str, report) -> bool:  # type: ignore[no-untyped-def]
    fmt = report.format_label  # which receipts format each session's events are in
    if report.ok:
        click.secho(
            f"{name} ({fmt}): {report.checked} events, ids, signatures and chain verified",
            fg="green",
        )
    else:
        click.secho(
            f"{name} ({fmt}): {len(report.problems)} problem(s) in {report.checked} events",
            fg="red",
        )
        for problem in report.problems:
            say(f"  - {problem}")
    for note in report.notes:
        say(f"  note: {note}")
    return report.ok


HEX = re.compile(r"(?:[0-9a-f]{2})*")
MAX_LISTED = 20  # malformed lines of a bundle named one by one; the rest are counted


def _read_bundle(bundle: Path) -> tuple[list[Event], list[str]]:
    """A JSON-lines bundle's events, and what is wrong with each line that is not one.

    A bundle is a stranger's file: whatever is wrong with it is named, line by line, and
    the lines that are events are still checked, never a traceback (EventFormatError also
    covers a lone surrogate, whose event cannot be serialised to check its id)."""
    from ..receipts.nostr import EventFormatError, parse_event

    try:
        text = bundle.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"{bundle}: not UTF-8 text (byte {exc.start}); a bundle is JSON lines")
    except OSError as exc:
        _fail(f"{bundle}: cannot be read: {exc.strerror or exc}")
    events: list[Event] = []
    malformed: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(parse_event(json.loads(line)))
        except (ValueError, RecursionError, EventFormatError) as exc:
            malformed.append(f"{bundle}:{number}: not a Nostr event: {str(exc)[:300]}")
    return events, malformed


@receipts.command("verify")
@click.option("--session", "session_id", help="One session's chain, from the store.")
@click.option("--room", help="Every session of a room: platform:room-id or its number.")
@click.option(
    "--file",
    "bundle",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An exported JSON-lines bundle; needs no store.",
)
@click.option("--pubkey", help="With --file: the gateway's npub or hex key to expect.")
@pass_context
def receipts_verify(
    context: Context,
    session_id: str | None,
    room: str | None,
    bundle: Path | None,
    pubkey: str | None,
) -> None:
    """Check every id, signature and link; names exactly what is wrong."""
    from ..receipts.chain import verify_chain
    from ..receipts.nip19 import npub_decode
    from ..store.rooms import find_room

    if sum(x is not None for x in (session_id, room, bundle)) != 1:
        _fail("give exactly one of --session, --room or --file")
    results: list[bool] = []
    if bundle is not None:
        try:
            expected = npub_decode(pubkey) if pubkey and pubkey.startswith("npub") else pubkey
        except ValueError as exc:
            _fail(f"--pubkey: not an npub: {exc}")
        events, malformed = _read_bundle(bundle)
        if not events and not malformed:
            _fail(f"{bundle}: no events in it; a bundle is JSON lines, one Nostr event each")
        for problem in malformed[:MAX_LISTED]:
            say(problem, fg="red")
        if len(malformed) > MAX_LISTED:
            say(f"… and {len(malformed) - MAX_LISTED} more malformed lines", fg="red")
        if malformed:
            say(f"{bundle}: {len(malformed)} line(s) are not Nostr events", fg="red")
            results.append(False)
        if events:  # what can be checked still is, so one bad line hides nothing else
            results.append(_print_report(str(bundle), verify_chain(events, pubkey=expected)))
    else:
        ledger = _ledger(context)
        if session_id is not None:
            sessions = [session_id]
        else:
            room_id = find_room(ledger.store, room or "")
            if room_id is None:
                _fail(f"no room {room!r}; rooms are named platform:room-id")
            sessions = ledger.sessions_of_room(room_id)
        for sid in sessions:
            results.append(_print_report(f"session {sid}", ledger.verify_session(sid)))
    if not all(results):
        sys.exit(1)


@receipts.command("export")
@click.argument("session_id")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write.")
@click.option(
    "--reveals",
    type=click.Path(path_type=Path),
    help="Also write the texts and salts that open the commitments (private!).",
)
@pass_context
def receipts_export(
    context: Context, session_id: str, output: Path | None, reveals: Path | None
) -> None:
    """A session's receipts as JSON lines of plain Nostr events."""
    ledger = _ledger(context)
    lines = list(ledger.export(session_id))
    if not lines:
        _fail(f"session {session_id} has no receipts")
    text = "\n".join(lines) + "\n"
    if output is None:
        emit_data(text)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{len(lines)} events → {output}", err=True)
    if reveals is not None:
        rows = [r for r in ledger.rows(session_id) if r.plaintext is not None]
        body = "".join(
            json.dumps({"id": r.id, "text": r.plaintext, "salt": r.salt}, ensure_ascii=False) + "\n"
            for r in rows
        )
        from ..config import write_private

        reveals.unlink(missing_ok=True)
        write_private(reveals, body.encode())
        click.echo(f"{len(rows)} reveals → {reveals} (mode 0600)", err=True)


@receipts.command("share")
@click.argument("session_id")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="The .html to write."
)
@click.option("--title", default="Potluck session", show_default=True)
@pass_context
def receipts_share(context: Context, session_id: str, output: Path, title: str) -> None:
    """A session as one HTML file that verifies its own receipts, offline, in any browser.
    It contains the texts: share it only where the conversation may be read."""
    from ..receipts.share import share_html

    try:
        page = share_html(_ledger(context), session_id, title)
    except LookupError as exc:
        _fail(str(exc))
    output.write_text(page, encoding="utf-8")
    click.echo(f"transcript with receipts → {output}", err=True)


@receipts.command("reveal")
@click.argument("event_id", required=False)
@click.option(
    "--check",
    "check_file",
    type=click.Path(path_type=Path, exists=True),
    help="Check a reveal (JSON with event, text, salt) without any store.",
)
@pass_context
def receipts_reveal(context: Context, event_id: str | None, check_file: Path | None) -> None:
    """Prove what a commitment-form receipt said, or check such a proof."""
    from ..receipts.chain import reveal_matches
    from ..receipts.nostr import EventFormatError, check_event, parse_event

    if check_file is not None:
        # A reveal is a stranger's file too: each way it can be wrong is said, not raised.
        try:
            claim = json.loads(check_file.read_bytes().decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            _fail(f"{check_file}: not a reveal (JSON with event, text, salt): {str(exc)[:300]}")
        except OSError as exc:
            _fail(f"{check_file}: cannot be read: {exc.strerror or exc}")
        if not isinstance(claim, dict):
            _fail(f"{check_file}: not a reveal: the JSON must be an object with event, text, salt")
        try:
            event = parse_event(claim.get("event"))
        except EventFormatError as exc:
            _fail(f"{check_file}: its event is not a Nostr event: {str(exc)[:300]}")
        text, salt = claim.get("text"), claim.get("salt")
        if not isinstance(text, str) or not isinstance(salt, str) or not HEX.fullmatch(salt):
            _fail(f"{check_file}: a reveal's text must be a string and its salt hex digits")
        problem = check_event(event)
        if problem:
            _fail(f"the event itself does not verify: {problem}")
        if not reveal_matches(event, text, bytes.fromhex(salt)):
            _fail("the text does not match the event's commitment")
        click.secho(
            f"verified: event {event.id[:12]}… by {event.pubkey[:12]}… committed to "
            "exactly this text",
            fg="green",
        )
        return
    if event_id is None:
        _fail("give an EVENT_ID, or --check FILE")
    event, text, salt = _ledger(context).reveal(event_id)
    proof = {
        "event": event.to_dict(),
        "text": text,
        "salt": salt.hex(),
        "matches": reveal_matches(event, text, salt),
    }
    emit_data(json.dumps(proof, ensure_ascii=False, indent=2) + "\n")


@receipts.command("publish")
@click.option("--all", "force", is_flag=True, help="Retry now, ignoring backoff.")
@pass_context
def receipts_publish(context: Context, force: bool) -> None:
    """Send pending receipts of opted-in rooms to their relays (one pass)."""
    import asyncio

    from ..receipts.publisher import publication_counts, publish_pending

    result = asyncio.run(publish_pending(context.library.store, context.keys(), force=force))
    click.echo(
        f"accepted {result.accepted}, rejected {result.rejected}, deferred {result.deferred}"
    )
    for error in result.errors:
        say(f"  {error} (kept; will retry)", fg="yellow")
    counts = publication_counts(context.library.store)
    click.echo("state: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
