"""The web room's gateway pages: recipe gallery and editor, diffs and lineage, watching any
room on any platform, receipts and transcript export.

Routes only; the web adapter serves them behind its token and Origin checks, so nothing
here is reachable without the install's token. Every error is JSON a page can show: recipe
problems keep their line, field and hint so the editor can mark the line.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.web import SUBPROTOCOL
from runtime.recipes import RecipeError, diff, to_yaml

from .library import Saved
from .receipts.share import session_entries, share_html

if TYPE_CHECKING:
    from .service import Gateway


def _problems(error: RecipeError) -> web.Response:
    return web.json_response(
        {
            "error": str(error),
            "problems": [
                {"line": p.line, "field": p.field, "message": p.message, "hint": p.hint}
                for p in error.problems
            ],
        },
        status=400,
    )


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "send a JSON object"}), content_type="application/json"
        )
    return body


class WebConsole:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.library = gateway.library

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/recipes/{name}", self.recipe),
            web.post("/api/recipes/{name}", self.save),
            web.post("/api/recipes/{name}/fork", self.fork),
            web.get("/api/diff", self.diff),
            web.get("/api/watch", self.watched),
            web.get("/watch/ws", self.spectate),
            web.get("/api/receipts", self.receipts),
            web.get("/api/transcript", self.transcript),
            web.get("/api/discover", self.discover),
            web.get("/api/discover/lineage", self.discover_lineage),
            web.post("/api/discover/fork", self.discover_fork),
        ]

    # -- recipes -----------------------------------------------------------------------------

    @staticmethod
    def _summary(saved: Saved) -> dict[str, Any]:
        return {
            "name": saved.recipe.name,
            "title": saved.recipe.title,
            "ref": saved.ref,
            "id": saved.id,
            "origin": saved.origin,
            "agents": [{"name": a.name, "model": a.model} for a in saved.recipe.agents],
        }

    async def recipe(self, request: web.Request) -> web.Response:
        try:
            saved = self.library.get(request.match_info["name"])
            lineage = self.library.lineage(saved.id)
        except RecipeError as exc:
            return _problems(exc)
        return web.json_response(
            {
                **self._summary(saved),
                "description": saved.recipe.description,
                "yaml": to_yaml(saved.recipe),
                "lineage": [
                    {"ref": s.ref, "id": s.id} if isinstance(s, Saved) else {"ref": s, "id": s}
                    for s in lineage
                ],
            }
        )

    async def save(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body.get("yaml"), str):
            return web.json_response({"error": 'send {"yaml": "…"}'}, status=400)
        name = request.match_info["name"]
        try:
            before = self.library.get(name)
            saved = self.library.replace(name, body["yaml"])
        except RecipeError as exc:
            return _problems(exc)
        changes = [c.render() for c in diff(before.recipe, saved.recipe)]
        return web.json_response({**self._summary(saved), "changes": changes})

    async def fork(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            saved = self.library.fork(request.match_info["name"], str(body.get("name", "")))
        except RecipeError as exc:
            return _problems(exc)
        return web.json_response(self._summary(saved))

    async def diff(self, request: web.Request) -> web.Response:
        try:
            a = self.library.get(request.query.get("a", ""))
            b = self.library.get(request.query.get("b", ""))
        except RecipeError as exc:
            return _problems(exc)
        return web.json_response(
            {"a": a.ref, "b": b.ref, "changes": [c.render() for c in diff(a.recipe, b.recipe)]}
        )

    # -- watching ------------------------------------------------------------------------------

    async def watched(self, request: web.Request) -> web.Response:
        rooms = []
        for room in sorted(self.gateway.rooms.all(), key=lambda r: r.key):
            conversation = room.conversation
            rooms.append(
                {
                    "room": room.key,
                    "platform": room.platform,
                    "recipe": conversation.saved.ref if conversation else None,
                    "session": conversation.session_id if conversation else None,
                    "running": room.running is not None,
                }
            )
        return web.json_response(rooms)

    async def spectate(self, request: web.Request) -> web.StreamResponse:
        """Read-only: what the socket sends is ignored."""
        room = request.query.get("room", "")
        if self.gateway.rooms.find(room) is None:
            return web.json_response({"error": f"no room {room!r}"}, status=404)
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024, protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        queue = self.gateway.watch.subscribe(room)
        try:
            while not ws.closed:
                line = await queue.get()
                if line is None:
                    break
                await ws.send_json(line)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.gateway.watch.unsubscribe(room, queue)
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    # -- receipts ------------------------------------------------------------------------------

    def _session_of(self, request: web.Request) -> tuple[str, str]:
        room = request.query.get("room", "")
        found = self.gateway.rooms.find(room)
        conversation = found.conversation if found is not None else None
        if conversation is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "no session in that room yet"}),
                content_type="application/json",
            )
        return conversation.session_id, conversation.saved.recipe.title

    async def receipts(self, request: web.Request) -> web.Response:
        session_id, _ = self._session_of(request)
        entries = session_entries(self.gateway.ledger, session_id)
        return web.json_response(
            {
                "session": session_id,
                "pubkey": self.gateway.ledger.keys.pubkey,
                "entries": [{"event": e.event, "text": e.text, "salt": e.salt} for e in entries],
            }
        )

    async def transcript(self, request: web.Request) -> web.Response:
        session_id, title = self._session_of(request)
        page = share_html(self.gateway.ledger, session_id, title)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Content-Disposition": f'attachment; filename="potluck-{session_id[:8]}.html"'
            },
        )

    # -- discover: recipes on the relays -------------------------------------------------------

    def _relays(self) -> list[str]:
        relays = list(self.gateway.config.relays)
        if not relays:
            raise web.HTTPConflict(
                text=json.dumps(
                    {"error": "no relays configured: list some under [receipts] relays"}
                ),
                content_type="application/json",
            )
        return relays

    async def discover(self, request: web.Request) -> web.Response:
        """Recipes found on the configured relays, by name or topic, with their links."""
        from .receipts.nip19 import npub_encode
        from .receipts.travel import FetchError, search
        from .sharing import link_of_found

        query = request.query.get("q", "").strip().lower()
        topic = request.query.get("topic", "").strip().lower() or None
        try:
            found = await search(self._relays(), name=query or None, topic=topic)
        except FetchError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        return web.json_response(
            [
                {
                    "name": f.name,
                    "title": f.title,
                    "author": npub_encode(f.author_pubkey),
                    "version": f.version_id[:7],
                    "topics": list(f.topics),
                    "link": link_of_found(f),
                }
                for f in found
            ]
        )

    async def discover_lineage(self, request: web.Request) -> web.Response:
        """A found recipe's lineage across authors, and its forks by others."""
        from .receipts.nip19 import npub_encode
        from .receipts.travel import FetchError, fetch_recipe, forks, lineage

        relays = self._relays()
        try:
            fetched = await fetch_recipe(request.query.get("link", ""), relays, public_hints=True)
            walked = await lineage(fetched, relays, public_hints=True)
            children = await forks(fetched.event.id, relays)
        except FetchError as exc:
            return web.json_response({"error": str(exc)}, status=502)

        def entry(version) -> dict[str, Any]:  # type: ignore[no-untyped-def]
            return {
                "ref": f"{version.recipe.name}@{version.version_id[:7]}",
                "title": version.recipe.title,
                "author": npub_encode(version.author_pubkey),
            }

        return web.json_response(
            {
                "lineage": [entry(v) for v in walked.versions],
                "end": walked.reason,
                "forks": [entry(v) for v in children],
            }
        )

    async def discover_fork(self, request: web.Request) -> web.Response:
        """Fork a found recipe in one click: fetched, checked, kept, forked under a name."""
        from .sharing import FetchError, describe, take

        body = await _body(request)
        try:
            taken = await take(
                self.library, str(body.get("link", "")), self._relays(), from_chat=True
            )
            saved = self.library.fork(taken.saved.id, str(body.get("name", "")))
        except FetchError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        except RecipeError as exc:
            return _problems(exc)
        return web.json_response(
            {
                **self._summary(saved),
                "from": describe(taken.saved.recipe, signer=taken.fetched.author_pubkey),
            }
        )
