"""Recipes: schema, safe loading, content-addressed versions, forks, diffs and imports."""

from .edit import Change, derive, diff, fork, set_field
from .errors import Problem, RecipeError
from .loader import parse_recipe, validate_data
from .schema import Agent, Recipe, json_schema
from .sillytavern import import_card
from .version import canonical_bytes, short_ref, to_yaml, version_id

__all__ = [
    "Agent",
    "Change",
    "Problem",
    "Recipe",
    "RecipeError",
    "canonical_bytes",
    "derive",
    "diff",
    "fork",
    "import_card",
    "json_schema",
    "parse_recipe",
    "set_field",
    "short_ref",
    "to_yaml",
    "validate_data",
    "version_id",
]
