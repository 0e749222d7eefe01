"""SillyTavern character cards (V1, V2, V3; JSON or the PNG that embeds one) to recipes.

Cards are the format people already trade characters in. A card becomes a single-agent
recipe on the local model; the card's text becomes the persona, its first message the
agent's greeting. Pure: bytes in, Recipe out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import unicodedata
import zlib
from typing import Any

from .errors import Problem, RecipeError
from .loader import validate_data
from .schema import Recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CARD_BYTES = 16 * 1024 * 1024


def _fail(source: str, message: str, hint: str = "") -> RecipeError:
    return RecipeError([Problem(source, None, "", message, hint)])


def png_text_chunks(data: bytes, source: str = "<png>") -> dict[str, str]:
    """tEXt/zTXt/iTXt chunks of a PNG by keyword (latin-1/UTF-8 decoded)."""
    if not data.startswith(PNG_SIGNATURE):
        raise _fail(source, "not a PNG file")
    chunks: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise _fail(source, "PNG is truncated", "export the card again")
        pos += 12 + length
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\x00")
                chunks[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\x00")
                text = zlib.decompressobj().decompress(rest[1:], MAX_CARD_BYTES)
                chunks[key.decode("latin-1")] = text.decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\x00")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\x00")
                _translated, _, text = rest.partition(b"\x00")
                if compressed:
                    text = zlib.decompressobj().decompress(text, MAX_CARD_BYTES)
                chunks[key.decode("latin-1")] = text.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue
        if kind == b"IEND":
            break
    return chunks


def card_from_png(data: bytes, source: str = "<png>") -> dict[str, Any]:
    chunks = png_text_chunks(data, source)
    for key in ("ccv3", "chara"):  # V3 cards carry both; the newer one wins
        if key in chunks:
            try:
                return json.loads(base64.b64decode(chunks[key], validate=False))
            except (binascii.Error, ValueError) as exc:
                raise _fail(source, f"the PNG's {key!r} card is not base64 JSON: {exc}") from None
    raise _fail(
        source,
        "this PNG carries no character card",
        "SillyTavern cards keep the card in a 'chara' or 'ccv3' text chunk",
    )


def _slug(text: str, fallback: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-")
    return slug or fallback


def _text(card: dict[str, Any], key: str) -> str:
    value = card.get(key)
    return value.strip() if isinstance(value, str) else ""


def card_to_recipe(card: Any, source: str = "<card>", model: str = "local/smollm2-135m") -> Recipe:
    if not isinstance(card, dict):
        raise _fail(source, "a character card is a JSON object")
    spec = card.get("spec")
    if spec in ("chara_card_v2", "chara_card_v3"):
        data = card.get("data")
        if not isinstance(data, dict):
            raise _fail(source, f"{spec} card has no 'data' object")
    elif spec is None and "name" in card:
        data = card  # V1: fields at the top level
    else:
        raise _fail(
            source, f"unknown card spec {spec!r}", "expected chara_card_v2 or chara_card_v3"
        )
    name = _text(data, "name")
    if not name:
        raise _fail(source, "the card has no name")

    def fill(text: str) -> str:
        return re.sub(
            r"\{\{\s*char\s*\}\}",
            name,
            re.sub(r"\{\{\s*user\s*\}\}", "the user", text, flags=re.I),
            flags=re.I,
        )

    sections = [
        _text(data, "system_prompt") or f"You are {name}. Stay in character.",
        _text(data, "description"),
        f"Personality: {_text(data, 'personality')}" if _text(data, "personality") else "",
        f"Scenario: {_text(data, 'scenario')}" if _text(data, "scenario") else "",
        f"Example dialogue:\n{_text(data, 'mes_example')}" if _text(data, "mes_example") else "",
        _text(data, "post_history_instructions"),
    ]
    persona = fill("\n\n".join(s for s in sections if s))[:20_000]
    greeting = fill(_text(data, "first_mes"))[:20_000] or None
    slug = _slug(name, "character")
    agent_name = re.sub(r"[^a-z0-9_-]", "", slug.replace("-", "_"))[:32] or "character"
    if not agent_name[0].isalpha():
        agent_name = ("c" + agent_name)[:32]
    tags = [
        t for t in (_slug(str(t), "") for t in data.get("tags") or [] if isinstance(t, str)) if t
    ]
    creator = _text(data, "creator")
    recipe = {
        "potluck": 1,
        "name": slug,
        "title": name[:200],
        "description": fill(_text(data, "creator_notes"))[:20_000],
        "tags": [*sorted(set(tags))[:15], "character-card"],
        "author": creator[:200] or None,
        "agents": [
            {
                "name": agent_name,
                "model": model,
                "persona": persona or f"You are {name}.",
                "greeting": greeting,
            }
        ],
        "trigger": "every_message",
    }
    return validate_data({k: v for k, v in recipe.items() if v is not None}, source)


def import_card(data: bytes, source: str = "<card>") -> Recipe:
    """Bytes of a .png or .json card to a recipe."""
    if len(data) > MAX_CARD_BYTES:
        raise _fail(source, "card is larger than 16 MiB")
    if data.startswith(PNG_SIGNATURE):
        return card_to_recipe(card_from_png(data, source), source)
    try:
        card = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(source, f"not a JSON character card: {exc}") from None
    return card_to_recipe(card, source)
