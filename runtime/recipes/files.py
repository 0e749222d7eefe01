"""The I/O shell around the pure recipe core: files, bundled recipes, format sniffing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import Problem, RecipeError
from .loader import MAX_BYTES, parse_recipe
from .safe_json import decode_text
from .schema import Recipe
from .sillytavern import MAX_CARD_BYTES, PNG_SIGNATURE, import_card

BUNDLED_DIR = Path(
    os.environ.get("POTLUCK_RECIPES_DIR", Path(__file__).resolve().parents[2] / "recipes")
)
MAX_FILE_BYTES = max(MAX_BYTES, MAX_CARD_BYTES)
ZIP_SIGNATURE = b"PK\x03\x04"


def _too_large(source: str, size: int) -> RecipeError:
    return RecipeError(
        [
            Problem(
                source,
                None,
                "",
                f"file is {size} bytes; too large",
                f"a recipe is at most {MAX_BYTES >> 10} KiB, a card {MAX_CARD_BYTES >> 20} MiB",
            )
        ]
    )


def read_recipe_file(path: Path) -> Recipe:
    """A .yaml recipe, or a SillyTavern card (.json or .png), from disk.

    Only a regular file is read, and never more than the largest accepted size: a device
    such as /dev/zero says it is empty and then never ends, a FIFO blocks until someone
    writes to it, and a file may grow between the size check and the read.
    """
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise RecipeError([Problem(source, None, "", f"cannot read: {exc.strerror}")]) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RecipeError(
                [
                    Problem(
                        source,
                        None,
                        "",
                        "not a regular file",
                        "give the path of a .yaml recipe or a .json/.png card",
                    )
                ]
            )
        if info.st_size > MAX_FILE_BYTES:
            raise _too_large(source, info.st_size)
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise RecipeError([Problem(source, None, "", f"cannot read: {exc.strerror}")]) from None
    return recipe_from_bytes(data, source)


def recipe_from_bytes(data: bytes, source: str) -> Recipe:
    """A recipe from a file's bytes (a chat attachment, an upload); `source` is its name."""
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(source, len(data))
    if data.startswith(ZIP_SIGNATURE):
        raise RecipeError(
            [
                Problem(
                    source,
                    None,
                    "",
                    "this is a zip archive (a .charx card?), which Potluck does not open",
                    "export the card as PNG or JSON, or the recipe as YAML",
                )
            ]
        )
    if data.startswith(PNG_SIGNATURE) or Path(source).suffix.lower() in (".png", ".json"):
        return import_card(data, source)
    return parse_recipe(decode_text(data, source), source)


def bundled_recipes(directory: Path = BUNDLED_DIR) -> list[tuple[Path, Recipe]]:
    """Every recipe shipped with Potluck. A broken one is a bug, so errors propagate."""
    return [(path, read_recipe_file(path)) for path in sorted(directory.glob("*.yaml"))]
