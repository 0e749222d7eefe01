"""The local web room: a page on the person's own machine, served from the gateway.

Closed like a notebook server: bound to 127.0.0.1 by default and protected by a per-install
token. The printed link carries the token in its fragment (`/#token=…`), which a browser
never sends to any server nor puts in a Referer; the page keeps it in the tab's
sessionStorage (scoped by origin, port included) and sends it as the `X-Potluck-Token`
header on every request, and as a `potluck-token.…` subprotocol on its WebSockets (a
browser cannot set their headers). Never in a cookie: cookies are scoped by host, not port,
so every other server on 127.0.0.1 would receive it. A page on another site can set neither,
and state-changing requests and WebSockets must also come from this origin. The page and its
scripts are the same bytes for everyone, with no secret in them, so they open without the
token; everything but them and the probes needs it. Text reaches the browser as JSON and is
shown with textContent, never as HTML.

A web room keeps no history of its own: what a room shows is the gateway's watch hub for
it (the same lines spectators of any room see, bounded there), and sending a message here
only names it; the hub carries it to the page. The page's 👍/👎 buttons under an agent's
message send `{"react": message id, "emoji": "👍", "removed": false}` on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .base import Capabilities, Incoming, OnCursor, OnIncoming, Outgoing, Reaction

PAGE = Path(__file__).with_name("web_page.html")
STATIC = Path(__file__).with_name("web_static")
SCRIPTS = ("noble-secp256k1.js", "receipts.js")  # the only files /static/ serves
# The page and its scripts, by route: served to anyone, since they hold no secret (a
# browser loading a page or a module script sends no custom header).
SHELL = frozenset({"/", "/room/{room}", "/static/{name}"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "X-Potluck-Token"
SUBPROTOCOL = "potluck"  # what the server answers; the token rides in a second one
TOKEN_PROTOCOL = "potluck-token."
LEGACY_COOKIE = "potluck_token"  # where earlier versions kept the token; deleted on sight


class Hub(Protocol):
    """The gateway's watch hub (gateway/watch.py), as this adapter uses it."""

    def rooms(self) -> list[str]: ...

    def subscribe(self, room: str) -> Any: ...

    def unsubscribe(self, room: str, queue: Any) -> None: ...


