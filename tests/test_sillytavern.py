"""SillyTavern character cards: V1/V2/V3 JSON and the PNGs that embed them."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from runtime.recipes import RecipeError, import_card, version_id

V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Señor Búho",
        "description": "{{char}} is a wise old owl who lives in {{user}}'s attic.",
        "personality": "patient, dry humour",
        "scenario": "Late at night.",
        "first_mes": "Hoo. You are up late, {{user}}.",
        "mes_example": "<START>\n{{user}}: hi\n{{char}}: Hoo.",
        "creator_notes": "A gentle night-time companion.",
        "system_prompt": "",
        "post_history_instructions": "",
        "tags": ["Animals", "Cozy"],
        "creator": "someone",
        "character_version": "1",
        "alternate_greetings": [],
        "extensions": {},
    },
}


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
        (png_with({"chara": b"!!!not base64 json"}), "not base64 JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x10\x00tEXt", "truncated"),
        (b"{not json", "not a JSON character card"),
        (json.dumps({"spec": "chara_card_v9"}).encode(), "unknown card spec"),
        (json.dumps([1, 2]).encode(), "JSON object"),
        (json.dumps({"spec": "chara_card_v2", "data": {"name": ""}}).encode(), "no name"),
    ],
)
def test_broken_cards_get_clear_errors(data: bytes, needle: str) -> None:
    with pytest.raises(RecipeError, match=needle):
        import_card(data, "card")
