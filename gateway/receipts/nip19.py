"""NIP-19 bech32 entities: npub, nsec, note, and the TLV-based naddr. Pure functions."""

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


def naddr_encode(address: Address) -> str:
    out = bytearray()

    def tlv(kind: int, value: bytes) -> None:
        if len(value) > 255:
            raise ValueError("a NIP-19 TLV value is at most 255 bytes")
        out.extend((kind, len(value)))
        out.extend(value)

    tlv(TLV_SPECIAL, address.identifier.encode())
    for relay in address.relays:
        tlv(TLV_RELAY, relay.encode("ascii"))
    tlv(TLV_AUTHOR, bytes.fromhex(address.pubkey))
    tlv(TLV_KIND, address.kind.to_bytes(4, "big"))
    return bech32.encode("naddr", bytes(out))


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
            identifier = value.decode()
        elif kind_byte == TLV_RELAY:
            relays.append(value.decode("ascii"))
        elif kind_byte == TLV_AUTHOR and length == 32:
            pubkey = value.hex()
        elif kind_byte == TLV_KIND and length == 4:
            kind = int.from_bytes(value, "big")
        # unknown TLV types are ignored, as NIP-19 asks
    if identifier is None or pubkey is None or kind is None:
        raise ValueError("naddr lacks its identifier, author or kind")
    return Address(identifier, pubkey, kind, tuple(relays))
