"""Content addressing: one canonical form per recipe, one id per canonical form.

Defaults are left out of the canonical form, so writing a default explicitly does not
change the id, and a later schema release that adds an optional field does not re-id
every recipe in existence.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from .schema import Recipe

SHORT = 7


def canonical_data(recipe: Recipe) -> dict[str, Any]:
    data = recipe.model_dump(mode="json", exclude_defaults=True)
    data["potluck"] = recipe.potluck  # required, but equal to its only value
    return data


def canonical_bytes(recipe: Recipe) -> bytes:
    """Sorted keys, no whitespace, UTF-8: byte-identical on every machine."""
    return json.dumps(
        canonical_data(recipe), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def version_id(recipe: Recipe) -> str:
    return hashlib.sha256(canonical_bytes(recipe)).hexdigest()


def short_ref(recipe: Recipe, vid: str | None = None) -> str:
    return f"{recipe.name}@{(vid or version_id(recipe))[:SHORT]}"


_FIELD_ORDER = {
    name: index
    for index, name in enumerate(
        [
            "potluck",
            "name",
            "title",
            "description",
            "tags",
            "license",
            "author",
            "forked_from",
            "agents",
            "protocol",
            "trigger",
            "limits",
            "sandbox",
        ]
    )
}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(recipe: Recipe) -> str:
    """Readable YAML in the schema's field order; parses back to the same version id."""
    data = recipe.model_dump(mode="json", exclude_defaults=True)
    data["potluck"] = recipe.potluck
    ordered = dict(sorted(data.items(), key=lambda item: _FIELD_ORDER.get(item[0], 99)))
    body = yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return body
