"""Recipes over relays: publish a version, fetch one by its link, walk its lineage across
authors, find recipes for a Discover view. The library side of "recipes travel"; chat
commands and the CLI call these.

Whatever a relay sends is a stranger's input: every event is checked (size, kind, author,
id, signature, a valid recipe whose version id matches its tag: versions.check_version)
before it is returned, a relay hint in a link is used only if it is a ws(s) URL, at most
MAX_HINTS of them, and every wait is bounded. A failure says which relay said what.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runtime.recipes import Recipe
from runtime.recipes.version import SHORT

from . import filters, kinds
from .keys import KeyPair
from .nip19 import Address, EventPointer, parse_link
from .nostr import Event
from .publisher import auth_signer
from .relay import RelayClient, RelayError, fetch_info
from .versions import ParentRef, Refused, Version, check_pointer, check_version

MAX_HINTS = 4  # relay hints taken from a link
MAX_LINEAGE = 64  # steps walked back before giving up
TIMEOUT = 10.0


class FetchError(LookupError):
    """Nothing usable was found; the message says what each relay did."""


@dataclass(frozen=True)
class Fetched:
    """A recipe version fetched and checked: what it is, who signed it, where it came from
    and what it was forked from."""

    recipe: Recipe
    version_id: str
    author_pubkey: str
    event: Event
    forked_from: ParentRef | None
    relay: str

    @classmethod
    def of(cls, version: Version, relay: str) -> Fetched:
        return cls(
            version.recipe,
            version.version_id,
            version.author_pubkey,
            version.event,
            version.forked_from,
            relay,
        )


def public_hint(url: str) -> bool:
    """Whether a relay hint from a stranger's link may be asked from a chat room: a `wss`
    URL to a named or public host. A link pasted in a chat must not make the gateway
    connect to its own machine or network (`ws://127.0.0.1:…`, `wss://10.0.0.5`)."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (a malformed port raises here)
    except ValueError:
        return False
    if parts.scheme != "wss" or not host or parts.username or parts.password:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host  # a DNS name
    return address.is_global


def relays_to_ask(
    hints: Sequence[str], configured: Sequence[str], *, public_only: bool = False
) -> list[str]:
    """A link's relay hints (ws/wss URLs only, at most MAX_HINTS; with `public_only`, only
    `public_hint`s) before the configured relays, each once."""
    wanted = [h for h in hints if h.startswith(("wss://", "ws://")) and len(h) <= 255]
    if public_only:
        wanted = [h for h in wanted if public_hint(h)]
    out: list[str] = []
    for relay in [*wanted[:MAX_HINTS], *configured]:
        if relay and relay not in out:
            out.append(relay)
    return out


# -- publishing ----------------------------------------------------------------------------


@dataclass
class Published:
    """One relay's answer to a publish: what it stored, what it refused and why, or why it
    could not be reached."""

    relay: str
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.refused and self.error is None


async def publish_recipe(
    events: Sequence[Event],
    relays: Sequence[str],
    *,
    keys: KeyPair | None = None,
    attempts: int = 3,
    timeout: float = TIMEOUT,
    pause: Callable[[int], float] = lambda attempt: 0.5 * 2**attempt,
) -> dict[str, Published]:
    """Send a version event and its pointer (or any recipe events) to every relay, versions
    first. A relay that is down or asks to retry is tried again, up to `attempts` times with
    growing pauses; a refusal retrying cannot change (NIP-01 `invalid`, `blocked`…) is final.
    `keys` answers a relay's NIP-42 challenge."""
    ordered = sorted(events, key=lambda e: e.kind != kinds.RECIPE_VERSION)
    results = await asyncio.gather(
        *(_publish_one(list(ordered), relay, keys, attempts, timeout, pause) for relay in relays)
    )
    return {result.relay: result for result in results}


async def _publish_one(
    events: list[Event],
    relay: str,
    keys: KeyPair | None,
    attempts: int,
    timeout: float,
    pause: Callable[[int], float],
) -> Published:
    result = Published(relay)
    info = await fetch_info(relay, timeout)
    for event in list(events):
        if refusal := info.refuses(event):
            result.refused[event.id] = refusal
            events.remove(event)
    for attempt in range(attempts):
        result.error = None
        try:
            async with RelayClient(relay, auth_signer(keys) if keys else None, timeout) as client:
                if info.auth_required:
                    await client.authenticate()
                else:
                    await client.greet()
                for event in list(events):
                    outcome = await client.publish(event)
                    if outcome.stored:
                        result.accepted.append(event.id)
                        events.remove(event)
                    elif outcome.permanent:
                        result.refused[event.id] = outcome.message
                        events.remove(event)
                    else:
                        result.error = f"{relay} asked to retry: {outcome.message}"
        except RelayError as exc:
            result.error = str(exc)
        if not events:
            result.error = None
            break
        if attempt + 1 < attempts:
            await asyncio.sleep(pause(attempt))
    return result


# -- fetching ------------------------------------------------------------------------------


