"""Changing recipes: fork, set one field, diff two versions. Pure functions."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import Problem, RecipeError
from .loader import parse_value, validate_data
from .schema import Recipe
from .version import canonical_data, version_id


def fork(parent: Recipe, new_name: str, *, author: str | None = None) -> Recipe:
    """A new recipe whose lineage points at the parent's exact version."""
    data = parent.model_dump(mode="json")
    data.update(name=new_name, forked_from=version_id(parent))
    if author is not None:
        data["author"] = author
    return validate_data(data, f"fork of {parent.name}")


def derive(parent: Recipe, data: dict[str, Any], source: str) -> Recipe:
    """An edited version: same lineage rule as a fork, so history is one chain of ids."""
    data = dict(data)
    data["forked_from"] = version_id(parent)
    return validate_data(data, source)


def _parse_value(raw: str) -> Any:
    """`0.3` is a number, `[a, b]` a list, anything else text; under a recipe file's limits
    (no aliases, bounded depth), since the value may come from a chat room."""
    return parse_value(raw)


def set_field(recipe: Recipe, path: str, raw_value: str) -> Recipe:
    """`agents.architect.model openai/gpt-5` → a new validated version derived from recipe."""
    data = recipe.model_dump(mode="json")
    steps = [s for s in path.split(".") if s]
    if not steps:
        raise RecipeError(
            [
                Problem(
                    "set",
                    None,
                    path,
                    "empty field path",
                    "e.g. agents.architect.model or protocol.max_turns",
                )
            ]
        )
    if steps[0] in ("forked_from", "potluck"):
        raise RecipeError(
            [
                Problem(
                    "set", None, path, "is managed by Potluck", "fork or edit other fields instead"
                )
            ]
        )
    here: Any = data
    for index, step in enumerate(steps[:-1]):
        if isinstance(here, list):
            match = [item for item in here if isinstance(item, dict) and item.get("name") == step]
            if not match:
                names = ", ".join(str(item.get("name")) for item in here if isinstance(item, dict))
                raise RecipeError(
                    [
                        Problem(
                            "set",
                            None,
                            ".".join(steps[: index + 1]),
                            f"no item named {step!r}",
                            f"known: {names}",
                        )
                    ]
                )
            here = match[0]
        elif isinstance(here, dict):
            if step not in here or not isinstance(here[step], dict | list):
                raise RecipeError(
                    [
                        Problem(
                            "set",
                            None,
                            ".".join(steps[: index + 1]),
                            "is not a section that holds fields",
                            "see `potluck recipe show` for the paths",
                        )
                    ]
                )
            here = here[step]
    if not isinstance(here, dict):
        raise RecipeError(
            [
                Problem(
                    "set",
                    None,
                    path,
                    "cannot set an item of a list this way",
                    "set the whole list, e.g. tags '[a, b]'",
                )
            ]
        )
    here[steps[-1]] = _parse_value(raw_value)
    return derive(recipe, data, f"set {path}")


@dataclass(frozen=True)
class Change:
    op: str  # "+", "-", "~"
    path: str
    old: Any = None
    new: Any = None

    def render(self) -> str:
        if self.op == "+":
            return f"+ {self.path}: {_show(self.new)}"
        if self.op == "-":
            return f"- {self.path}: {_show(self.old)}"
        if (
            isinstance(self.old, str)
            and isinstance(self.new, str)
            and ("\n" in self.old or "\n" in self.new)
        ):
            lines = difflib.unified_diff(
                self.old.splitlines(), self.new.splitlines(), lineterm="", n=1
            )
            body = "\n".join("    " + line for line in list(lines)[2:])
            return f"~ {self.path}:\n{body}"
        return f"~ {self.path}: {_show(self.old)} → {_show(self.new)}"


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:7]  # a version id
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    text = text.strip().removesuffix("...").strip()
    return text if len(text) <= 120 else text[:117] + "..."


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """Lists of named things (agents) are compared by name, not by position."""
    if items and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        keyed = {i["name"]: i for i in items}
        return keyed if len(keyed) == len(items) else None
    return None


def _walk(path: str, old: Any, new: Any, out: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(Change("-", sub, old=old[key]))
            elif key not in old:
                out.append(Change("+", sub, new=new[key]))
            else:
                _walk(sub, old[key], new[key], out)
        return
    if isinstance(old, list) and isinstance(new, list):
        old_keyed, new_keyed = _keyed(old), _keyed(new)
        if old_keyed is not None and new_keyed is not None:
            _walk(path, old_keyed, new_keyed, out)
            if list(old_keyed) != list(new_keyed) and set(old_keyed) == set(new_keyed):
                out.append(Change("~", f"{path} (order)", list(old_keyed), list(new_keyed)))
            return
    out.append(Change("~", path, old, new))


def diff(old: Recipe, new: Recipe) -> list[Change]:
    """Field-by-field changes from old to new, defaults filled in so both read alike."""
    changes: list[Change] = []
    _walk("", old.model_dump(mode="json"), new.model_dump(mode="json"), changes)
    return changes


def is_same(a: Recipe, b: Recipe) -> bool:
    return canonical_data(a) == canonical_data(b)
