"""/recipe record: what a recipe is actually good at, from its receipts, in the room; with
two recipes (or a recipe and its fork), side by side, each difference said to be more than
noise or not. `record_line` is the one-line summary /recipe show adds."""

from __future__ import annotations

from ..library import Saved
from ..records.compare import compare
from ..records.render import lines, summary, table
from ..records.store import Scope, family, record
from .context import Request, Services
from .table import handles


def record_line(services: Services, saved: Saved) -> str:
    return "track record: " + summary(record(services.library.store, Scope((saved.id,))))


@handles("recipe record")
async def recipe_record(req: Request) -> None:
    library = req.services.library
    if len(req.args) == 2:
        a, b = library.get(req.args[0]), library.get(req.args[1])
        store = library.store
        rows = compare(record(store, Scope((a.id,))), record(store, Scope((b.id,))))
        await req.say("\n".join(table(rows, a.ref, b.ref)))
        return
    ref = req.args[0] if req.args else req.conversation().saved.id
    found = family(library, ref)
    text = [f"{found.saved.ref} — {found.saved.recipe.title}", *lines(found.version)]
    others = [v for v in found.versions if v[1] != found.saved.id]
    if others:
        text.append(f"versions and forks ({len(found.versions)} with sessions):")
        text += [f"  {version_ref}: {summary(one)}" for version_ref, _vid, one in found.versions]
    await req.say("\n".join(text))
