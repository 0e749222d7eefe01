"""`potluck recipe record` and `potluck recipe compare`: what a recipe is actually good at,
from its receipts; published as a signed record, and checked by anyone against the relays."""

from __future__ import annotations

import asyncio
import json

import click

from .app import Context, _fail, pass_context
from .output import one_line, say
from .recipes import recipe


def _relays(context: Context, given: tuple[str, ...]) -> list[str]:
    return list(given) or list(context.config.relays)


@recipe.command("record")
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON.")
@click.option("--publish", is_flag=True, help="Sign the record and send it to the relays.")
@click.option("--verify", "link", help="Check a published record (nevent/naddr) instead.")
@click.option("--relay", "relays", multiple=True, help="Relays to use (default: configured).")
@click.option("--no-judge", is_flag=True, help="Do not run the configured judge first.")
@pass_context
def recipe_record(
    context: Context,
    ref: str | None,
    as_json: bool,
    publish: bool,
    link: str | None,
    relays: tuple[str, ...],
    no_judge: bool,
) -> None:
    """A recipe's track record: completion, tools, cost, verdicts, reach, diversity, from
    its receipts; this version's and rolled up over its versions and forks."""
    if link is not None:
        if ref or publish:
            _fail("--verify takes a link alone (no recipe, no --publish)")
        _verify(link, _relays(context, relays), as_json)
        return
    if ref is None:
        _fail("name a recipe (NAME or NAME@VERSION), or give --verify LINK")
    from ..records.render import lines
    from ..records.store import family

    assert ref is not None
    saved = context.library.get(ref)
    if context.config.judge and not no_judge:
        _judge(context, saved.id)
    found = family(context.library, ref)
    if publish:
        _publish(context, found.saved.id, _relays(context, relays), as_json)
        return
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ref": found.saved.ref,
                    "version": found.version.to_dict(),
                    "rolled_up": found.rolled_up.to_dict(),
                    "versions": [
                        {"ref": r, "id": vid, "record": rec.to_dict()}
                        for r, vid, rec in found.versions
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    say(f"{one_line(found.saved.ref)}  {one_line(found.saved.recipe.title)}", bold=True)
    say("this version:")
    for line in lines(found.version):
        say(f"  {line}")
    if context.config.relays:
        say(f"  {_forks(context, found.saved.id)}")
    if len(found.versions) > 1 or (found.versions and found.versions[0][1] != found.saved.id):
        say(f"rolled up over {len(found.versions)} versions and forks with sessions:")
        for line in lines(found.rolled_up):
            say(f"  {line}")
        from ..records.render import summary

        for version_ref, _vid, one in found.versions:
            say(f"  - {one_line(version_ref)}: {summary(one)}")


def _forks(context: Context, version_id: str) -> str:
    """Forks of this version by other authors, as the configured relays know them."""
    from ..receipts import version_store
    from ..receipts.travel import FetchError, forks

    found = version_store.version_events(context.library.store, version_id)
    if not found:
        return "forks by others: unknown (this version was never signed or published)"
    event = found[0][0]
    try:
        others = asyncio.run(forks(event.id, context.config.relays, timeout=5.0))
    except FetchError as exc:
        return f"forks by others: unknown ({exc})"
    by_others = {f.author_pubkey for f in others if f.author_pubkey != event.pubkey}
    count = sum(1 for f in others if f.author_pubkey != event.pubkey)
    return f"forks by others on the relays: {count} (by {len(by_others)} authors)"


def _ledger(context: Context):  # type: ignore[no-untyped-def]
    from ..receipts.ledger import Ledger

    return Ledger(
        context.library.store, context.keys(), default_relays=tuple(context.config.relays)
    )


def _judge(context: Context, version_id: str) -> None:
    from runtime.models.client import Models

    from ..records.judge import judge
    from ..records.store import descendants

    models = Models(providers=context.config.providers)
    judged = asyncio.run(
        judge(
            _ledger(context),
            models,
            context.config.judge,
            descendants(context.library.store, [version_id]),
        )
    )
    if judged.labelled or judged.unclear or judged.failed:
        say(
            f"judge {one_line(context.config.judge)}: {judged.labelled} exchanges labelled"
            + (f", {judged.unclear} unclear answers" if judged.unclear else "")
            + (f"; it failed: {judged.failed[0]}" if judged.failed else ""),
            err=True,
        )


def _publish(context: Context, version_id: str, relays: list[str], as_json: bool) -> None:
    from ..receipts.nip19 import Address, naddr_encode
    from ..records.events import ASSERTION
    from ..records.publish import RecordError, publish

    if not relays:
        _fail("no relays to publish to: configure [receipts] relays, or give --relay URL")
    try:
        prepared, sent = asyncio.run(publish(_ledger(context), version_id, relays))
    except RecordError as exc:
        _fail(str(exc))
        return
    event = prepared.event
    link = naddr_encode(Address(prepared.version.id, event.pubkey, ASSERTION, tuple(relays[:2])))
    refused = {relay: r for relay, r in sent.items() if not r.ok}
    if as_json:
        click.echo(json.dumps({"event": event.to_dict(), "link": link}, ensure_ascii=False))
    else:
        say(
            f"signed the record of {len(prepared.counted.sessions)} published sessions "
            f"(of {prepared.counted.run} run): {event.id}"
        )
        say(f"check it: potluck recipe record --verify {link}")
    for relay, result in refused.items():
        say(f"  {relay}: {result.error or result.refused}", fg="red", err=True)
    if refused and len(refused) == len(sent):
        raise SystemExit(1)


def _verify(link: str, relays: list[str], as_json: bool) -> None:
    from ..records.verify import VerifyError, verify

    try:
        found = asyncio.run(verify(link, relays))
    except VerifyError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": found.ok,
                    "record": found.claim.event.id,
                    "author": found.claim.event.pubkey,
                    "sessions": found.sessions,
                    "matched": found.comparison.matched,
                    "mismatches": found.comparison.mismatches,
                    "problems": found.problems,
                    "claimed": found.comparison.claimed,
                    "notes": found.notes,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        claim = found.claim
        head = f"record {claim.event.id[:12]}… by {claim.event.pubkey[:12]}…"
        if found.ok:
            say(
                f"{head}: {found.sessions} sessions fetched and verified; "
                f"{found.comparison.matched} figures recomputed, all match",
                fg="green",
            )
        else:
            say(
                f"{head}: {len(found.comparison.mismatches)} figure(s) do not match, "
                f"{len(found.problems)} problem(s)",
                fg="red",
            )
        for problem in found.problems:
            say(f"  problem: {problem}")
        for mismatch in found.comparison.mismatches:
            say(f"  does not match: {mismatch}")
        for claimed in found.comparison.claimed:
            say(f"  claimed: {claimed}")
        for note in found.notes:
            say(f"  note: {note}")
    if not found.ok:
        raise SystemExit(1)


@recipe.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON.")
@pass_context
def recipe_compare(context: Context, a: str, b: str, as_json: bool) -> None:
    """Two recipes (or versions, or a recipe and its fork) side by side, each difference
    said to be more than noise or not."""
    from ..records.compare import compare
    from ..records.render import table
    from ..records.store import Scope, record

    left, right = context.library.get(a), context.library.get(b)
    store = context.library.store
    rows = compare(record(store, Scope((left.id,))), record(store, Scope((right.id,))))
    if as_json:
        click.echo(
            json.dumps(
                {"a": left.ref, "b": right.ref, "rows": [r.to_dict() for r in rows]},
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    for line in table(rows, left.ref, right.ref):
        say(line)
