"""NIP-19 bech32 entities: npub, nsec, note, and the TLV-based nevent and naddr. Pure.

TLV types as NIP-19 defines them: 0 special (the event id for nevent, the `d` identifier for
naddr), 1 relay (ASCII, repeatable), 2 author (32 bytes), 3 kind (32-bit big-endian).
Unknown TLV types are ignored, as NIP-19 asks; a known one of the wrong length is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import bech32

TLV_SPECIAL, TLV_RELAY, TLV_AUTHOR, TLV_KIND = 0, 1, 2, 3


def _encode32(hrp: str, hex_value: str) -> str:
    raw = bytes.fromhex(hex_value)
    if len(raw) != 32:
        raise ValueError(f"{hrp} needs 32 bytes, got {len(raw)}")
    return bech32.encode(hrp, raw)


def _decode32(expected: str, text: str) -> str:
    hrp, data = bech32.decode(text)
    if hrp != expected:
        raise ValueError(f"expected {expected}…, got {hrp}…")
    if len(data) != 32:
        raise ValueError(f"{hrp} must hold 32 bytes, holds {len(data)}")
    return data.hex()


def npub_encode(pubkey_hex: str) -> str:
    return _encode32("npub", pubkey_hex)


def nsec_encode(secret_hex: str) -> str:
    return _encode32("nsec", secret_hex)


def note_encode(event_id_hex: str) -> str:
    return _encode32("note", event_id_hex)


def npub_decode(text: str) -> str:
    return _decode32("npub", text)


def nsec_decode(text: str) -> str:
    return _decode32("nsec", text)


def note_decode(text: str) -> str:
    return _decode32("note", text)


@dataclass(frozen=True)
class Address:
    """An addressable event: kind, author and `d` identifier, plus relay hints."""

    identifier: str
    pubkey: str
    kind: int
    relays: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventPointer:
    """A regular event: its id, plus relay hints and, optionally, its author and kind."""

    event_id: str
    relays: tuple[str, ...] = ()
    author: str | None = None
    kind: int | None = None


def _tlv(items: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for kind, value in items:
        if len(value) > 255:
            raise ValueError("a NIP-19 TLV value is at most 255 bytes")
        out.extend((kind, len(value)))
        out.extend(value)
    return bytes(out)


def naddr_encode(address: Address) -> str:
    items = [(TLV_SPECIAL, address.identifier.encode())]
    items += [(TLV_RELAY, relay.encode("ascii")) for relay in address.relays]
    items += [(TLV_AUTHOR, bytes.fromhex(address.pubkey))]
    items += [(TLV_KIND, address.kind.to_bytes(4, "big"))]
    return bech32.encode("naddr", _tlv(items))


def nevent_encode(pointer: EventPointer) -> str:
    items = [(TLV_SPECIAL, bytes.fromhex(pointer.event_id))]
    items += [(TLV_RELAY, relay.encode("ascii")) for relay in pointer.relays]
    if pointer.author is not None:
        items.append((TLV_AUTHOR, bytes.fromhex(pointer.author)))
    if pointer.kind is not None:
        items.append((TLV_KIND, pointer.kind.to_bytes(4, "big")))
    return bech32.encode("nevent", _tlv(items))


def nevent_decode(text: str) -> EventPointer:
    hrp, items = decode_tlv(text)
    if hrp != "nevent":
        raise ValueError(f"expected nevent…, got {hrp}…")
    event_id, author, kind, relays = None, None, None, []
    for kind_byte, value in items:
        if kind_byte == TLV_SPECIAL:
            if len(value) != 32:
                raise ValueError("nevent's event id is not 32 bytes")
            event_id = value.hex()
        elif kind_byte == TLV_RELAY:
            relays.append(_ascii(value))
        elif kind_byte == TLV_AUTHOR:
            if len(value) != 32:
                raise ValueError("nevent's author is not 32 bytes")
            author = value.hex()
        elif kind_byte == TLV_KIND:
            if len(value) != 4:
                raise ValueError("nevent's kind is not 4 bytes")
            kind = int.from_bytes(value, "big")
    if event_id is None:
        raise ValueError("nevent lacks its event id")
    return EventPointer(event_id, tuple(relays), author, kind)


def _ascii(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("a relay hint is not ASCII") from None


def decode_tlv(text: str) -> tuple[str, list[tuple[int, bytes]]]:
    """Any TLV entity (nprofile, nevent, naddr): its prefix and its items in order."""
    hrp, data = bech32.decode(text)
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        kind_byte, length = data[pos], data[pos + 1]
        value = data[pos + 2 : pos + 2 + length]
        if len(value) != length:
            raise ValueError(f"{hrp} TLV runs past the end")
        items.append((kind_byte, value))
        pos += 2 + length
    return hrp, items


def naddr_decode(text: str) -> Address:
    hrp, items = decode_tlv(text)
    if hrp != "naddr":
        raise ValueError(f"expected naddr…, got {hrp}…")
    identifier, pubkey, kind, relays = None, None, None, []
    for kind_byte, value in items:
        length = len(value)
        if kind_byte == TLV_SPECIAL:
            try:
                identifier = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("naddr's identifier is not UTF-8") from None
        elif kind_byte == TLV_RELAY:
            relays.append(_ascii(value))
        elif kind_byte == TLV_AUTHOR:
            if length != 32:
                raise ValueError("naddr's author is not 32 bytes")
            pubkey = value.hex()
        elif kind_byte == TLV_KIND:
            if length != 4:
                raise ValueError("naddr's kind is not 4 bytes")
            kind = int.from_bytes(value, "big")
        # unknown TLV types are ignored, as NIP-19 asks
    if identifier is None or pubkey is None or kind is None:
        raise ValueError("naddr lacks its identifier, author or kind")
    return Address(identifier, pubkey, kind, tuple(relays))


@dataclass(frozen=True)
class Parsed:
    """What a shared link points at: an event (by id) or an address (kind, author, `d`)."""

    event: EventPointer | None = None
    address: Address | None = None


def parse_link(text: str) -> Parsed:
    """A `nevent`, `naddr`, `note` or 64-hex event id, with or without NIP-21's `nostr:`
    prefix; ValueError says what was wrong and what would do."""
    text = text.strip().removeprefix("nostr:")
    lowered = text.lower()
    if len(text) == 64 and all(c in "0123456789abcdef" for c in lowered):
        return Parsed(event=EventPointer(lowered))
    if lowered.startswith("nevent1"):
        return Parsed(event=nevent_decode(text))
    if lowered.startswith("naddr1"):
        return Parsed(address=naddr_decode(text))
    if lowered.startswith("note1"):
        return Parsed(event=EventPointer(note_decode(text)))
    raise ValueError("not a recipe link: give an nevent1…, naddr1…, note1… or a 64-hex event id")