async def fetch_recipe(
    link: str, relays: Sequence[str], *, timeout: float = TIMEOUT, public_hints: bool = False
) -> Fetched:
    """The recipe version a `nevent`, `naddr`, `note` or hex id points at, from the link's
    relay hints and the configured relays, checked all the way down; FetchError says why
    not. An `naddr` names an author's latest version: only a version by that same author
    is accepted. With `public_hints`, hints that name a local or private host are ignored
    (links pasted in chat rooms)."""
    try:
        parsed = parse_link(link)
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    if parsed.event is not None:
        pointer: EventPointer = parsed.event
        if pointer.kind is not None and pointer.kind != kinds.RECIPE_VERSION:
            what = kinds.NAMES.get(pointer.kind, f"a kind {pointer.kind} event")
            raise FetchError(f"the link points at a {what}, not a recipe version")
        where = relays_to_ask(pointer.relays, relays, public_only=public_hints)
        return await fetch_version(pointer.event_id, where, author=pointer.author, timeout=timeout)
    address: Address = parsed.address  # type: ignore[assignment]
    if address.kind != kinds.RECIPE_LATEST:
        raise FetchError(
            f"the link is an address of kind {address.kind}, not a Potluck recipe "
            f"({kinds.RECIPE_LATEST})"
        )
    where = relays_to_ask(address.relays, relays, public_only=public_hints)
    latest = await fetch_pointer(address, where, timeout=timeout)
    found = await fetch_version(
        latest.version_event_id,
        relays_to_ask([latest.relay], where, public_only=public_hints),
        author=address.pubkey,
        timeout=timeout,
    )
    if found.recipe.name != address.identifier:
        raise FetchError(
            f"the latest version of {address.identifier!r} is a recipe named "
            f"{found.recipe.name!r}: refused"
        )
    return found


async def _ask(relay: str, query: dict | list[dict], timeout: float) -> tuple[list[Event], str]:
    """Events a relay sends for a query, and a note of what went wrong, if anything."""
    try:
        async with RelayClient(relay, timeout=timeout) as client:
            found = await client.collect(query, deadline=timeout)
    except RelayError as exc:
        return [], str(exc)
    note = "" if found.complete else f"{relay} did not finish answering"
    return found.events, note


async def fetch_version(
    event_id: str,
    relays: Sequence[str],
    *,
    author: str | None = None,
    timeout: float = TIMEOUT,
) -> Fetched:
    """One recipe version event by id, from the first relay that has a genuine one."""
    if not relays:
        raise FetchError("no relays to ask: configure some, or use a link with relay hints")
    said: list[str] = []
    for relay in relays:
        events, note = await _ask(relay, filters.by_id(event_id), timeout)
        if note:
            said.append(note)
        for event in events:
            try:
                return Fetched.of(check_version(event, author=author), relay)
            except Refused as exc:
                said.append(f"{relay}: {exc}")
        if not events and not note:
            said.append(f"{relay} does not have it")
    raise FetchError(f"recipe version {event_id[:12]}… not found: " + "; ".join(said))


@dataclass(frozen=True)
class Latest:
    version_event_id: str
    relay: str
    event: Event


async def fetch_pointer(address: Address, relays: Sequence[str], *, timeout: float) -> Latest:
    """The newest genuine "latest version" pointer of an author's recipe, across relays
    (one relay may hold an older one)."""
    said: list[str] = []
    best: Latest | None = None
    for relay in relays:
        events, note = await _ask(
            relay, filters.latest(address.pubkey, address.identifier), timeout
        )
        if note:
            said.append(note)
        for event in events:
            try:
                pointer = check_pointer(event, author=address.pubkey, name=address.identifier)
            except Refused as exc:
                said.append(f"{relay}: {exc}")
                continue
            newer = best is None or (event.created_at, best.event.id) > (
                best.event.created_at,
                event.id,
            )
            if newer:
                best = Latest(pointer.version_event_id, pointer.relay or relay, event)
    if best is None:
        detail = "; ".join(said) or "no relay has it"
        raise FetchError(f"no latest version of {address.identifier!r} by that author: {detail}")
    return best


async def fetch_by_version_id(
    version_id: str, relays: Sequence[str], *, author: str | None = None, timeout: float
) -> Fetched:
    """A version known only by its version id (content hash): its earliest genuine event."""
    query = filters.version_by_id(version_id)
    if author:
        query["authors"] = [author]
    said: list[str] = []
    found: list[Fetched] = []
    for relay in relays:
        events, note = await _ask(relay, query, timeout)
        if note:
            said.append(note)
        for event in events:
            try:
                found.append(Fetched.of(check_version(event, author=author), relay))
            except Refused as exc:
                said.append(f"{relay}: {exc}")
    if not found:
        raise FetchError("no relay has it" + (": " + "; ".join(said) if said else ""))
    return min(found, key=lambda f: (f.event.created_at, f.event.id))


# -- lineage -------------------------------------------------------------------------------


@dataclass
class Lineage:
    """A version and its ancestors as far as the relays know, newest first, and where the
    trail ends: "origin" (a version with no parent), "cold" (a parent no relay has), or
    "loop"/"too long" (refused)."""

    versions: list[Fetched]
    end: str
    reason: str
    cold_at: ParentRef | None = None


