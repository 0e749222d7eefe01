"""SillyTavern character cards (V1, V2, V3; JSON or the PNG that embeds one) to recipes.

Cards are the format people already trade characters in. A card becomes a single-agent
recipe on the local model; the card's text becomes the persona, its first message the
agent's greeting. Pure: bytes in, Recipe out.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import unicodedata
import zlib
from typing import Any

from .errors import Problem, RecipeError
from .loader import validate_data
from .safe_json import parse_json
from .schema import MAX_TEXT, Recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CARD_BYTES = 16 * 1024 * 1024  # the whole file: a PNG card is mostly its picture
MAX_CARD_JSON = 4 * 1024 * 1024  # the card itself; a big one, lorebook included, is ~1 MiB
MAX_CARD_TEXT = 6 * 1024 * 1024  # its base64 in a PNG chunk (4/3 of the JSON)
MAX_CHUNKS = 100_000
MAX_TEXT_CHUNKS = 1024
CARD_KEYWORDS = ("ccv3", "chara")  # V3 cards carry both; the newer one wins
MAX_TAGS = 64


def _fail(source: str, message: str, hint: str = "") -> RecipeError:
    return RecipeError([Problem(source, None, "", message, hint)])


def _inflate(compressed: bytes, source: str, key: str) -> bytes:
    """Deflated text, inflated to at most MAX_CARD_TEXT bytes: beyond that it is an error,
    and no more than that is ever allocated."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, MAX_CARD_TEXT + 1)
    except zlib.error as exc:
        raise _fail(
            source, f"the PNG's {key!r} text is damaged: {exc}", "export it again"
        ) from None
    if len(text) > MAX_CARD_TEXT or inflater.unconsumed_tail:
        raise _fail(
            source,
            f"the PNG's {key!r} text inflates to more than {MAX_CARD_TEXT >> 20} MiB",
            "no card is that large; the file was made to exhaust memory",
        )
    if not inflater.eof:
        raise _fail(source, f"the PNG's {key!r} text is cut short", "export it again")
    return text


def _card_text(kind: bytes, body: bytes, key: str, source: str) -> str:
    """The text of one tEXt, zTXt or iTXt chunk whose keyword is `key`."""
    rest = body.partition(b"\x00")[2]
    encoding = "latin-1"
    if kind == b"zTXt":
        if rest[:1] != b"\x00":
            raise _fail(source, f"the PNG's {key!r} text uses an unknown compression method")
        rest = _inflate(rest[1:], source, key)
    elif kind == b"iTXt":  # compressed flag, method, language, translated keyword, text
        flag, method, rest = rest[:1], rest[1:2], rest[2:]
        rest = rest.partition(b"\x00")[2].partition(b"\x00")[2]
        encoding = "utf-8"
        if flag == b"\x01":
            if method != b"\x00":
                raise _fail(source, f"the PNG's {key!r} text uses an unknown compression method")
            rest = _inflate(rest, source, key)
    if len(rest) > MAX_CARD_TEXT:
        raise _fail(source, f"the PNG's {key!r} text is larger than {MAX_CARD_TEXT >> 20} MiB")
    try:
        return rest.decode(encoding)
    except UnicodeDecodeError:
        raise _fail(source, f"the PNG's {key!r} text is not UTF-8") from None


_BASE64_SPACE = re.compile(r"[\t\n\r ]+")


