"""Nostr core against the specs: BIP-340 vectors, NIP-01 serialisation, NIP-19 examples."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
from aionostr.event import Event as ReferenceEvent
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.receipts import bech32, nip19
from gateway.receipts.keys import KeyPair
from gateway.receipts.nostr import (
    Signer,
    check_event,
    event_id,
    parse_event,
    schnorr_verify,
    serialize,
    sign_event,
)

from .support import SHARED_VECTORS, VECTORS

PUBKEY = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d"


def bip340_vectors() -> list[dict[str, str]]:
    with (VECTORS / "bip340-test-vectors.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("vector", bip340_vectors(), ids=lambda v: f"bip340-{v['index']}")
def test_bip340_vector(vector: dict[str, str]) -> None:
    pubkey, message = bytes.fromhex(vector["public key"]), bytes.fromhex(vector["message"])
    signature = bytes.fromhex(vector["signature"])
    expected = vector["verification result"] == "TRUE"
    assert schnorr_verify(pubkey, message, signature) is expected, vector["comment"]
    if vector["secret key"]:
        key = PrivateKey(bytes.fromhex(vector["secret key"]))
        assert key.public_key_xonly.format() == pubkey
        signed = key.sign_schnorr(message, bytes.fromhex(vector["aux_rand"]))
        assert signed == signature


def test_the_vector_file_is_the_even_y_revision() -> None:
    """The withdrawn 2019 draft (square-y) would make every signing vector fail above."""
    comments = " ".join(v["comment"] for v in bip340_vectors())
    assert "has_even_y" in comments and "has_square_y" not in comments
    assert len(bip340_vectors()) >= 15


def test_the_kept_vectors_are_the_specifications_byte_for_byte() -> None:
    """The copy in tests/data is what BIP-340 publishes: compared with the shared reference
    copy where one sits beside the checkout, and with the digest noted in its README always."""
    kept = (VECTORS / "bip340-test-vectors.csv").read_bytes()
    noted = (VECTORS / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(kept).hexdigest() in noted
    reference = SHARED_VECTORS / "bip340-test-vectors.csv"
    if not reference.exists():
        pytest.skip(f"no reference copy at {reference} (a clone on its own); the digest matched")
    assert kept == reference.read_bytes()


def test_serialisation_escapes_exactly_the_seven_nip01_characters() -> None:
    content = 'line\nquote" back\\ cr\r tab\t bs\b ff\f ctl\x01 del\x7f é 😀 \u2028'
    raw = serialize(PUBKEY, 1700000000, 1, [["t", "a\nb"]], content)
    expected = (
        '[0,"' + PUBKEY + '",1700000000,1,[["t","a\\nb"]],'
        '"line\\nquote\\" back\\\\ cr\\r tab\\t bs\\b ff\\f ctl\x01 del\x7f é 😀 \u2028"]'
    )
    assert raw == expected.encode("utf-8")
    assert "é 😀".encode() in raw  # non-ASCII is UTF-8, never \\u escapes


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=0x20)
        | st.sampled_from('\n\r\t"\\'),
        max_size=200,
    ),
    st.lists(
        st.lists(
            st.text(max_size=20).filter(lambda s: all(c >= " " for c in s)), min_size=1, max_size=3
        ),
        max_size=4,
    ),
)
def test_ids_match_an_independent_implementation(content: str, tags: list[list[str]]) -> None:
    reference = ReferenceEvent(
        pubkey=PUBKEY, created_at=1700000000, kind=1, tags=tags, content=content
    )
    assert event_id(PUBKEY, 1700000000, 1, tags, content) == reference.compute_id(
        PUBKEY, 1700000000, 1, tags, content
    )


def test_sign_verify_and_tamper() -> None:
    pair = KeyPair.generate()
    event = sign_event(pair.secret, 1700000000, 4741, [["seq", "0"]], "hello")
    assert event.pubkey == pair.pubkey and check_event(event) is None
    assert (
        event.id
        == hashlib.sha256(
            serialize(event.pubkey, 1700000000, 4741, [["seq", "0"]], "hello")
        ).hexdigest()
    )
    again = sign_event(pair.secret, 1700000000, 4741, [["seq", "0"]], "hello")
    assert again.id == event.id and again.sig != event.sig  # fresh aux randomness
    forged = parse_event({**event.to_dict(), "content": "hellO"})
    assert "id does not match" in check_event(forged)
    resigned = parse_event({**event.to_dict(), "sig": again.sig[:-2] + "00"})
    assert check_event(resigned) == "signature does not verify"
    round_trip = parse_event(json.loads(event.to_json()))
    assert round_trip == event


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"id": "x"},
        {
            "id": "A" * 64,
            "pubkey": PUBKEY,
            "created_at": 1,
            "kind": 1,
            "tags": [],
            "content": "",
            "sig": "0" * 128,
        },
        {
            "id": "a" * 64,
            "pubkey": PUBKEY,
            "created_at": "1",
            "kind": 1,
            "tags": [],
            "content": "",
            "sig": "0" * 128,
        },
        {
            "id": "a" * 64,
            "pubkey": PUBKEY,
            "created_at": 1,
            "kind": 1,
            "tags": [[1]],
            "content": "",
            "sig": "0" * 128,
        },
    ],
)
def test_malformed_events_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_event(bad)


def test_nip19_examples_from_the_spec() -> None:
    assert nip19.npub_encode(PUBKEY) == (
        "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"
    )
    npub = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
    hexkey = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
    assert nip19.npub_decode(npub) == hexkey and nip19.npub_encode(hexkey) == npub
    nsec = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
    secret = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
    assert nip19.nsec_decode(nsec) == secret and nip19.nsec_encode(secret) == nsec
    hrp, items = nip19.decode_tlv(
        "nprofile1qqsrhuxx8l9ex335q7he0f09aej04zpazpl0ne2cgukyawd24mayt8gpp4mhxue69uhhytnc9e3k7mgp"
        "z4mhxue69uhkg6nzv9ejuumpv34kytnrdaksjlyr9p"
    )
    assert hrp == "nprofile"
    assert items == [
        (0, bytes.fromhex(PUBKEY)),
        (1, b"wss://r.x.com"),
        (1, b"wss://djbas.sadkb.com"),
    ]


def test_note_and_naddr_round_trip_past_the_segwit_length_limit() -> None:
    note = nip19.note_encode("ab" * 32)
    assert note.startswith("note1") and nip19.note_decode(note) == "ab" * 32
    address = nip19.Address("code-review", PUBKEY, 34740, ("ws://127.0.0.1:7447",))
    naddr = nip19.naddr_encode(address)
    assert len(naddr) > 90 and nip19.naddr_decode(naddr) == address


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w7", "checksum"),
        ("nsec180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6", "checksum"),
        ("npub1b", "too short"),
        ("Npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6", "mixes"),
    ],
)
def test_bad_bech32_says_why(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        nip19.npub_decode(text)


def test_wrong_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="expected npub"):
        nip19.npub_decode(nip19.note_encode(PUBKEY))
    assert bech32.decode(bech32.encode("x", b"")) == ("x", b"")


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=120),
    st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=3), max_size=4),
)
def test_the_wire_form_cut_from_the_serialisation_is_the_standard_json(
    content: str, tags: list[list[str]]
) -> None:
    """Signing keeps the JSON it already wrote for the id instead of encoding again: that
    text must be exactly what the standard encoder writes, and parse back to the event."""
    pair = KeyPair.generate()
    event = sign_event(pair.secret, 1700000000, 4741, tags, content)
    standard = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert event.to_json() == standard
    assert parse_event(json.loads(event.to_json())) == event and check_event(event) is None


def test_the_cached_key_pair_signs_exactly_as_coincurve_does() -> None:
    """Same key, digest and auxiliary randomness: the same BIP-340 signature, byte for byte."""
    for vector in bip340_vectors():
        if not vector["secret key"]:
            continue
        signer = Signer(bytes.fromhex(vector["secret key"]))
        digest, aux = bytes.fromhex(vector["message"]), bytes.fromhex(vector["aux_rand"])
        assert signer.schnorr(digest, aux).hex().upper() == vector["signature"]
        assert signer.schnorr(digest, aux) == PrivateKey(signer._key.secret).sign_schnorr(
            digest, aux
        )