def load_token(path: Path) -> str:
    """The install's web token, created on first use in a 0600 file."""
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from byte one
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def _route(request: web.Request) -> str | None:
    """The pattern of the route a request matched (`/room/{room}`), None if it matched none."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def _subprotocols(request: web.Request) -> list[str]:
    """The subprotocols a WebSocket offers, read as aiohttp reads them (the first header)."""
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]


def _is_token(protocol: str) -> bool:
    return protocol.startswith(TOKEN_PROTOCOL)


class WebAdapter:
    name = "web"
    capabilities = Capabilities(
        edit_interval_s=0.1, max_chars=100_000, buttons=True, receipt_badge=True, local_owner=True
    )

    def __init__(
        self,
        token: str,
        hub: Hub,
        host: str = "127.0.0.1",
        port: int = 8737,
        recipes: Callable[[], list[dict[str, Any]]] = list,
        probes: dict[str, Callable[[], tuple[str, str]]] | None = None,
        routes: list[web.RouteDef] | None = None,
    ) -> None:
        self.token = token
        self.hub = hub
        self.host = host
        self.port = port
        self.recipes = recipes
        # Open endpoints for monitors (`/health`, `/metrics`): path -> () -> (body, type).
        self.probes = probes or {}
        # The gateway's own pages (gallery, watch, receipts), behind the same guard.
        self.routes = routes or []
        self.user = "you"
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._on_incoming: OnIncoming | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/#token={self.token}"

    # -- security --------------------------------------------------------------------------

    def _token_ok(self, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(str(offered).encode(), self.token.encode())

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin in (f"http://{self.host}:{self.port}", f"http://localhost:{self.port}")

    def _host_ok(self, host: str) -> bool:
        """On loopback, only loopback names (any port: a container's port may be mapped);
        bound wider by the owner's choice, any name (the token still guards everything)."""
        if self.host not in LOOPBACK_NAMES and not self.host.startswith("127."):
            return True
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0]
        name = (name or host).lower()
        return name in LOOPBACK_NAMES or name == self.host or name.startswith("127.")

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._host_ok(request.headers.get("Host", "")):
            # DNS rebinding: a page on the attacker's name, re-pointed at 127.0.0.1, would be
            # same-origin with itself and read what answers without the token (the probes).
            return web.json_response({"error": "this server answers only to its own name"}, 421)
        if request.method in ("GET", "HEAD") and (
            request.path in self.probes  # read-only counters for a local monitor
            or _route(request) in SHELL  # the page and its scripts: no secret in them
        ):
            return await handler(request)
        websocket = _is_websocket(request)
        offered = request.headers.get(TOKEN_HEADER)
        if websocket and offered is None:
            protocols = _subprotocols(request)
            tokens = [p.removeprefix(TOKEN_PROTOCOL) for p in protocols if _is_token(p)]
            if tokens and SUBPROTOCOL not in protocols:
                return web.json_response(
                    {"error": f"offer the {SUBPROTOCOL!r} subprotocol first, then the token"},
                    status=400,
                )
            offered = tokens[0] if tokens else None
        if not self._token_ok(offered):
            return web.json_response(
                {
                    "error": f"missing or wrong token: send it in the {TOKEN_HEADER} header "
                    "(the page does, once opened from the link `potluck serve` printed)"
                },
                status=403,
            )
        # A browser sends Origin on both; a page elsewhere that somehow has the token still
        # cannot change anything or join a room from its own origin.
        if (websocket or request.method not in ("GET", "HEAD")) and not self._origin_ok(request):
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        return await handler(request)

    # -- routes ----------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(
            text=PAGE.read_text(encoding="utf-8"),
            content_type="text/html",
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )
        if LEGACY_COOKIE in request.cookies:  # an earlier version's: it goes to every port
            response.del_cookie(LEGACY_COOKIE)
        return response

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in SCRIPTS:
            raise web.HTTPNotFound()
        return web.Response(
            text=(STATIC / name).read_text(encoding="utf-8"),
            content_type="text/javascript",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    @staticmethod
    def _probe(probe: Callable[[], tuple[str, str]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body, content_type = probe()
            return web.Response(text=body, content_type=content_type)

        return handler

    async def _recipes(self, request: web.Request) -> web.Response:
        return web.json_response(self.recipes())

    async def _rooms(self, request: web.Request) -> web.Response:
        return web.json_response(
            sorted(key.removeprefix("web:") for key in self.hub.rooms() if key.startswith("web:"))
        )

    async def _create_room(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            recipe = str(body["recipe"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'send {"recipe": NAME}'}, status=400)
        room = uuid.uuid4().hex[:10]
        await self._say(room, f"/recipe use {recipe}")
        return web.json_response({"room": room})

    async def _say(self, room: str, text: str) -> None:
        assert self._on_incoming is not None
        await self._on_incoming(
            Incoming("web", room, self.user, self.user, text, uuid.uuid4().hex, mentions_bot=True)
        )

    async def _react(self, room: str, said: dict[str, Any]) -> None:
        """A press of 👍/👎 under a message (or a second press, taking it back)."""
        target, emoji = said["react"], said.get("emoji")
        if not isinstance(target, str) or not isinstance(emoji, str) or len(target) > 64:
            raise ValueError("a reaction names a message id and an emoji")
        assert self._on_incoming is not None
        await self._on_incoming(
            Reaction(
                "web",
                room,
                self.user,
                self.user,
                target,
                emoji[:16],
                uuid.uuid4().hex,
                added=not said.get("removed"),
            )
        )

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        # Origin already checked by _guard, for this socket and the watch socket alike.
        room = request.match_info["room"]
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024, protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        self._sockets.add(ws)
        lines = self.hub.subscribe(f"web:{room}")  # the room's recent lines, then live ones
        forward = asyncio.create_task(self._forward(lines, ws))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    said = json.loads(message.data)
                    if isinstance(said, dict) and "react" in said:
                        await self._react(room, said)
                        continue
                    text = str(said["text"])[:20_000]
                except (ValueError, KeyError, TypeError):
                    await ws.send_json(
                        {
                            "type": "error",
                            "text": 'send {"text": "…"} or {"react": ID, "emoji": "👍"}',
                        }
                    )
                    continue
                if text.strip():
                    await self._say(room, text)
        finally:
            forward.cancel()
            self.hub.unsubscribe(f"web:{room}", lines)
            self._sockets.discard(ws)
        return ws

    @staticmethod
    async def _forward(lines: Any, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while (line := await lines.get()) is not None:
                await ws.send_json(line)
        with contextlib.suppress(Exception):  # fell too far behind: the page reconnects
            await ws.close()

    # -- the adapter contract --------------------------------------------------------------

    async def connect(self) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=256 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/room/{room}", self._page)
        app.router.add_get("/api/recipes", self._recipes)
        app.router.add_get("/api/rooms", self._rooms)
        app.router.add_post("/api/rooms", self._create_room)
        app.router.add_get("/ws/{room}", self._socket)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_routes(self.routes)
        for path, probe in self.probes.items():
            app.router.add_get(path, self._probe(probe))
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        self._on_incoming = on_incoming

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def send(self, message: Outgoing) -> str:
        """The message's id; the watch hub shows it (and its edits) in the page."""
        return uuid.uuid4().hex

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        """Shown through the watch hub, like the message itself."""

    async def is_admin(self, room: str, user: str) -> bool:
        return True  # the person at this machine owns the gateway
