"""A relay that keeps talking without answering costs a bounded wait, and what it says is
kept up to a count (issue 13 follow-up, beyond the review's own tests).

Each relay here is a real WebSocket (or HTTP) server on loopback that misbehaves on purpose:
it floods notices, chatters through a NIP-42 handshake, answers OKs slowly, sends garbage by
the hundred, or trickles its NIP-11 document a byte at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from aiohttp import web

from gateway.receipts.keys import KeyPair
from gateway.receipts.nostr import sign_event
from gateway.receipts.publisher import auth_signer, publication_counts, publish_pending
from gateway.receipts.relay import (
    MAX_DROPPED,
    MAX_NOTICES,
    NOTICE_CHARS,
    RelayClient,
    RelaySilent,
    fetch_info,
    parse_info,
)

from .support import free_port

Handler = Callable[[Any, list[Any]], Awaitable[None]]


class ChattyRelay:
    """A relay whose behaviour is two coroutines: `on_connect(socket)` runs when a client
    connects (and may keep sending), `on_message(socket, message)` for each message."""

    def __init__(self, on_message: Handler | None = None, on_connect: Any = None) -> None:
        self.on_message = on_message
        self.on_connect = on_connect
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.received: list[Any] = []
        self._server: Any = None

    async def _serve(self, socket: Any) -> None:
        chatter = asyncio.create_task(self.on_connect(socket)) if self.on_connect else None
        try:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in socket:
                    message = json.loads(raw)
                    self.received.append(message)
                    if self.on_message is not None:
                        await self.on_message(socket, message)
        finally:
            if chatter is not None:
                chatter.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await chatter

    async def __aenter__(self) -> ChattyRelay:
        self._server = await websockets.serve(self._serve, "127.0.0.1", self.port, max_size=2**24)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


async def notices_every(socket: Any, pause: float, text: str = "thinking about it") -> None:
    while True:
        await socket.send(json.dumps(["NOTICE", text]))
        await asyncio.sleep(pause)


def a_note() -> Any:
    return sign_event(KeyPair.generate().secret, int(time.time()), 1, [], "hello")


# -- an outer deadline holds ---------------------------------------------------------------


async def test_an_outer_deadline_holds_while_a_relay_floods_notices():
    """A relay answering a REQ with an endless stream of notices, as fast as it can: a
    caller's own deadline (here 1 s, against the query's 60) must end the wait. With
    `asyncio.wait_for` in `_receive`, Python 3.11 swallowed the deadline's cancellation
    whenever a message was already there, which a flood makes the usual case."""

    async def flood(socket: Any, message: list[Any]) -> None:
        if message[0] == "REQ":
            while True:
                await socket.send(json.dumps(["NOTICE", "flood"]))
                await asyncio.sleep(0)

    async with ChattyRelay(flood) as relay, RelayClient(relay.url, timeout=60) as client:
        for attempt in range(5):  # the swallowed cancellation was a race: give it chances
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await client.collect({"kinds": [1]}, sub_id=f"s{attempt}", deadline=60)
            assert time.monotonic() - started < 10


# -- every relay conversation has a deadline -------------------------------------------------


async def test_greeting_a_relay_that_only_sends_notices_ends_on_time():
    """`greet` reads what a relay says on connect until an AUTH challenge: a relay sending
    a notice every 0.1 s (inside each per-message wait) and never a challenge must not keep
    it reading; `wait` is the whole greeting."""
    chatter = ChattyRelay(on_connect=lambda socket: notices_every(socket, 0.1))
    async with chatter, RelayClient(chatter.url, timeout=5) as client:
        started = time.monotonic()
        async with asyncio.timeout(10):
            await client.greet(wait=0.5)
        assert time.monotonic() - started < 5
        assert client.notices, "the relay's notices were not read at all"


async def test_authenticating_with_a_relay_that_chatters_instead_ends_on_time():
    """NIP-42 twice over: a relay that never sends its challenge but keeps sending notices,
    and one that sends a challenge but answers our AUTH with notices only. Each wait of the
    handshake is one deadline, whatever the relay says meanwhile."""
    keys = KeyPair.generate()
    silent_challenger = ChattyRelay(on_connect=lambda socket: notices_every(socket, 0.1))

    async def challenge_then_chatter(socket: Any) -> None:
        await socket.send(json.dumps(["AUTH", "challenge-1"]))
        await notices_every(socket, 0.1)

    no_ok = ChattyRelay(on_connect=challenge_then_chatter)
    async with silent_challenger, no_ok:
        async with RelayClient(silent_challenger.url, auth_signer(keys), timeout=5) as client:
            async with asyncio.timeout(15):
                assert await client.authenticate() is False
        async with RelayClient(no_ok.url, auth_signer(keys), timeout=5) as client:
            started = time.monotonic()
            async with asyncio.timeout(15):
                # no OK is the way earlier NIP-42 relays answer: taken as done, on time
                assert await client.authenticate() is True
            assert time.monotonic() - started < 10
        assert any(m[0] == "AUTH" for m in no_ok.received)


async def test_publishing_to_a_relay_that_chatters_instead_of_ok_fails_on_time():
    """One event, one deadline: a relay answering EVENT with a notice every 0.2 s (well
    inside the 1 s per-message wait) and never an OK costs the client's timeout, then
    RelaySilent, which the publisher turns into a retry with backoff."""

    async def chatter(socket: Any, message: list[Any]) -> None:
        if message[0] == "EVENT":
            await notices_every(socket, 0.2)

    async with ChattyRelay(chatter) as relay, RelayClient(relay.url, timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(RelaySilent, match="sent no OK"):
            async with asyncio.timeout(15):
                await client.publish(a_note())
        assert time.monotonic() - started < 5


async def test_a_relay_answering_slowly_is_left_at_the_conversation_s_deadline(world):
    """Every OK comes, but each takes 0.5 s: within the per-message wait, and 20 events
    would take 10 s. The conversation's deadline (`deadline=2`) ends it; what was accepted
    is recorded, the rest stays pending for the next pass, and the error says why."""
    store, ledger, session_of, _solo = world

    async def slow_ok(socket: Any, message: list[Any]) -> None:
        if message[0] == "EVENT":
            await asyncio.sleep(0.5)
            await socket.send(json.dumps(["OK", message[1]["id"], True, ""]))

    async with ChattyRelay(slow_ok) as relay:
        sid = session_of(publish=True, relays=[relay.url])
        for n in range(20):
            ledger.person(sid, "web:alice", f"message {n}")
        started = time.monotonic()
        async with asyncio.timeout(30):
            result = await publish_pending(store, ledger.keys, timeout=1.0, deadline=2.0)
        took = time.monotonic() - started
    assert took < 8, f"the pass took {took:.1f}s with a 2 s deadline"
    assert 0 < result.accepted < 22, result
    assert any("did not finish within 2s" in e for e in result.errors), result.errors
    counts = publication_counts(store)
    assert counts["ok"] == result.accepted and counts["pending"] == 22 - result.accepted


# -- what a relay says is kept up to a count ----------------------------------------------


async def test_a_relay_s_notices_are_kept_bounded_and_not_logged_at_info(caplog):
    """Two hundred notices of 100 kB each: the client keeps the latest MAX_NOTICES, each
    cut to NOTICE_CHARS, and logs none of them at INFO (a relay must not fill the logs)."""
    big = "n" * 100_000

    async def burst(socket: Any) -> None:
        for _ in range(200):
            await socket.send(json.dumps(["NOTICE", big]))
        await socket.send(json.dumps(["AUTH", "at-last"]))

    caplog.set_level(logging.INFO, logger="potluck.relay")
    chatter = ChattyRelay(on_connect=burst)
    async with chatter, RelayClient(chatter.url, timeout=5) as client:
        async with asyncio.timeout(30):
            await client.greet(wait=20)  # reads until the challenge, after the notices
        assert 0 < len(client.notices) <= MAX_NOTICES
        assert all(len(n) <= NOTICE_CHARS for n in client.notices)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "notice" in r.msg]


async def test_what_a_query_drops_is_counted_past_a_few_reasons():
    """A relay answering with 2,000 malformed events: the query keeps a few reasons and
    counts the rest, instead of a list as long as the relay cares to make it."""

    async def garbage(socket: Any, message: list[Any]) -> None:
        if message[0] == "REQ":
            for n in range(2000):
                await socket.send(json.dumps(["EVENT", message[1], {"id": n}]))
            await socket.send(json.dumps(["EOSE", message[1]]))

    async with ChattyRelay(garbage) as relay, RelayClient(relay.url, timeout=5) as client:
        found = await client.collect({"kinds": [1]})
    assert found.complete and not found.events
    assert len(found.dropped) == MAX_DROPPED + 1
    assert found.dropped[0].startswith("malformed event")
    assert found.dropped[-1] == f"and {2000 - MAX_DROPPED} more dropped"


# -- NIP-11 --------------------------------------------------------------------------------


class Nip11:
    """A relay's HTTP side that answers a NIP-11 request by `answer(response)`."""

    def __init__(self, answer: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.answer = answer
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Nip11:
        app = web.Application()
        app.router.add_get("/", self.answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_nip11_document_trickled_a_byte_at_a_time_costs_one_timeout():
    """The document's headers come at once, then one byte every half second: under the
    old per-read socket timeout of urllib, each byte restarted the clock, so a relay could
    hold the caller (and the publisher's pass) for as long as it liked."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/nostr+json"})
        response.content_length = 100_000
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(100_000):
                await response.write(b" ")
                await asyncio.sleep(0.5)
        return response

    async with Nip11(trickle) as relay:
        started = time.monotonic()
        async with asyncio.timeout(30):
            info = await fetch_info(relay.url, timeout=1.0)
        assert time.monotonic() - started < 5
    assert info.max_message_length is None and not info.auth_required


async def test_a_nip11_document_too_large_or_not_json_gives_no_limits():
    async def huge(request: web.Request) -> web.StreamResponse:
        padding = " " * (1 << 20)
        return web.Response(text='{"limitation": {"auth_required": true}}' + padding)

    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\xff\xfe{[", content_type="application/nostr+json")

    async with Nip11(huge) as big, Nip11(broken) as bad:
        assert not (await fetch_info(big.url, timeout=5)).auth_required
        assert (await fetch_info(bad.url, timeout=5)).raw == {}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([], (None, None, None, False)),
        ("relay", (None, None, None, False)),
        ({"limitation": []}, (None, None, None, False)),
        ({"limitation": {"auth_required": "false"}}, (None, None, None, False)),
        ({"limitation": {"auth_required": 1}}, (None, None, None, False)),
        (
            {"limitation": {"max_message_length": True, "max_content_length": -5}},
            (None, None, None, False),
        ),
        (
            {"limitation": {"max_message_length": 1.5e9, "max_event_tags": "9"}},
            (None,) * 3 + (False,),
        ),
        (
            {
                "limitation": {
                    "max_message_length": 4096,
                    "max_event_tags": 100,
                    "auth_required": True,
                }
            },
            (4096, None, 100, True),
        ),
    ],
)
def test_a_nip11_document_is_read_field_by_field(document: Any, expected: tuple) -> None:
    """Only a positive whole number is a limit and only JSON `true` asks for NIP-42: a
    string "false" once meant auth was required, a `true` limit meant 1 byte."""
    info = parse_info(document)
    got = (info.max_message_length, info.max_content_length, info.max_event_tags)
    assert (*got, info.auth_required) == expected
