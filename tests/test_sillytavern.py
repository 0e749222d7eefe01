"""SillyTavern character cards: V1/V2/V3 JSON and the PNGs that embed them."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest

from runtime.recipes import RecipeError, import_card, version_id

from .capped import run_capped
from .support import V2


def png_with(chunks: dict[str, bytes]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00\x00\x00")
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for key, value in chunks.items():
        out += chunk(b"tEXt", key.encode() + b"\x00" + value)
    return out + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_v2_json_card_becomes_a_single_agent_recipe() -> None:
    recipe = import_card(json.dumps(V2).encode(), "owl.json")
    assert recipe.name == "senor-buho" and recipe.title == "Señor Búho"
    (agent,) = recipe.agents
    assert agent.model.startswith("local/")
    assert "Señor Búho is a wise old owl who lives in the user's attic." in agent.persona
    assert "Personality: patient" in agent.persona and "Scenario: Late at night." in agent.persona
    assert agent.greeting == "Hoo. You are up late, the user."
    assert "character-card" in recipe.tags and "animals" in recipe.tags


def test_png_card_prefers_v3_and_matches_the_json_import() -> None:
    v3 = dict(V2, spec="chara_card_v3", spec_version="3.0")
    v3 = {**v3, "data": {**V2["data"], "name": "Owl Three"}}
    png = png_with(
        {
            "chara": base64.b64encode(json.dumps(V2).encode()),
            "ccv3": base64.b64encode(json.dumps(v3).encode()),
        }
    )
    assert import_card(png, "owl.png").title == "Owl Three"
    png_v2 = png_with({"chara": base64.b64encode(json.dumps(V2).encode())})
    assert version_id(import_card(png_v2)) == version_id(import_card(json.dumps(V2).encode()))


def test_v1_card() -> None:
    recipe = import_card(json.dumps({"name": "Rex", "description": "A dog."}).encode())
    assert recipe.agents[0].name == "rex" and "A dog." in recipe.agents[0].persona


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x89PNG\r\n\x1a\n", "carries no character card"),
        (png_with({"Comment": b"hello"}), "carries no character card"),
        (png_with({"chara": b"!!!not base64 json"}), "not base64"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x10\x00tEXt", "truncated"),
        (b"{not json", "the JSON card is not valid JSON"),
        (json.dumps({"spec": "chara_card_v9"}).encode(), "unknown card spec"),
        (json.dumps([1, 2]).encode(), "JSON object"),
        (json.dumps({"spec": "chara_card_v2", "data": {"name": ""}}).encode(), "no name"),
    ],
)
def test_broken_cards_get_clear_errors(data: bytes, needle: str) -> None:
    with pytest.raises(RecipeError, match=needle):
        import_card(data, "card")


# -- hostile cards ---------------------------------------------------------------------------

INFLATES_16_MIB = zlib.compress(b"\x00" * (16 * 1024 * 1024 - 1), 9)  # ~16 KiB on disk
CARD_B64 = base64.b64encode(json.dumps(V2).encode())


def deflated(byte: bytes, size: int) -> bytes:
    """`size` copies of `byte`, deflated without ever holding them all."""
    packer = zlib.compressobj(9)
    block = byte * (1024 * 1024)
    out = b"".join(packer.compress(block) for _ in range(size // len(block)))
    return out + packer.compress(byte * (size % len(block))) + packer.flush()


def png_of(*chunks: tuple[bytes, bytes]) -> bytes:
    """A 1x1 PNG carrying these (kind, body) chunks before its image data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, body in chunks:
        out += chunk(kind, body)
    return out + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b"")


def ztxt(key: bytes, deflated: bytes) -> tuple[bytes, bytes]:
    return b"zTXt", key + b"\x00\x00" + deflated


def itxt(key: bytes, deflated: bytes) -> tuple[bytes, bytes]:
    return b"iTXt", key + b"\x00\x01\x00" + b"\x00" + b"\x00" + deflated