def png_card_texts(data: bytes, source: str = "<png>") -> dict[str, str]:
    """The card chunks of a PNG ('ccv3', 'chara') by lower-case keyword.

    Other text chunks (comments, V3 asset payloads) are counted, never inflated. A card
    keyword may appear once, whatever its case or chunk type: two would let this reader and
    SillyTavern's (which takes the first, case-insensitively) see different characters. So at
    most two chunks are ever inflated, each to at most MAX_CARD_TEXT: the total a PNG can
    inflate to is bounded however many chunks it has.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise _fail(source, "not a PNG file")
    found: dict[str, str] = {}
    pos, chunks, texts = len(PNG_SIGNATURE), 0, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise _fail(source, "PNG is truncated", "export the card again")
        pos += 12 + length
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise _fail(source, f"the PNG has more than {MAX_CHUNKS} chunks", "export it again")
        if kind == b"IEND":
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        texts += 1
        if texts > MAX_TEXT_CHUNKS:
            raise _fail(
                source,
                f"the PNG has more than {MAX_TEXT_CHUNKS} text chunks",
                "a card needs one; export it again from SillyTavern",
            )
        key = body.partition(b"\x00")[0][:80].decode("latin-1").lower()
        if key not in CARD_KEYWORDS:
            continue
        if key in found:
            raise _fail(
                source,
                f"the PNG carries a {key!r} card twice",
                "readers disagree on which one counts; export the card again",
            )
        found[key] = _card_text(kind, body, key, source)
    return found


def card_from_png(data: bytes, source: str = "<png>") -> Any:
    texts = png_card_texts(data, source)
    for key in CARD_KEYWORDS:
        if key in texts:
            try:
                raw = base64.b64decode(_BASE64_SPACE.sub("", texts[key]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _fail(source, f"the PNG's {key!r} card is not base64: {exc}") from None
            return parse_json(raw, source, MAX_CARD_JSON, f"PNG's {key!r} card")
    raise _fail(
        source,
        "this PNG carries no character card",
        "SillyTavern cards keep the card in a 'chara' or 'ccv3' text chunk",
    )


def _slug(text: str, fallback: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-")
    return slug or fallback


def _text(card: dict[str, Any], key: str, limit: int = MAX_TEXT) -> str:
    """A text field, cut to `limit` before anything is done with it: a card may hold
    megabytes where a recipe keeps 20,000 characters."""
    value = card.get(key)
    return value[: limit * 2].strip()[:limit] if isinstance(value, str) else ""


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
    name = _text(data, "name", 200)
    if not name:
        raise _fail(source, "the card has no name")

    def fill(text: str) -> str:
        """{{char}} and {{user}} filled in; bounded, since every input is (name <= 200
        characters, text <= MAX_TEXT), and cut to a recipe's MAX_TEXT."""
        return re.sub(
            r"\{\{\s*char\s*\}\}",
            lambda _match: name,  # the name as written: `\1` in it is text, not a group
            re.sub(r"\{\{\s*user\s*\}\}", "the user", text, flags=re.I),
            flags=re.I,
        )[:MAX_TEXT]

    sections = [
        _text(data, "system_prompt") or f"You are {name}. Stay in character.",
        _text(data, "description"),
        f"Personality: {_text(data, 'personality')}" if _text(data, "personality") else "",
        f"Scenario: {_text(data, 'scenario')}" if _text(data, "scenario") else "",
        f"Example dialogue:\n{_text(data, 'mes_example')}" if _text(data, "mes_example") else "",
        _text(data, "post_history_instructions"),
    ]
    persona = fill("\n\n".join(s for s in sections if s))
    greeting = fill(_text(data, "first_mes")) or None
    slug = _slug(name, "character")
    agent_name = re.sub(r"[^a-z0-9_-]", "", slug.replace("-", "_"))[:32] or "character"
    if not agent_name[0].isalpha():
        agent_name = ("c" + agent_name)[:32]
    raw_tags = data.get("tags")
    raw_tags = raw_tags[:MAX_TAGS] if isinstance(raw_tags, list) else []
    tags = [t for t in (_slug(t[:200], "") for t in raw_tags if isinstance(t, str)) if t]
    creator = _text(data, "creator", 200)
    recipe = {
        "potluck": 1,
        "name": slug,
        "title": name,
        "description": fill(_text(data, "creator_notes")),
        "tags": [*sorted(set(tags))[:15], "character-card"],
        "author": creator or None,
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
        raise _fail(source, f"card is larger than {MAX_CARD_BYTES >> 20} MiB")
    if data.startswith(PNG_SIGNATURE):
        return card_to_recipe(card_from_png(data, source), source)
    return card_to_recipe(parse_json(data, source, MAX_CARD_JSON, "JSON card"), source)
