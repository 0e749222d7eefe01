"""JSON from strangers (character cards, imports): bounded before it is parsed, unambiguous
after. Pure: bytes in, plain Python data out, or RecipeError naming the file and the fix.

Python's parser recurses once per nesting level and keeps the last of two equal keys; a
card could crash it with a RecursionError, or mean one thing to us and another to the tool
that wrote it. So the nesting depth and the number of lists and objects are measured first,
by a scan that does not recurse, and then the parse refuses duplicate keys, NaN and
Infinity (not JSON, and never a sensible setting), numbers too large for a float, and
unpaired surrogates (`"\\ud800"` decodes to a string no file or database can store).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import Problem, RecipeError

MAX_DEPTH = 24  # the same limit YAML recipes have
MAX_CONTAINERS = 100_000  # lists and objects; a large real card has a few thousand

_ESCAPES = re.compile(r"\\.", re.S)  # a backslash and what it escapes
_STRINGS = re.compile(r'"[^"]*"')  # with escapes gone, a string is quote to quote
_BRACKETS = re.compile(r"[^\[\]{}]+")  # everything but brackets
_SURROGATE = re.compile("[\ud800-\udfff]")


def _fail(source: str, message: str, hint: str = "") -> RecipeError:
    return RecipeError([Problem(source, None, "", message, hint)])


def decode_text(data: bytes, source: str, what: str = "file") -> str:
    """UTF-8 (a BOM is allowed), or an error that says which encoding it seems to be."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _fail(source, f"the {what} is UTF-16 text", "save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            source, f"the {what} is not UTF-8 text (byte {exc.start})", "save it as UTF-8"
        ) from None


def check_shape(text: str, source: str, what: str = "JSON") -> None:
    """Refuse text nested deeper than MAX_DEPTH or holding more than MAX_CONTAINERS lists
    and objects, without parsing it: escapes, then strings, are cut out and the brackets
    left are counted. Each step is a pattern that cannot backtrack (linear time whatever
    the text; a single pattern for escaped strings was quadratic on quotes that never close)."""
    skeleton = _BRACKETS.sub("", _STRINGS.sub("", _ESCAPES.sub("", text)))
    if len(skeleton) > 2 * MAX_CONTAINERS:
        raise _fail(
            source,
            f"the {what} holds more than {MAX_CONTAINERS} lists and objects",
            "a card or recipe is a few dozen fields; is this the right file?",
        )
    depth = 0
    for bracket in skeleton:
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise _fail(
                source,
                f"the {what} is nested deeper than {MAX_DEPTH} levels",
                "no card or recipe needs more than a few levels",
            )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice in one object; keep one of them")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write a number or a string")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _find_surrogate(data: Any) -> str | None:
    """The first string (value or key) holding an unpaired surrogate; iterative."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def parse_json(data: bytes, source: str, max_bytes: int, what: str = "JSON") -> Any:
    """Bytes of JSON to data, within `max_bytes` and the limits above."""
    if len(data) > max_bytes:
        raise _fail(
            source,
            f"the {what} is larger than {max_bytes >> 20} MiB",
            "a character card is rarely over 1 MiB; is this the right file?",
        )
    text = decode_text(data, source, what)
    check_shape(text, source, what)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
    except json.JSONDecodeError as exc:
        raise _fail(
            source,
            f"the {what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except (ValueError, RecursionError) as exc:  # our hooks, and ints of over 4300 digits
        raise _fail(source, f"the {what} cannot be read: {exc}") from None
    bad = _find_surrogate(value)
    if bad is not None:
        at = _SURROGATE.search(bad)
        code = f"\\u{ord(at.group()):04x}" if at else ""
        raise _fail(
            source,
            f"the {what} holds an unpaired surrogate ({code}), which is not text",
            "export it again; a correct tool writes characters, not half of a UTF-16 pair",
        )
    return value