def text(key: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b"tEXt", key + b"\x00" + value


@pytest.mark.parametrize(
    ("chunks", "status", "needle"),
    [
        pytest.param(  # 250 x 16 MiB: 4 GB from a 4 MB file before the fix
            [ztxt(b"x%d" % i, INFLATES_16_MIB) for i in range(250)] + [text(b"chara", CARD_B64)],
            0,
            "imported senor-buho",
            id="many-zTXt-each-under-the-cap",
        ),
        pytest.param(
            [itxt(b"x%d" % i, INFLATES_16_MIB) for i in range(250)] + [text(b"chara", CARD_B64)],
            0,
            "imported senor-buho",
            id="many-iTXt-each-under-the-cap",
        ),
        pytest.param(  # the card chunk itself inflating to 1 GiB
            [ztxt(b"chara", deflated(b"A", 1024 * 1024 * 1024))],
            2,
            "'chara' text inflates to more than",
            id="one-card-chunk-inflating-to-1-GiB",
        ),
        pytest.param(
            [ztxt(b"chara", INFLATES_16_MIB), ztxt(b"ccv3", INFLATES_16_MIB)],
            2,
            "inflates to more than",
            id="both-card-chunks-at-the-old-cap",
        ),
    ],
)
def test_a_png_bomb_ends_with_a_clear_error_under_a_memory_cap(
    tmp_path: Path, chunks: list[tuple[bytes, bytes]], status: int, needle: str
) -> None:
    card = tmp_path / "bomb.png"
    card.write_bytes(png_of(*chunks))
    done = run_capped(tmp_path, "recipe", "import", str(card), limit_mib=512)
    assert "Traceback" not in done.output and "MemoryError" not in done.output, done.output
    assert done.returncode == status, done.output
    assert needle in done.output
    assert done.peak_rss < 200 * 1024 * 1024, f"peak RSS {done.peak_rss >> 20} MiB"
    print(f"{card.stat().st_size >> 10} KiB PNG: peak RSS {done.peak_rss >> 20} MiB")


def test_a_name_repeated_by_its_placeholder_cannot_inflate_the_persona(tmp_path: Path) -> None:
    """{{char}} is replaced by the name: a 1 MiB name times 100k placeholders was 100 GB."""
    card = tmp_path / "fill.json"
    card.write_text(json.dumps({"name": "N" * (1024 * 1024), "description": "{{char}}" * 100_000}))
    done = run_capped(tmp_path, "recipe", "import", str(card), limit_mib=512)
    assert "Traceback" not in done.output, done.output
    assert done.returncode == 0, done.output
    assert done.peak_rss < 200 * 1024 * 1024, f"peak RSS {done.peak_rss >> 20} MiB"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 24 levels"),
        (b'{"name": "a", "x": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001, "nested deeper"),
        (png_with({"chara": base64.b64encode(b"[" * 100_000 + b"]" * 100_000)}), "nested deeper"),
        (b"[" * 100_000, "nested deeper"),  # deep and unclosed: still refused before parsing
        (b'{"name": "a", "name": "b"}', "'name' appears twice"),
        (b'{"spec": "chara_card_v2", "data": {"name": "a", "name": "b"}}', "'name' appears twice"),
        (b'{"name": "a", "x": NaN}', "NaN"),
        (b'{"name": "a", "x": -Infinity}', "Infinity"),
        (b'{"name": "a", "x": 1e999}', "too large"),
        (b'{"name": "a", "x": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"name": "a\\ud800"}', "unpaired surrogate"),
        (b'{"name": "a", "description": "x\\udfff"}', "unpaired surrogate"),
        (b'{"name": "a", "x": [' + b"[]," * 300_000 + b"[]]}", "more than"),
        (b'{"name": "' + b"a" * (5 * 1024 * 1024) + b'"}', "larger than 4 MiB"),
        ("\ufeff".encode("utf-16-le") + b"{}", "UTF-16"),
    ],
    ids=[
        "deep-arrays",
        "deep-objects",
        "deep-in-png",
        "deep-unclosed",
        "duplicate-key",
        "duplicate-nested-key",
        "nan",
        "infinity",
        "huge-float",
        "huge-int",
        "lone-surrogate-name",
        "lone-surrogate-text",
        "many-containers",
        "huge-json",
        "utf-16",
    ],
)
def test_hostile_json_gets_a_clear_error_not_a_crash(data: bytes, needle: str) -> None:
    with pytest.raises(RecipeError, match=needle) as raised:
        import_card(data, "evil.json")
    assert str(raised.value).startswith("evil.json")  # names the file


@pytest.mark.parametrize(
    ("chunks", "needle"),
    [
        ([text(b"chara", CARD_B64), text(b"chara", base64.b64encode(b'{"name": "x"}'))], "twice"),
        ([text(b"chara", CARD_B64), text(b"Chara", base64.b64encode(b'{"name": "x"}'))], "twice"),
        ([text(b"c%d" % i, b"") for i in range(2000)] + [text(b"chara", CARD_B64)], "text chunks"),
        ([(b"zTXt", b"chara\x00\x07" + zlib.compress(CARD_B64))], "compression method"),
        ([text(b"chara", b"e30=" + b"\x00" * 10)], "not base64"),
    ],
    ids=["two-cards", "case-variant-card", "too-many-text-chunks", "unknown-method", "junk-b64"],
)
def test_ambiguous_or_excessive_pngs_are_refused(
    chunks: list[tuple[bytes, bytes]], needle: str
) -> None:
    with pytest.raises(RecipeError, match=needle):
        import_card(png_of(*chunks), "evil.png")


def test_fields_of_the_wrong_type_are_ignored_not_a_crash() -> None:
    recipe = import_card(json.dumps({"name": "Rex", "tags": 5, "creator": ["x"]}).encode())
    assert recipe.tags == ["character-card"] and recipe.author is None
    recipe = import_card(json.dumps({"name": "Rex", "tags": "Cozy"}).encode())
    assert recipe.tags == ["character-card"]  # a string is not a list of tags
