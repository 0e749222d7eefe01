"""NIP-01 events: canonical serialisation, ids, BIP-340 signatures. Pure, no I/O.

Signing is coincurve's libsecp256k1 (the same library Bitcoin Core uses) with fresh
auxiliary randomness per signature, as BIP-340 recommends against fault attacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi as _ffi  # coincurve's own binding of libsecp256k1
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX128 = re.compile(r"^[0-9a-f]{128}$")
# A UTF-16 surrogate in a Python string is always unpaired (JSON's `\ud83d\ude00` pair
# decodes to one character): no UTF-8 encoder writes it, so such an event has no id at all.
SURROGATE = re.compile("[\ud800-\udfff]")

# NIP-01: exactly these seven are escaped; every other character is written verbatim.
_ESCAPES = {
    "\n": "\\n",
    '"': '\\"',
    "\\": "\\\\",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_ESCAPE_RE = re.compile('[\n"\\\\\r\t\b\f]')


def _string(value: str) -> str:
    return '"' + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], value) + '"'


# Control characters NIP-01 writes verbatim but JSON encoders escape as \u00XX.
_OTHER_CONTROL = re.compile("[\x00-\x07\x0b\x0e-\x1f]")


def _plain(
    pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str
) -> str | None:
    """The serialisation as JSON text when json.dumps writes exactly what NIP-01 asks (no
    control characters beyond the seven it escapes); None when it does not."""
    text = json.dumps(
        [0, pubkey, created_at, kind, tags, content], separators=(",", ":"), ensure_ascii=False
    )
    if "\\u00" in text:  # a \u00XX escape, or text that merely looks like one: check exactly
        strings = [content, *(v for tag in tags for v in tag)]
        if any(_OTHER_CONTROL.search(v) for v in strings):
            return None
    return text


def serialize(
    pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str
) -> bytes:
    """The byte string whose SHA-256 is the event id, per NIP-01's serialisation rules."""
    text = _plain(pubkey, created_at, kind, tags, content)
    if text is not None:
        return text.encode("utf-8")
    tag_text = ",".join("[" + ",".join(_string(v) for v in tag) + "]" for tag in tags)
    text = f"[0,{_string(pubkey)},{created_at},{kind},[{tag_text}],{_string(content)}]"
    return text.encode("utf-8")


@dataclass(frozen=True)
class Event:
    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str
    # The wire JSON when the signer already wrote it (to_json's text, computed once).
    wire: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(t) for t in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def to_json(self) -> str:
        """Wire form: standard JSON, one line; any parser reads back the same strings."""
        if self.wire is not None:
            return self.wire
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def tag(self, name: str) -> tuple[str, ...] | None:
        return next((t for t in self.tags if t and t[0] == name), None)

    def tag_value(self, name: str) -> str | None:
        found = self.tag(name)
        return found[1] if found and len(found) > 1 else None


def event_id(pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str) -> str:
    return hashlib.sha256(serialize(pubkey, created_at, kind, tags, content)).hexdigest()


class Signer:
    """A secret key held with its derived key pair and public key, so each signature costs
    one signing and one verification (coincurve's `sign_schnorr` derives both again on
    every call: two of its five curve operations)."""

    def __init__(self, secret: bytes) -> None:
        self._key = PrivateKey(secret)
        xonly = self._key.public_key_xonly
        self.pubkey = xonly.format().hex()
        self._xonly = xonly.public_key
        self._keypair = _ffi.new("secp256k1_keypair *")
        if not _lib.secp256k1_keypair_create(GLOBAL_CONTEXT.ctx, self._keypair, secret):
            raise ValueError("the secret key is invalid")

    def schnorr(self, digest: bytes, aux: bytes) -> bytes:
        """BIP-340 signature of a 32-byte digest with fresh auxiliary randomness, checked
        before it is released (as coincurve does, and BIP-340 advises against faults)."""
        signature = _ffi.new("unsigned char[64]")
        ctx = GLOBAL_CONTEXT.ctx
        if not _lib.secp256k1_schnorrsig_sign32(ctx, signature, digest, self._keypair, aux):
            raise ValueError("signing failed")
        if not _lib.secp256k1_schnorrsig_verify(ctx, signature, digest, 32, self._xonly):
            raise ValueError("the signature failed its own check")
        return bytes(_ffi.buffer(signature))

    def sign(
        self,
        created_at: int,
        kind: int,
        tags: list[list[str]],
        content: str,
        aux: bytes | None = None,
    ) -> Event:
        text = _plain(self.pubkey, created_at, kind, tags, content)
        if text is None:
            raw = serialize(self.pubkey, created_at, kind, tags, content)
        else:
            raw = text.encode("utf-8")
        digest = hashlib.sha256(raw).digest()
        eid = digest.hex()
        sig = self.schnorr(digest, os.urandom(32) if aux is None else aux).hex()
        wire = None
        if text is not None:
            # The serialisation already holds the tags' and content's JSON (the same text
            # to_json would write): the wire form is cut from it, not encoded again.
            # The tags' JSON ends at the first `],"`: inside a tag or the content a quote is
            # always escaped, so only the end of the tag list has a bare quote after `],`.
            head = len(f'[0,"{self.pubkey}",{created_at},{kind},')
            end = text.index('],"', head - 1) + 1
            tags_json, content_json = text[head:end], text[end + 1 : -1]
            wire = (
                f'{{"id":"{eid}","pubkey":"{self.pubkey}","created_at":{created_at},'
                f'"kind":{kind},"tags":{tags_json},"content":{content_json},"sig":"{sig}"}}'
            )
        return Event(
            eid, self.pubkey, created_at, kind, tuple(tuple(t) for t in tags), content, sig, wire
        )