async def lineage(
    fetched: Fetched,
    relays: Sequence[str],
    *,
    timeout: float = TIMEOUT,
    max_steps: int = MAX_LINEAGE,
    public_hints: bool = False,
) -> Lineage:
    """Walk `forked_from` back across authors: by exact event where the fork named one,
    by version id where it did not. With `public_hints`, a relay a version names for its
    parent is asked only if it is a public `wss` host (see `public_hint`)."""
    steps = [fetched]
    seen = {fetched.event.id}
    current = fetched
    while (parent := current.forked_from) is not None:
        short = parent.version_id[:SHORT]
        if len(steps) >= max_steps:
            return Lineage(steps, "too long", f"stopped after {max_steps} versions", parent)
        try:
            if parent.event_id:
                where = relays_to_ask([parent.relay], relays, public_only=public_hints)
                found = await fetch_version(
                    parent.event_id, where, author=parent.author_pubkey, timeout=timeout
                )
            else:
                found = await fetch_by_version_id(parent.version_id, relays, timeout=timeout)
        except FetchError as exc:
            who = f" by {parent.author_pubkey[:12]}…" if parent.author_pubkey else ""
            return Lineage(steps, "cold", f"the trail goes cold at {short}{who}: {exc}", parent)
        if found.version_id != parent.version_id:
            return Lineage(
                steps,
                "cold",
                f"the trail goes cold at {short}: the event named is another version",
                parent,
            )
        if found.event.id in seen:
            return Lineage(steps, "loop", f"version {short} appears twice: refused", parent)
        seen.add(found.event.id)
        steps.append(found)
        current = found
    origin = current.version_id[:SHORT]
    return Lineage(steps, "origin", f"reached the origin: {current.recipe.name}@{origin}")


# -- discovering ---------------------------------------------------------------------------


@dataclass
class Found:
    """A recipe seen on relays: its latest version there, who signed it, where."""

    name: str
    title: str
    author_pubkey: str
    version_event_id: str
    version_id: str
    topics: tuple[str, ...]
    created_at: int
    relays: set[str] = field(default_factory=set)


async def search(
    relays: Sequence[str],
    *,
    name: str | None = None,
    topic: str | None = None,
    limit: int = 100,
    timeout: float = TIMEOUT,
) -> list[Found]:
    """Recipes on these relays by name (`d` of the pointers) or topic (`t`), newest first,
    one entry per author and name. Only genuine events count: a pointer or version whose
    signature fails is dropped."""
    if name:
        query = filters.by_name(name)
    elif topic:
        query = filters.by_topic(topic)
    else:
        query = {"kinds": [kinds.RECIPE_LATEST]}
    query["limit"] = limit
    best: dict[tuple[str, str], Found] = {}
    said: list[str] = []
    for relay in relays:
        events, note = await _ask(relay, query, timeout)
        said += [note] if note else []
        for event in events:
            found = _summary(event)
            if found is None:
                continue
            key = (found.author_pubkey, found.name)
            known = best.get(key)
            if known is None or (found.created_at, found.version_event_id) > (
                known.created_at,
                known.version_event_id,
            ):
                found.relays |= known.relays if known else set()
                best[key] = found
            known = best[key]
            known.relays.add(relay)
    _some_answered(relays, said)
    return sorted(best.values(), key=lambda f: -f.created_at)[:limit]


def _some_answered(relays: Sequence[str], said: list[str]) -> None:
    """Nothing found is an answer only if some relay answered: else FetchError says why."""
    if relays and len(said) >= len(relays):
        raise FetchError("no relay answered: " + "; ".join(said))


def _summary(event: Event) -> Found | None:
    topics = tuple(t[1] for t in event.tags if t[0] == "t" and len(t) > 1)
    try:
        if event.kind == kinds.RECIPE_LATEST:
            pointer = check_pointer(event, author=event.pubkey, name=event.tag_value("d") or "")
            return Found(
                pointer.name,
                event.tag_value("title") or "",
                event.pubkey,
                pointer.version_event_id,
                pointer.version_id,
                topics,
                event.created_at,
            )
        version = check_version(event)
    except Refused:
        return None
    return Found(
        version.recipe.name,
        version.recipe.title,
        event.pubkey,
        event.id,
        version.version_id,
        topics,
        event.created_at,
    )


async def forks(
    version_event_id: str, relays: Sequence[str], *, timeout: float = TIMEOUT
) -> list[Fetched]:
    """Versions that name this version event as their parent (forks and edits), checked."""
    out: dict[str, Fetched] = {}
    said: list[str] = []
    for relay in relays:
        events, note = await _ask(relay, filters.forks_of(version_event_id), timeout)
        said += [note] if note else []
        for event in events:
            try:
                version = check_version(event)
            except Refused:
                continue
            if version.forked_from and version.forked_from.event_id == version_event_id:
                out.setdefault(event.id, Fetched.of(version, relay))
    _some_answered(relays, said)
    return sorted(out.values(), key=lambda f: f.event.created_at)
