"""Adversarial review (issue 13 follow-up): what a hostile Nostr relay can still do to the
gateway and to a third party reading receipts.

Each test is one attack, run against the real client code over a real WebSocket on
loopback; the relays here lie on purpose (a real relay refuses forged events). Each fails
on the code as reviewed and says, in its docstring, how bad it is and the smallest fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiohttp import web

from gateway.library import Library
from gateway.receipts import kinds
from gateway.receipts.chain import FORMAT_TAG
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.receipts.nostr import Signer
from gateway.receipts.publisher import publish_pending
from gateway.receipts.travel import fetch_version, search
from gateway.store.db import Store
from gateway.store.rooms import ensure_room, start_session, update_settings

from .lying_relay import LyingRelay
from .support import ROOT, free_port


class ScriptedRelay:
    """A relay whose answer to each client message is computed by `on_message`, which
    returns the frames to send (and may keep sending through `socket`)."""

    def __init__(self, on_message: Any) -> None:
        self.on_message = on_message
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.received: list[Any] = []
        self._server: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, socket: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in socket:
                message = json.loads(raw)
                self.received.append(message)
                await self.on_message(socket, message)

    async def __aenter__(self) -> ScriptedRelay:
        self._server = await websockets.serve(self._serve, "127.0.0.1", self.port, max_size=2**24)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


def _library(tmp_path: Path) -> tuple[Store, Library]:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    library = Library(store)
    library.sync_bundled()
    return store, library


def _genuine_version(tmp_path: Path) -> tuple[Store, dict[str, Any]]:
    store, library = _library(tmp_path)
    keys = KeyPair.generate()
    event = Ledger(store, keys).recipe_version(library.get("solo"))
    return store, event.to_dict()


# -- a relay's lone surrogate ------------------------------------------------------------


async def test_a_relay_sending_a_lone_surrogate_cannot_crash_fetching_a_version(tmp_path):
    """Severity: medium. A relay (any relay asked, including a hint in a stranger's link)
    answers `{"ids": [V]}` with a copy of V whose content holds the JSON escape `\\ud800`.
    `json.loads` turns that into a lone surrogate, and `check_version` → `check_shape` →
    `event.to_json().encode("utf-8")` raises UnicodeEncodeError, which nothing catches:
    `fetch_version` (so `fetch_recipe`, `lineage`) dies with a traceback instead of saying
    "forged copy" and asking the next relay, which holds the genuine version. The attacker
    gets: one hostile relay in the list blocks every fetch of every recipe version.
    Smallest fix: refuse events holding unpaired surrogates where events are parsed
    (`nostr.parse_event`, as safe_json already does for cards), raising EventFormatError."""
    store, genuine = _genuine_version(tmp_path)
    poisoned = {**genuine, "content": genuine["content"][:-1] + '\ud800"}'}
    async with LyingRelay([poisoned]) as liar, LyingRelay([genuine]) as honest:
        fetched = await fetch_version(genuine["id"], [liar.url, honest.url], timeout=3)
    assert fetched.event.id == genuine["id"] and fetched.relay == honest.url
    store.close()


async def test_a_relay_sending_a_lone_surrogate_cannot_crash_discover(tmp_path):
    """Severity: medium. Same poison as above, in a Discover search (`travel.search`):
    one event with a lone surrogate in its title tag makes `_summary` → `check_pointer`
    raise UnicodeEncodeError, so the whole search fails for every relay, and no recipe can
    be discovered while that relay is in the list. Smallest fix: as above (refuse the
    event at parse time, so it is dropped like any malformed event)."""
    store, genuine = _genuine_version(tmp_path)
    poisoned = {**genuine, "tags": [*genuine["tags"], ["title", "solo\ud800"]]}
    async with LyingRelay([poisoned, genuine]) as liar:
        found = await search([liar.url], topic="assistant", timeout=3)
    assert [f.version_event_id for f in found] == [genuine["id"]]
    store.close()


# -- a relay that keeps talking but never answers ----------------------------------------


async def test_a_relay_that_only_sends_notices_cannot_stall_publishing_forever(tmp_path):
    """Severity: medium. `RelayClient.publish` waits for the event's OK in a `while True`
    loop whose only deadline is per message: a relay that answers EVENT with a NOTICE every
    second (under the 10 s timeout) and never with OK keeps `publish_pending` in that loop
    forever. The periodic job runs with max_instances=1, so from then on no receipt is
    published to any relay (relays are visited one after another), and every notice is
    logged. The attacker gets: a relay an operator opted into (a public relay that turns
    hostile, or anyone on the path of a ws:// URL) silently stops all publishing.
    Smallest fix: one deadline per event in `publish` (and in `authenticate`/`greet`,
    which loop the same way), e.g. `async with asyncio.timeout(self.timeout)` around the
    wait for OK, turning it into RelaySilent so the event stays pending with backoff."""

    async def notices_forever(socket: Any, message: list[Any]) -> None:
        if message and message[0] == "EVENT":
            while True:
                await socket.send(json.dumps(["NOTICE", "thinking about it"]))
                await asyncio.sleep(0.2)

    store, library = _library(tmp_path)
    keys = KeyPair.generate()
    ledger = Ledger(store, keys)
    async with ScriptedRelay(notices_forever) as relay:
        room = ensure_room(store, "matrix", "!published:hs")
        update_settings(store, room, publish=True, relays=[relay.url])
        solo = library.get("solo")
        ledger.open(start_session(store, room, solo.id), "solo", solo.id)
        started = time.monotonic()
        try:
            async with asyncio.timeout(20):
                result = await publish_pending(store, keys, timeout=1.0)
        except TimeoutError:
            pytest.fail(
                "publish_pending was still waiting for an OK after 20 s (timeout=1 s): "
                "a relay that only sends notices holds publishing forever"
            )
        assert result.accepted == 0 and result.deferred + len(result.errors) >= 1
        assert time.monotonic() - started < 20
    store.close()


class AioRelay:
    """A relay on aiohttp: NIP-11 over plain HTTP (`info`, any JSON), NIP-01 over the
    WebSocket on the same port; every EVENT is stored and answered OK."""

    def __init__(self, info: Any) -> None:
        self.info = info
        self.stored: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response(self.info, content_type="application/nostr+json")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            frame = json.loads(message.data)
            if frame[0] == "EVENT":
                self.stored.append(frame[1]["id"])
                await socket.send_json(["OK", frame[1]["id"], True, ""])
        return socket

    async def __aenter__(self) -> AioRelay:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", free_port())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.mark.parametrize(
    "info", [[], {"limitation": "none"}, {"limitation": {"max_message_length": "big"}}]
)
async def test_a_relay_with_a_malformed_nip11_document_cannot_stop_publishing(
    tmp_path: Path, info: Any
) -> None:
    """Severity: medium. `relay.fetch_info` catches errors of the HTTP request and the JSON
    parse, then reads the document with `.get` as if it were an object: a NIP-11 answer
    that is a JSON array, a `limitation` that is not an object, or a limit that is not a
    number raises AttributeError/TypeError out of `_publish_to`, out of `publish_pending`,
    and ends the whole pass: the relays after it get nothing, every 30 s, for good. The
    attacker gets: one relay on the list (a public relay that turns hostile) stops every
    receipt and recipe from being published anywhere. Smallest fix: validate the document
    (an object; `limitation` an object; each limit an int, else ignored) and have
    `publish_pending` contain one relay's failure to that relay."""
    store, library = _library(tmp_path)
    keys = KeyPair.generate()
    ledger = Ledger(store, keys)
    async with AioRelay(info) as hostile, AioRelay({"name": "fine"}) as good:
        room = ensure_room(store, "matrix", "!published:hs")
        update_settings(store, room, publish=True, relays=[hostile.url, good.url])
        solo = library.get("solo")
        ledger.open(start_session(store, room, solo.id), "solo", solo.id)
        async with asyncio.timeout(60):
            result = await publish_pending(store, keys, timeout=3.0)
        assert good.stored, f"the good relay got nothing: {result}"
        assert result.accepted >= len(good.stored)
    store.close()


# -- a relay that pages fresh fakes forever -----------------------------------------------


async def test_a_relay_paging_fresh_fakes_cannot_keep_an_audit_running_forever(tmp_path):
    """Severity: medium. `audit._session_events` pages with `until` while a page is full
    (1000 events) and holds anything new; it never checks signatures before deciding to
    go on, and has no cap on pages or events. A relay that answers every page with 1000
    fresh unsigned events carrying the session's `E` tag and the gateway's pubkey keeps
    `fetch_session` looping forever, holding every fake in memory. The attacker gets: any
    third party (and anything built on fetch_session) asking that relay about a session
    hangs and grows without bound. Smallest fix: drop events whose id/signature do not verify
    before counting a page as fresh, and cap the pages (or the events kept) per relay."""
    signer = Signer(os.urandom(32))
    now = int(time.time())
    root = signer.sign(now, kinds.SESSION_MARK, [[FORMAT_TAG, "2"], ["seq", "0"]], "{}")
    pages = 0

    async def fresh_fakes(socket: Any, message: list[Any]) -> None:
        nonlocal pages
        if not message or message[0] != "REQ":
            return
        sub, *asked = message[1:]
        for query in asked:
            if query.get("ids") == [root.id]:
                await socket.send(json.dumps(["EVENT", sub, root.to_dict()]))
            elif "#E" in query:
                pages += 1
                until = query.get("until", now)
                for n in range(1000):
                    fake = {
                        "id": os.urandom(32).hex(),
                        "pubkey": signer.pubkey,
                        "created_at": until,
                        "kind": kinds.AGENT_TURN,
                        "tags": [[FORMAT_TAG, "2"], ["E", root.id], ["seq", str(n + 1)]],
                        "content": "{}",
                        "sig": os.urandom(64).hex(),
                    }
                    await socket.send(json.dumps(["EVENT", sub, fake]))
        await socket.send(json.dumps(["EOSE", sub]))

    async with ScriptedRelay(fresh_fakes) as relay:
        # The audit runs in a process of its own, with a memory cap: this loop serves the
        # relay, and what grows without bound must not take the test machine with it.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            AUDIT,
            relay.url,
            root.id,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(60):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(
                f"fetch_session was still paging after 60 s ({pages} pages of 1000 forged "
                "events so far): a relay can keep an audit running forever"
            )
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"the audit died after {pages} pages: {text[-800:]}"
    assert "verified: False" in text  # the forgeries are reported, not trusted
    assert pages <= 10


AUDIT = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 * 1024 * 1024,) * 2)
from gateway.receipts.audit import fetch_session
audit = asyncio.run(fetch_session(sys.argv[2], [sys.argv[1]], timeout=5))
print("verified:", audit.report.ok, "events:", len(audit.events))
"""