def sign_event(
    secret: bytes,
    created_at: int,
    kind: int,
    tags: list[list[str]],
    content: str,
    aux: bytes | None = None,
) -> Event:
    return Signer(secret).sign(created_at, kind, tags, content, aux)


def schnorr_verify(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """BIP-340 verification; an invalid key or malformed signature is simply False."""
    try:
        return PublicKeyXOnly(pubkey).verify(signature, message)
    except (ValueError, TypeError):
        return False


class EventFormatError(ValueError):
    pass


def parse_event(data: Any) -> Event:
    """A dict from JSON to an Event, with the shape NIP-01 requires, or EventFormatError."""
    if not isinstance(data, dict):
        raise EventFormatError("an event is a JSON object")
    missing = {"id", "pubkey", "created_at", "kind", "tags", "content", "sig"} - set(data)
    if missing:
        raise EventFormatError(f"event lacks {', '.join(sorted(missing))}")
    if not (isinstance(data["id"], str) and HEX64.match(data["id"])):
        raise EventFormatError("id is not 64 lowercase hex characters")
    if not (isinstance(data["pubkey"], str) and HEX64.match(data["pubkey"])):
        raise EventFormatError("pubkey is not 64 lowercase hex characters")
    if not (isinstance(data["sig"], str) and HEX128.match(data["sig"])):
        raise EventFormatError("sig is not 128 lowercase hex characters")
    if type(data["created_at"]) is not int or type(data["kind"]) is not int:
        raise EventFormatError("created_at and kind must be integers")
    if not 0 <= data["kind"] <= 65535:
        raise EventFormatError("kind is outside 0–65535")
    tags = data["tags"]
    if not (
        isinstance(tags, list)
        and all(isinstance(t, list) and all(isinstance(v, str) for v in t) for t in tags)
    ):
        raise EventFormatError("tags must be a list of lists of strings")
    if not isinstance(data["content"], str):
        raise EventFormatError("content must be a string")
    _refuse_surrogates(data["content"], "content")
    for number, tag in enumerate(tags):
        for value in tag:
            _refuse_surrogates(value, f"tag #{number}")
    return Event(
        data["id"],
        data["pubkey"],
        data["created_at"],
        data["kind"],
        tuple(tuple(t) for t in tags),
        data["content"],
        data["sig"],
    )


def _refuse_surrogates(value: str, where: str) -> None:
    """Half of a UTF-16 pair (JSON `\\ud800` with no partner) is not text: such an event
    cannot be serialised to compute its id, so it is malformed, not merely forged."""
    if value.isascii():  # O(1) in CPython: most strings of most events
        return
    found = SURROGATE.search(value)
    if found is not None:
        raise EventFormatError(
            f"{where} holds an unpaired surrogate (\\u{ord(found.group()):04x} at character "
            f"{found.start()}), which is not text; a correct Nostr client writes characters, "
            "not half of a UTF-16 pair"
        )


def check_event(event: Event) -> str | None:
    """None if the id matches the content and the signature verifies; else what is wrong."""
    expected = event_id(
        event.pubkey, event.created_at, event.kind, [list(t) for t in event.tags], event.content
    )
    if expected != event.id:
        return f"id does not match the event's content (expected {expected[:12]}…)"
    if not schnorr_verify(
        bytes.fromhex(event.pubkey), bytes.fromhex(event.id), bytes.fromhex(event.sig)
    ):
        return "signature does not verify"
    return None
