"""The I/O shell around the pure recipe core: files, bundled recipes, format sniffing."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import Problem, RecipeError
from .loader import MAX_BYTES, parse_recipe
from .schema import Recipe
from .sillytavern import MAX_CARD_BYTES, PNG_SIGNATURE, import_card

BUNDLED_DIR = Path(
    os.environ.get("POTLUCK_RECIPES_DIR", Path(__file__).resolve().parents[2] / "recipes")
)


def read_recipe_file(path: Path) -> Recipe:
    """A .yaml recipe, or a SillyTavern card (.json or .png), from disk."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > max(MAX_BYTES, MAX_CARD_BYTES):
            raise RecipeError([Problem(source, None, "", f"file is {size} bytes; too large")])
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError([Problem(source, None, "", f"cannot read: {exc.strerror}")]) from None
    return recipe_from_bytes(data, source)


def recipe_from_bytes(data: bytes, source: str) -> Recipe:
    """A recipe from a file's bytes (a chat attachment, an upload); `source` is its name."""
    if len(data) > max(MAX_BYTES, MAX_CARD_BYTES):
        raise RecipeError([Problem(source, None, "", f"file is {len(data)} bytes; too large")])
    if data.startswith(PNG_SIGNATURE) or Path(source).suffix.lower() in (".png", ".json"):
        return import_card(data, source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            [
                Problem(
                    source, None, "", f"not UTF-8 text (byte {exc.start})", "save the file as UTF-8"
                )
            ]
        ) from None
    return parse_recipe(text, source)


def bundled_recipes(directory: Path = BUNDLED_DIR) -> list[tuple[Path, Recipe]]:
    """Every recipe shipped with Potluck. A broken one is a bug, so errors propagate."""
    return [(path, read_recipe_file(path)) for path in sorted(directory.glob("*.yaml"))]
