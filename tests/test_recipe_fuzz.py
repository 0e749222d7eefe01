"""Property tests: whatever bytes arrive, the loader ends in a Recipe or a clear RecipeError."""

from __future__ import annotations

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.recipes import Recipe, RecipeError, parse_recipe, to_yaml, version_id
from runtime.recipes.loader import MAX_BYTES

from .support import MINIMAL

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(text: str) -> Recipe | RecipeError:
    try:
        return parse_recipe(text, "fuzz.yaml")
    except RecipeError as exc:
        assert exc.problems and all(p.source == "fuzz.yaml" for p in exc.problems)
        assert str(exc)
        return exc


@FAST
@given(st.text(max_size=2000))
def test_random_text(text: str) -> None:
    """Any text: a Recipe, or a RecipeError naming the file with at least one problem (never
    another exception; `outcome` asserts the error's shape)."""
    assert isinstance(outcome(text), Recipe | RecipeError)


yaml_ish = st.text(
    alphabet=string.printable + "&*!|>-:[]{}#%@`'\"\u00e9\u202e\U0001f600\x85", max_size=600
)


@FAST
@given(yaml_ish)
def test_yaml_punctuation_soup(text: str) -> None:
    """YAML's own syntax characters in any order: the same two outcomes only."""
    assert isinstance(outcome(text), Recipe | RecipeError)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=50)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "potluck",
                "name",
                "title",
                "agents",
                "protocol",
                "limits",
                "sandbox",
                "trigger",
                "tags",
                "forked_from",
                "description",
                "extra",
            ]
        ),
        values,
        max_size=8,
    )
)
def test_wrong_types_in_every_field(data: dict) -> None:
    """Every field with values of every type: accepted only if valid, else a clear error."""
    assert isinstance(outcome(yaml.safe_dump(data, allow_unicode=True)), Recipe | RecipeError)


@FAST
@given(
    st.sampled_from(
        [
            "temperature",
            "max_tokens",
            "model",
            "tools",
            "persona",
            "name",
            "fallbacks",
            "top_p",
            "color",
        ]
    ),
    values,
)
def test_wrong_agent_fields(field: str, value: object) -> None:
    base = yaml.safe_load(MINIMAL)
    base["agents"][0][field] = value
    result = outcome(yaml.safe_dump(base, allow_unicode=True))
    if isinstance(result, Recipe):  # what validates must round-trip to the same id
        assert version_id(parse_recipe(to_yaml(result))) == version_id(result)


@FAST
@given(st.text(min_size=1, max_size=300))
def test_any_persona_text_round_trips(persona: str) -> None:
    base = yaml.safe_load(MINIMAL)
    base["agents"][0]["persona"] = persona
    result = outcome(yaml.safe_dump(base, allow_unicode=True))
    if isinstance(result, Recipe):
        assert version_id(parse_recipe(to_yaml(result))) == version_id(result)


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    assert "aliases" in str(outcome("\n".join(lines)))


def test_huge_file_is_refused_before_parsing() -> None:
    assert "larger than" in str(outcome("a: " + "x" * (MAX_BYTES + 1)))


def test_deep_flow_nesting_does_not_blow_the_stack() -> None:
    assert "nested deeper" in str(outcome("[" * 50_000))
    assert "nested deeper" in str(outcome("{a: " * 5_000))
