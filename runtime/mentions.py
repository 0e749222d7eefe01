"""Who a message addresses, by name. One rule for the whole system: a name counts only as a
whole word (`@critic`, `critic,`), never as part of another (`criticism`). Pure."""

from __future__ import annotations

import re


def addressed(text: str, names: list[str]) -> list[str]:
    """The names addressed in `text`, in order of appearance."""
    found: list[tuple[int, str]] = []
    for name in names:
        match = re.search(rf"(?<![\w-])@?{re.escape(name)}(?![\w-])", text, re.IGNORECASE)
        if match:
            found.append((match.start(), name))
    return [name for _position, name in sorted(found)]
