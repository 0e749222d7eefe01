"""Track records in the web room: `GET /api/records?ref=…` for the gallery, the recipe
picker and the Discover view; `&compare=OTHER` sets two side by side.

`ref` is a library name or NAME@VERSION, or a recipe version's event (its 64-hex id or an
`nevent`) as Discover finds it on relays: a version this install has run gets its local
record; any version gets the records other installs published about it (NIP-85
assertions on the configured relays, their figures as claimed: `/api/records/verify`
checks one against the relays). Routes only: the web adapter serves them behind its token
and Origin checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from runtime.recipes import RecipeError

from ..receipts import version_store
from ..receipts.nip19 import parse_link
from ..receipts.relay import RelayClient, RelayError
from ..receipts.versions import Refused
from .assertion import read_assertion
from .compare import compare
from .events import ASSERTION
from .render import lines, summary
from .store import Scope, family, record
from .verify import VerifyError, verify

if TYPE_CHECKING:
    from ..service import Gateway

RELAY_TIMEOUT = 5.0


class RecordRoutes:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.library = gateway.library

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/records", self.records),
            web.get("/api/records/verify", self.verify),
        ]

    def _local(self, ref: str) -> dict[str, Any] | None:
        """The local record of a library ref, or None when the library has no such ref."""
        try:
            found = family(self.library, ref)
        except RecipeError:
            return None
        return {
            "ref": found.saved.ref,
            "version_id": found.saved.id,
            "summary": summary(found.version),
            "lines": lines(found.version),
            "record": found.version.to_dict(),
            "rolled_up": {
                "summary": summary(found.rolled_up),
                "record": found.rolled_up.to_dict(),
                "versions": [
                    {"ref": r, "id": vid, "summary": summary(one)} for r, vid, one in found.versions
                ],
            },
        }

    async def _published(self, version_event: str) -> list[dict[str, Any]]:
        """Records other installs (or this one) published about a version event."""
        out: dict[str, dict[str, Any]] = {}
        query = {"kinds": [ASSERTION], "#d": [version_event], "limit": 50}
        for relay in self.gateway.config.relays:
            try:
                async with RelayClient(relay, timeout=RELAY_TIMEOUT) as client:
                    found = await client.collect(query, deadline=RELAY_TIMEOUT)
            except RelayError:
                continue
            for event in found.events:
                try:
                    claim = read_assertion(event)
                except Refused:
                    continue
                known = out.get(event.pubkey)
                if known is not None and known["created_at"] >= event.created_at:
                    continue
                out[event.pubkey] = {
                    "id": event.id,
                    "author": event.pubkey,
                    "created_at": event.created_at,
                    "relay": relay,
                    "figures": claim.figures,
                    "sessions": len(claim.counted.sessions),
                    "sessions_run": claim.counted.run,
                    "problems": claim.problems,
                    "verified": False,
                }
        return sorted(out.values(), key=lambda r: -int(r["created_at"]))

    def _version_event(self, ref: str) -> str | None:
        """A version event's id from a 64-hex id or an nevent, else None."""
        try:
            parsed = parse_link(ref)
        except ValueError:
            return None
        return parsed.event.event_id if parsed.event is not None else None

    async def records(self, request: web.Request) -> web.Response:
        ref = request.query.get("ref", "").strip()
        if not ref or len(ref) > 512:
            return web.json_response(
                {"error": "give ?ref=NAME[@VERSION] or a version event"}, status=400
            )
        other = request.query.get("compare", "").strip()
        if other:
            try:
                a, b = self.library.get(ref), self.library.get(other)
            except RecipeError as exc:
                return web.json_response({"error": str(exc)}, status=404)
            store = self.library.store
            rows = compare(record(store, Scope((a.id,))), record(store, Scope((b.id,))))
            return web.json_response(
                {"a": a.ref, "b": b.ref, "rows": [row.to_dict() for row in rows]}
            )
        body: dict[str, Any] = {"ref": ref}
        event_id = self._version_event(ref) if "@" not in ref else None
        if event_id is not None:
            stored = version_store.get(self.library.store, event_id)
            local = self._local(stored.tag_value("x") or "") if stored is not None else None
        else:
            local = self._local(ref)
            if local is None:
                return web.json_response({"error": f"no recipe {ref!r} here"}, status=404)
            found = version_store.find_version(
                self.library.store, local["version_id"], self.gateway.ledger.signer.pubkey
            )
            event_id = found[0].id if found is not None else None
        body["local"] = local
        body["version_event"] = event_id
        if request.query.get("published") == "1" and event_id is not None:
            body["published"] = await self._published(event_id)
        return web.json_response(body)

    async def verify(self, request: web.Request) -> web.Response:
        """Check one published record against the relays (its id or nevent/naddr)."""
        link = request.query.get("link", "").strip()
        if not link or len(link) > 1024:
            return web.json_response({"error": "give ?link=RECORD"}, status=400)
        try:
            found = await verify(link, self.gateway.config.relays, timeout=RELAY_TIMEOUT)
        except VerifyError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response(
            {
                "ok": found.ok,
                "sessions": found.sessions,
                "matched": found.comparison.matched,
                "mismatches": found.comparison.mismatches,
                "problems": found.problems,
                "claimed": found.comparison.claimed,
                "notes": found.notes,
            }
        )
