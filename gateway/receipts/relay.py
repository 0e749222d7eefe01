"""A small Nostr relay client: publish events (NIP-01), authenticate (NIP-42), read limits
(NIP-11), query back with REQ. Thin async shell over `websockets`.

A relay is a stranger: every wait is bounded (per message, and as a whole per query, per
published event, per NIP-42 handshake: a relay that keeps talking without answering costs a
bounded wait too), messages are capped in size, a query stops at a number of events, what a
relay says beside its answers (notices, reasons for dropping) is kept up to a count, and what
it sends is kept only if it is well-formed and matches the filters asked (events of other
kinds or authors are dropped, with the reason). Signatures are the caller's to check.

Waits use `asyncio.timeout`, never `asyncio.wait_for`: on Python 3.11 `wait_for` can swallow
the cancellation of an outer deadline when the awaited message is already there, which a
relay flooding messages makes the usual case, so a caller's deadline would never fire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import websockets

from . import filters as nip01
from .nostr import Event, EventFormatError, parse_event

log = logging.getLogger("potluck.relay")
AUTH_KIND = 22242  # NIP-42 client authentication
MAX_MESSAGE = 1024 * 1024  # bytes of one relay message: a recipe version is at most half
MAX_EVENTS = 5000  # events one query keeps before it stops
MAX_INFO = 64 * 1024  # bytes of a NIP-11 document read; real ones are a few hundred
MAX_NOTICES = 20  # a relay's latest notices kept (each cut to NOTICE_CHARS)
NOTICE_CHARS = 200
MAX_DROPPED = 20  # reasons kept for what a query dropped; the rest are counted
AUTH_WAIT = 1.0  # seconds a relay gets to send its NIP-42 challenge when asked for one
AUTH_OK_WAIT = 2.0  # and to answer our AUTH (earlier NIP-42 relays never do)


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    message: str

    @property
    def stored(self) -> bool:
        """The relay has the event: accepted now, or refused as a duplicate (some relays,
        nostr-relay among them, answer a known event with `false, "duplicate: …"`)."""
        return self.accepted or self.prefix == "duplicate"

    @property
    def permanent(self) -> bool:
        """A refusal that retrying will not change."""
        return not self.stored and self.prefix in ("invalid", "blocked", "pow", "too-large")

    @property
    def prefix(self) -> str:
        return self.message.split(":", 1)[0].strip()


@dataclass
class RelayInfo:
    """What NIP-11 says of the relay; absent fields mean no stated limit."""

    max_message_length: int | None = None
    max_content_length: int | None = None
    max_event_tags: int | None = None
    auth_required: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    def refuses(self, event: Event) -> str | None:
        size = len(json.dumps(["EVENT", event.to_dict()], ensure_ascii=False).encode())
        if self.max_message_length and size > self.max_message_length:
            return f"too-large: {size} bytes over the relay's {self.max_message_length}"
        if self.max_content_length and len(event.content) > self.max_content_length:
            return f"too-large: content over the relay's {self.max_content_length}"
        if self.max_event_tags and len(event.tags) > self.max_event_tags:
            return f"too-large: more than {self.max_event_tags} tags"
        return None


def _http_url(url: str) -> str:
    return "http" + url.removeprefix("ws") if url.startswith("ws") else url


def _limit(limits: dict[str, Any], name: str) -> int | None:
    value = limits.get(name)
    return value if type(value) is int and value > 0 else None


def parse_info(document: Any) -> RelayInfo:
    """What a NIP-11 document says, read field by field: a document that is not an object,
    a `limitation` that is not one, or a limit that is not a positive whole number is
    ignored (no stated limit), never an error: a relay's claims are advice, and a malformed
    one must not stop publishing to it, let alone to the relays after it."""
    raw = document if isinstance(document, dict) else {}
    limits = raw.get("limitation")
    limits = limits if isinstance(limits, dict) else {}
    return RelayInfo(
        max_message_length=_limit(limits, "max_message_length"),
        max_content_length=_limit(limits, "max_content_length"),
        max_event_tags=_limit(limits, "max_event_tags"),
        auth_required=limits.get("auth_required") is True,
        raw=raw,
    )


async def fetch_info(url: str, timeout: float = 5.0) -> RelayInfo:
    """NIP-11 document; an unreachable, silent, slow or confused relay gives no limits, not
    an error. The whole request has one deadline (a relay trickling its answer a byte at a
    time cannot hold the caller) and at most MAX_INFO bytes are read."""
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession() as http,
            http.get(_http_url(url), headers={"Accept": "application/nostr+json"}) as response,
        ):
            if response.status != 200:
                return RelayInfo()
            body = bytearray()
            async for chunk in response.content.iter_chunked(16 * 1024):
                body += chunk
                if len(body) > MAX_INFO:
                    return RelayInfo()
        document = json.loads(body)
    except (TimeoutError, OSError, ValueError, RecursionError, aiohttp.ClientError):
        return RelayInfo()
    return parse_info(document)


class RelayError(ConnectionError):
    pass


class RelaySilent(RelayError):
    """The relay said nothing within the time allowed."""


@dataclass
class Collected:
    """What one query brought back: the events kept, whether the relay said it had sent all
    it stores (EOSE), and why anything else was dropped."""

    events: list[Event]
    complete: bool
    dropped: list[str] = field(default_factory=list)  # at most MAX_DROPPED reasons
    dropped_more: int = 0  # dropped beyond those, counted only

    def drop(self, reason: str) -> None:
        if len(self.dropped) < MAX_DROPPED:
            self.dropped.append(reason)
        else:
            self.dropped_more += 1


class RelayClient:
    """One connection to one relay. `sign_auth` signs NIP-42 challenges when a relay asks."""

    def __init__(
        self, url: str, sign_auth: Callable[[str, str], Event] | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.sign_auth = sign_auth
        self.timeout = timeout
        self.notices: deque[str] = deque(maxlen=MAX_NOTICES)  # the latest, each cut short
        self._ws: Any = None
        self._challenge: str | None = None
        self._authed = False

    async def __aenter__(self) -> RelayClient:
        try:
            self._ws = await websockets.connect(
                self.url, open_timeout=self.timeout, max_size=MAX_MESSAGE
            )
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise RelayError(f"cannot reach {self.url}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _receive(self, timeout: float | None = None) -> list[Any]:
        wait = self.timeout if timeout is None else timeout
        try:
            # asyncio.timeout, not wait_for: an outer deadline's cancellation goes through
            # even when a message is already waiting (see the module's docstring).
            async with asyncio.timeout(wait):
                raw = await self._ws.recv()
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise RelaySilent(f"{self.url} did not answer within {wait:.1f}s") from exc
        except (websockets.WebSocketException, OSError) as exc:
            raise RelayError(f"{self.url} closed the connection: {exc}") from exc
        try:
            message = json.loads(raw)
        except ValueError:
            return ["NOTICE", f"unparseable message: {str(raw)[:80]}"]
        if not isinstance(message, list) or not message:
            return ["NOTICE", "malformed message"]
        if message[0] == "AUTH" and len(message) > 1 and isinstance(message[1], str):
            self._challenge = message[1]
        elif message[0] == "NOTICE":
            notice = str(message[1:2])[:NOTICE_CHARS]
            self.notices.append(notice)
            log.debug("relay %s notice: %s", self.url, notice)
        return message

    async def _send(self, message: list[Any]) -> None:
        try:
            await self._ws.send(json.dumps(message, ensure_ascii=False))
        except (websockets.WebSocketException, OSError) as exc:
            raise RelayError(f"{self.url} closed the connection: {exc}") from exc

    async def authenticate(self) -> bool:
        """Answer the relay's challenge (NIP-42). False when there is none or no signer.
        Each wait is one deadline in all, whatever else the relay sends meanwhile."""
        if self.sign_auth is None:
            return False
        if self._challenge is None:
            try:
                async with asyncio.timeout(AUTH_WAIT):
                    while self._challenge is None:  # many relays send AUTH right after connect
                        await self._receive()
            except (TimeoutError, RelayError):
                return False
        auth = self.sign_auth(self.url, self._challenge)
        await self._send(["AUTH", auth.to_dict()])
        # Current NIP-42 answers AUTH with OK; earlier relays answer nothing. Wait briefly,
        # then go on: the OK of the next EVENT says whether it worked.
        self._authed = True
        with contextlib.suppress(TimeoutError, RelaySilent):
            async with asyncio.timeout(AUTH_OK_WAIT):
                while True:
                    message = await self._receive()
                    if message[0] == "OK" and len(message) >= 3 and message[1] == auth.id:
                        self._authed = bool(message[2])
                        break
        return self._authed

    async def greet(self, wait: float = 0.3) -> None:
        """Read what a relay says on connect (an AUTH challenge, notices), for `wait`
        seconds in all, and answer a challenge at once: our events carry our key anyway, so
        proving it costs nothing."""
        try:
            async with asyncio.timeout(wait):
                while self._challenge is None:
                    await self._receive()
        except (TimeoutError, RelayError):
            return
        if not self._authed:
            await self.authenticate()

    async def publish(self, event: Event) -> Outcome:
        """Send one event and wait for its OK, within the client's timeout in all (notices
        and other chatter do not extend it: RelaySilent then); authenticates and resends
        once if asked.

        One event is in flight at a time, so an OK with an empty id (some relays send that
        when they refuse before parsing) is this event's answer.
        """
        for attempt in range(2):
            await self._send(["EVENT", event.to_dict()])
            outcome = await self._await_ok(event.id)
            needs_auth = outcome.prefix in ("auth-required", "restricted") and not self._authed
            if outcome.accepted or not needs_auth or attempt or not await self.authenticate():
                return outcome
        return outcome

    async def _await_ok(self, event_id: str) -> Outcome:
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await self._receive()
                    if message[0] == "OK" and len(message) >= 3 and message[1] in (event_id, ""):
                        reason = str(message[3]) if len(message) > 3 else ""
                        return Outcome(bool(message[2]), reason)
        except TimeoutError as exc:
            raise RelaySilent(
                f"{self.url} sent no OK for event {event_id[:12]}… within {self.timeout:.1f}s"
            ) from exc

    async def query(
        self, filters: dict[str, Any] | list[dict[str, Any]], sub_id: str = "potluck"
    ) -> list[Event]:
        """Stored events matching the filter(s), up to EOSE; RelayError if it never comes."""
        found = await self.collect(filters, sub_id=sub_id)
        if not found.complete:
            raise RelayError(f"{self.url} did not finish answering the query")
        return found.events

    async def collect(
        self,
        filters: dict[str, Any] | list[dict[str, Any]],
        *,
        sub_id: str = "potluck",
        max_events: int = MAX_EVENTS,
        deadline: float | None = None,
    ) -> Collected:
        """Stored events matching any of the filters, until EOSE, `max_events` or the
        deadline (seconds; the client's timeout by default), whichever comes first. A relay
        that never sends EOSE, or sends events nobody asked for, costs a bounded wait."""
        asked = [filters] if isinstance(filters, dict) else list(filters)
        loop = asyncio.get_running_loop()
        end = loop.time() + (self.timeout if deadline is None else deadline)
        await self._send(["REQ", sub_id, *asked])
        found = Collected([], complete=False)
        seen: set[str] = set()
        while (left := end - loop.time()) > 0:
            try:
                message = await self._receive(left)
            except RelaySilent:
                break
            if message[0] == "EVENT" and len(message) >= 3 and message[1] == sub_id:
                try:
                    event = parse_event(message[2])
                except EventFormatError as exc:
                    found.drop(f"malformed event: {exc}")
                    continue
                if not nip01.matches_any(asked, event):
                    found.drop(f"event {event.id[:12]}… does not match the query")
                elif event.id not in seen:
                    seen.add(event.id)
                    found.events.append(event)
                    if len(found.events) >= max_events:
                        found.drop(f"stopped at {max_events} events")
                        break
            elif message[0] == "EOSE" and message[1:2] == [sub_id]:
                found.complete = True
                break
            elif message[0] == "CLOSED" and message[1:2] == [sub_id]:
                raise RelayError(f"{self.url} refused the query: {message[2:3]}")
        with contextlib.suppress(RelayError):  # a relay that went away needs no CLOSE
            await self._send(["CLOSE", sub_id])
        if found.dropped_more:
            found.dropped.append(f"and {found.dropped_more} more dropped")
        return found
