"""A small Nostr relay client: publish events (NIP-01), authenticate (NIP-42), read limits
(NIP-11), query back with REQ. Thin async shell over `websockets`.

A relay is a stranger: every wait is bounded (per message and per query), messages are
capped in size, a query stops at a number of events, and what a relay sends is kept only if
it is well-formed and matches the filters asked (events of other kinds or authors are
dropped, with the reason). Signatures are the caller's to check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

from . import filters as nip01
from .nostr import Event, EventFormatError, parse_event

log = logging.getLogger("potluck.relay")
AUTH_KIND = 22242  # NIP-42 client authentication
MAX_MESSAGE = 1024 * 1024  # bytes of one relay message: a recipe version is at most half
MAX_EVENTS = 5000  # events one query keeps before it stops


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


async def fetch_info(url: str, timeout: float = 5.0) -> RelayInfo:
    """NIP-11 document; an unreachable or silent relay gives no limits, not an error."""

    def get() -> dict[str, Any]:
        request = urllib.request.Request(
            _http_url(url), headers={"Accept": "application/nostr+json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read(1_000_000))

    try:
        raw = await asyncio.to_thread(get)
    except (OSError, ValueError):
        return RelayInfo()
    limits = raw.get("limitation") or {}
    return RelayInfo(
        max_message_length=limits.get("max_message_length"),
        max_content_length=limits.get("max_content_length"),
        max_event_tags=limits.get("max_event_tags"),
        auth_required=bool(limits.get("auth_required")),
        raw=raw,
    )


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
    dropped: list[str] = field(default_factory=list)


class RelayClient:
    """One connection to one relay. `sign_auth` signs NIP-42 challenges when a relay asks."""

    def __init__(
        self, url: str, sign_auth: Callable[[str, str], Event] | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.sign_auth = sign_auth
        self.timeout = timeout
        self.notices: list[str] = []
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
            raw = await asyncio.wait_for(self._ws.recv(), wait)
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
            self.notices.append(str(message[1:2]))
            log.info("relay %s notice: %s", self.url, message[1:2])
        return message

    async def _send(self, message: list[Any]) -> None:
        try:
            await self._ws.send(json.dumps(message, ensure_ascii=False))
        except (websockets.WebSocketException, OSError) as exc:
            raise RelayError(f"{self.url} closed the connection: {exc}") from exc

    async def authenticate(self) -> bool:
        """Answer the relay's challenge (NIP-42). False when there is none or no signer."""
        if self.sign_auth is None:
            return False
        if self._challenge is None:
            try:
                while self._challenge is None:  # many relays send AUTH right after connect
                    await asyncio.wait_for(self._receive(), 1.0)
            except (TimeoutError, RelayError):
                return False
        auth = self.sign_auth(self.url, self._challenge)
        await self._send(["AUTH", auth.to_dict()])
        # Current NIP-42 answers AUTH with OK; earlier relays answer nothing. Wait briefly,
        # then go on: the OK of the next EVENT says whether it worked.
        self._authed = True
        try:
            while True:
                message = await asyncio.wait_for(self._receive(), 2.0)
                if message[0] == "OK" and len(message) >= 3 and message[1] == auth.id:
                    self._authed = bool(message[2])
                    break
        except TimeoutError:
            pass
        return self._authed

    async def greet(self, wait: float = 0.3) -> None:
        """Read what a relay says on connect (an AUTH challenge, notices) and answer a
        challenge at once: our events carry our key anyway, so proving it costs nothing."""
        try:
            while self._challenge is None:
                await asyncio.wait_for(self._receive(), wait)
        except (TimeoutError, RelayError):
            return
        if not self._authed:
            await self.authenticate()

    async def publish(self, event: Event) -> Outcome:
        """Send one event and wait for its OK; authenticates and resends once if asked.

        One event is in flight at a time, so an OK with an empty id (some relays send that
        when they refuse before parsing) is this event's answer.
        """
        for attempt in range(2):
            await self._send(["EVENT", event.to_dict()])
            while True:
                message = await self._receive()
                if message[0] == "OK" and len(message) >= 3 and message[1] in (event.id, ""):
                    outcome = Outcome(bool(message[2]), str(message[3]) if len(message) > 3 else "")
                    break
            needs_auth = outcome.prefix in ("auth-required", "restricted") and not self._authed
            if outcome.accepted or not needs_auth or attempt or not await self.authenticate():
                return outcome
        return outcome

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
                    found.dropped.append(f"malformed event: {exc}")
                    continue
                if not nip01.matches_any(asked, event):
                    found.dropped.append(f"event {event.id[:12]}… does not match the query")
                elif event.id not in seen:
                    seen.add(event.id)
                    found.events.append(event)
                    if len(found.events) >= max_events:
                        found.dropped.append(f"stopped at {max_events} events")
                        break
            elif message[0] == "EOSE" and message[1:2] == [sub_id]:
                found.complete = True
                break
            elif message[0] == "CLOSED" and message[1:2] == [sub_id]:
                raise RelayError(f"{self.url} refused the query: {message[2:3]}")
        with contextlib.suppress(RelayError):  # a relay that went away needs no CLOSE
            await self._send(["CLOSE", sub_id])
        return found
