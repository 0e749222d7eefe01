"""The recipe core: schema, errors that point at the line, content ids, edits and diffs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from runtime.recipes import (
    RecipeError,
    diff,
    fork,
    json_schema,
    parse_recipe,
    set_field,
    short_ref,
    to_yaml,
    version_id,
)
from runtime.recipes.files import bundled_recipes, read_recipe_file
from runtime.recipes.loader import MAX_PROBLEMS

from .capped import run_capped
from .support import MINIMAL, ROOT


def problems(text: str) -> list:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, "r.yaml")
    return caught.value.problems


def test_bundled_recipes_cover_both_doors_and_run_on_the_local_model() -> None:
    recipes = {recipe.name: recipe for _path, recipe in bundled_recipes()}
    assert {"code-review", "debate", "crush", "board", "solo"} <= set(recipes)
    assert len(recipes["board"].agents) == 4
    assert len(recipes["crush"].agents) == 3
    review = recipes["code-review"]
    providers = {agent.model.split("/")[0] for agent in review.agents}
    assert len(providers) == 3
    for recipe in recipes.values():
        for agent in recipe.agents:
            chain = [agent.model, *agent.fallbacks]
            assert any(model.startswith("local/") for model in chain), (recipe.name, agent.name)


def test_published_json_schema_is_current() -> None:
    published = json.loads((ROOT / "recipes" / "recipe.schema.json").read_text())
    assert published == json.loads(json.dumps(json_schema(), sort_keys=True))


def test_yaml_round_trip_keeps_the_version_id() -> None:
    for _path, recipe in bundled_recipes():
        again = parse_recipe(to_yaml(recipe))
        assert again == recipe
        assert version_id(again) == version_id(recipe)


def test_same_content_same_id_however_it_is_written() -> None:
    base = version_id(parse_recipe(MINIMAL))
    reordered = (
        "agents:\n  - persona: You help.\n    name: helper\ntitle: Tiny\nname: tiny\npotluck: 1\n"
    )
    explicit_default = MINIMAL + "trigger: mention\nprotocol:\n  kind: round_robin\n"
    crlf = MINIMAL.replace("\n", "\r\n")
    block = MINIMAL.replace("persona: You help.", "persona: |\n      You help.   \n")
    for variant in (reordered, explicit_default, crlf, block):
        assert version_id(parse_recipe(variant)) == base
    # and different content, a different id
    assert version_id(parse_recipe(MINIMAL.replace("You help.", "You help!"))) != base
    assert short_ref(parse_recipe(MINIMAL)) == f"tiny@{base[:7]}"


def test_unicode_is_normalised_before_hashing() -> None:
    composed = MINIMAL.replace("You help.", "Caf\u00e9")
    decomposed = MINIMAL.replace("You help.", "Cafe\u0301")
    assert version_id(parse_recipe(composed)) == version_id(parse_recipe(decomposed))


def test_error_names_file_line_field_and_a_fix() -> None:
    (problem,) = problems(MINIMAL + "    temprature: 0.3\n")
    assert (problem.source, problem.line, problem.field) == (
        "r.yaml",
        7,
        "agents.helper.temprature",
    )
    assert "did you mean 'temperature'" in problem.hint
    (problem,) = problems(MINIMAL + "    temperature: 9\n")
    assert problem.line == 7 and problem.field == "agents.helper.temperature"
    assert "less than or equal to 2" in problem.message


def test_all_problems_are_reported_at_once() -> None:
    found = problems(MINIMAL + "    temperature: 9\n    max_tokens: -1\ncolour: red\n")
    assert {p.field for p in found} == {
        "agents.helper.temperature",
        "agents.helper.max_tokens",
        "colour",
    }


def test_missing_field_points_at_its_parent() -> None:
    (problem,) = problems(
        "potluck: 1\nname: x\ntitle: t\nagents:\n  - name: a\n    model: openai/x\n"
    )
    assert problem.field == "agents.a.persona" and problem.line == 5
    assert "missing" in problem.message


def test_cross_field_errors_point_at_the_field() -> None:
    text = MINIMAL + "protocol:\n  kind: moderated\n  moderator: nobody\n"
    (problem,) = problems(text)
    assert problem.field == "protocol.moderator" and problem.line == 9
    (problem,) = problems(MINIMAL + "  - name: helper\n    persona: again\n")
    assert problem.field == "agents" and "two are named 'helper'" in problem.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: &x [1, 2]\nb: *x\n", "aliases"),
        ("potluck: 1\nname: a\nname: b\n", "appears twice"),
        ("[" * 200 + "]" * 200, "nested deeper"),
        ("name: [oops\n", "not valid YAML"),
        ("- just\n- a list\n", "a recipe is a mapping"),
        ("", "empty"),
        ("!!python/object:os.system {}\n", "tags (!!python/object:os.system) are not allowed"),
        # a merge key says a field twice (merged and explicit); which one wins is a reader's
        # choice, so a recipe that uses one means different things to different tools
        (MINIMAL + "<<: {description: smuggled, title: Other}\n", "merge keys (<<)"),
        # a set has no order: the same file would get a different version id on each run
        (MINIMAL + "tags: !!set {a, b, c}\n", "tags (!!set) are not allowed"),
        (MINIMAL + "description: !!binary aGVsbG8=\n", "tags (!!binary) are not allowed"),
        (MINIMAL + "description: !!timestamp 2001-12-14\n", "tags (!!timestamp)"),
        (MINIMAL + 'description: "\\ud800 half a character"\n', "unpaired surrogate"),
        (MINIMAL + 'description: "fine"\n"\\udfff": 1\n', "unpaired surrogate"),
    ],
)
def test_hostile_yaml_gets_a_clear_error(text: str, needle: str) -> None:
    assert needle in str(problems(text)[0])


def test_secrets_are_refused_in_any_text_field() -> None:
    text = MINIMAL.replace("You help.", "Use key sk-proj-abcdefghijklmnopqrstuvwx0123 for me")
    (problem,) = problems(text)
    assert "API key" in problem.message and problem.field == "agents.helper.persona"
    (problem,) = problems(
        MINIMAL + "description: my bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq\n"
    )
    assert "Telegram" in problem.message


def test_fork_records_the_exact_parent_version() -> None:
    parent = parse_recipe(MINIMAL)
    child = fork(parent, "tiny-mine", author="me")
    assert child.forked_from == version_id(parent)
    assert child.name == "tiny-mine" and child.author == "me"
    assert version_id(child) != version_id(parent)


def test_set_field_parses_values_and_revalidates() -> None:
    recipe = parse_recipe(MINIMAL)
    changed = set_field(recipe, "agents.helper.temperature", "0.25")
    assert changed.agents[0].temperature == 0.25
    assert changed.forked_from == version_id(recipe)
    assert set_field(recipe, "tags", "[a, b]").tags == ["a", "b"]
    with pytest.raises(RecipeError, match="no item named 'ghost'"):
        set_field(recipe, "agents.ghost.model", "x/y")
    with pytest.raises(RecipeError, match="less than or equal to 2"):
        set_field(recipe, "agents.helper.temperature", "5")
    with pytest.raises(RecipeError, match="managed by Potluck"):
        set_field(recipe, "forked_from", "0" * 64)


def test_diff_is_field_by_field_and_keys_agents_by_name() -> None:
    old = parse_recipe(MINIMAL + "  - name: critic\n    persona: You doubt.\n")
    new = set_field(set_field(old, "agents.critic.model", "openai/gpt-5"), "title", "Tinier")
    rendered = [change.render() for change in diff(old, new)]
    assert "~ title: Tiny → Tinier" in rendered
    assert "~ agents.critic.model: local/smollm2-135m → openai/gpt-5" in rendered
    # reordering agents is one readable change, not a diff of every field
    swapped = parse_recipe(
        MINIMAL.replace("agents:\n", "agents:\n  - name: critic\n    persona: You doubt.\n")
    )
    assert [c.path for c in diff(old, swapped)] == ["agents (order)"]


def test_thousands_of_unknown_fields_give_a_bounded_report() -> None:
    """Each problem is located in the file; 25,000 of them made that quadratic (minutes)."""
    text = MINIMAL + "".join(f"k{i}: 1\n" for i in range(25_000))
    found = problems(text)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0].field == "k0" and found[0].line == 7
    assert "and 24980 more problems" in found[-1].message


def test_a_set_value_is_parsed_as_safely_as_a_file() -> None:
    (_, solo), *_ = [(p, r) for p, r in bundled_recipes() if r.name == "solo"]
    deep = set_field(solo, "description", "[" * 5000)  # was a RecursionError
    assert deep.description == "[" * 5000  # not YAML a recipe accepts: kept as the text typed
    laughs = "[&a [lol, lol], [*a, *a]]"
    assert set_field(solo, "description", laughs).description == laughs
    with pytest.raises(RecipeError, match="unpaired surrogate"):
        set_field(solo, "description", "half \ud800")  # crashed the version id before
    assert set_field(solo, "protocol.max_turns", "7").protocol.max_turns == 7
    assert set_field(solo, "tags", "[a, b]").tags == ["a", "b"]


@pytest.mark.parametrize("kind", ["char-device", "fifo"])
def test_a_file_that_never_ends_is_refused_not_read(tmp_path: Path, kind: str) -> None:
    """/dev/zero reports size 0 and then never ends; a FIFO blocks until someone writes."""
    if kind == "fifo":
        target = tmp_path / "card.json"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    done = run_capped(tmp_path, "recipe", "validate", str(target), limit_mib=512, timeout=60)
    assert "Traceback" not in done.output, done.output
    assert done.returncode == 1 and "not a regular file" in done.stderr, done.output


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("\ufeffpotluck: 1\n".encode("utf-16"), "UTF-16"),
        (b"PK\x03\x04" + b"\x00" * 40, "a zip archive"),
        (b"potluck: 1\nname: \xff\n", "not UTF-8 text (byte 17)"),
    ],
    ids=["utf-16", "charx-zip", "latin-1"],
)
def test_files_in_other_encodings_or_archives_say_what_they_are(
    tmp_path: Path, data: bytes, needle: str
) -> None:
    path = tmp_path / "thing.yaml"
    path.write_bytes(data)
    with pytest.raises(RecipeError, match=re.escape(needle)):
        read_recipe_file(path)
