"""Text to Recipe, safely: no arbitrary tags, no alias bombs, no unbounded nesting.

Pure: takes text and a name for it, returns a Recipe or raises RecipeError naming the file,
line and field. Reading files is the caller's business.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError

from .errors import Problem, RecipeError
from .schema import Recipe

MAX_BYTES = 256 * 1024
MAX_DEPTH = 24
MAX_PROBLEMS = 20


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that recipes do not accept; the message already says what to do."""


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (the billion-laughs vector) and deep nesting.

    Recipes gain nothing from anchors and aliases, and expanding them is how a 1 KB file
    becomes gigabytes, so they are refused rather than bounded. Dates stay text: no field
    is a date, and `2024-13-01` should reach validation as a string, not crash a parser.
    """

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                None,
                None,
                "aliases (*name) are not allowed in recipes; write the value out",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose(text: str, source: str) -> yaml.Node | None:
    """Parse text into a YAML node tree (positions kept), or raise RecipeError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise RecipeError(
            [
                Problem(
                    source,
                    None,
                    "",
                    f"file is larger than {MAX_BYTES // 1024} KiB",
                    "a recipe is a few KB; is this the right file?",
                )
            ]
        )
    if "\x00" in text:
        raise RecipeError(
            [Problem(source, None, "", "file contains NUL bytes", "recipes are UTF-8 text files")]
        )
    loader: _GuardedLoader | None = None
    try:
        loader = _GuardedLoader(text)  # the reader checks characters here already
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        hint = "" if isinstance(exc, _Refused) else "check indentation and quoting on that line"
        raise RecipeError(
            [Problem(source, line, "", f"not valid YAML: {exc.problem or exc}", hint)]
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise RecipeError([Problem(source, None, "", f"not valid YAML: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _construct(node: yaml.Node, source: str) -> Any:
    _check_nodes(node, source)
    loader = _GuardedLoader("")
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RecipeError(
            [
                Problem(
                    source,
                    mark.line + 1 if mark else None,
                    "",
                    f"cannot read value: {exc.problem or exc}",
                )
            ]
        ) from None
    except (ValueError, TypeError, OverflowError, yaml.YAMLError) as exc:
        line = node.start_mark.line + 1
        raise RecipeError(
            [
                Problem(
                    source,
                    line,
                    "",
                    f"cannot read value: {exc}",
                    "quote the value to keep it as text",
                )
            ]
        ) from None
    finally:
        loader.dispose()


# The tags plain YAML resolves to by itself. Anything else is written on purpose (`!!set`,
# `!!binary`, `!!python/...`, `!local`) and has no place in a recipe: a set has no order (the
# same file would get a new version id on every run), and the rest are other types in
# disguise. Merge keys (`<<`) are refused too: they say a field twice, and which one wins is
# a reader's choice, so the recipe would mean different things to different tools.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


def _check_nodes(node: yaml.Node, source: str) -> None:
    """Refuse duplicate keys, merge keys and explicit tags anywhere in the tree."""
    stack = [node]
    while stack:
        current = stack.pop()
        line = current.start_mark.line + 1
        if current.tag == "tag:yaml.org,2002:merge":
            raise RecipeError(
                [
                    Problem(
                        source,
                        line,
                        "",
                        "merge keys (<<) are not allowed in recipes",
                        "write the fields out",
                    )
                ]
            )
        if current.tag not in _PLAIN_TAGS:
            shown = current.tag.replace("tag:yaml.org,2002:", "!!")
            raise RecipeError(
                [
                    Problem(
                        source,
                        line,
                        "",
                        f"YAML tags ({shown}) are not allowed in recipes",
                        "write a plain value; quote it to keep it as text",
                    )
                ]
            )
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise RecipeError(
                            [
                                Problem(
                                    source,
                                    key.start_mark.line + 1,
                                    key.value,
                                    f"appears twice (first on line {seen[key.value]})",
                                    "keep one of them",
                                )
                            ]
                        )
                    seen[key.value] = key.start_mark.line + 1
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def parse_value(raw: str) -> Any:
    """A value typed after `recipe set` (in a shell or a chat room): YAML under a file's
    limits, so `0.3` is a number and `[a, b]` a list; anything it refuses stays the text
    typed."""
    try:
        node = compose(raw, "set")
        if node is None:
            return None if raw.strip() in ("null", "~") else raw
        return _construct(node, "set")
    except RecipeError:
        return raw


def _locate(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int | None, bool]:
    """Line of the node at loc; second value says whether loc was found all the way down."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if step >= len(node.value):
                return line, False
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line, False
    return line, True


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """agents[1].model rendered as agents.critic.model where the agent has a name."""
    parts: list[str] = []
    here = data
    for step in loc:
        if isinstance(step, int):
            name = (
                here[step].get("name")
                if isinstance(here, list) and step < len(here) and isinstance(here[step], dict)
                else None
            )
            parts.append(str(name) if isinstance(name, str) else f"[{step}]")
        else:
            parts.append(str(step))
        try:
            here = here[step]
        except (KeyError, IndexError, TypeError):
            here = None
    return ".".join(parts).replace(".[", "[")


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Recipe
    for step in loc:
        if isinstance(step, int):
            continue
        field = model.model_fields.get(step)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        nested = [c for c in candidates if isinstance(c, type) and hasattr(c, "model_fields")]
        if not nested:
            # list[Agent] and friends
            inner = [a for c in args for a in (getattr(c, "__args__", ()) or ())]
            nested = [c for c in inner if isinstance(c, type) and hasattr(c, "model_fields")]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


_PATH_PREFIX = re.compile(r"^([a-z_]+(?:\.[a-z_]+)*): (.*)$", re.S)


def _problem(error: dict[str, Any], root: yaml.Node | None, data: Any, source: str) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    prefixed = _PATH_PREFIX.match(message) if not loc else None
    if prefixed:  # whole-recipe checks name the field they concern as "path: message"
        loc, message = tuple(prefixed.group(1).split(".")), prefixed.group(2)
    line, _ = _locate(root, loc)
    field = _field_path(loc, data)
    hint = ""
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = f"unknown field {str(loc[-1])!r}"
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            f"allowed here: {', '.join(allowed)}" if allowed else "remove it"
        )
    elif kind == "missing":
        parent_line, _ = _locate(root, loc[:-1])
        line = parent_line
        message = f"required field {str(loc[-1])!r} is missing"
        hint = "add it"
    elif kind == "literal_error":
        hint = "use one of the listed values"
    elif kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern", "")
        hint = _pattern_hint(pattern)
    return Problem(source, line, field, message, hint)


def _pattern_hint(pattern: str) -> str:
    from . import schema

    hints = {
        schema.SLUG: "lowercase letters, digits and dashes, e.g. my-recipe",
        schema.AGENT_NAME: "start with a letter; lowercase letters, digits, - and _",
        schema.VERSION_ID: "a full 64-hex version id, as `potluck recipe show` prints",
        schema.MODEL_ID: "a litellm model id such as openai/gpt-4o-mini, or local/smollm2-135m",
        schema.MEMORY: "a number with k, m or g, e.g. 512m",
    }
    return hints.get(pattern, "")


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Validate recipe text. Raises RecipeError with every problem found."""
    root = compose(text, source)
    if root is None:
        raise RecipeError(
            [
                Problem(
                    source,
                    None,
                    "",
                    "file is empty",
                    "start from `potluck recipe show solo` or a bundled recipe",
                )
            ]
        )
    data = _construct(root, source)
    return validate_data(data, source, root)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unpaired_surrogate(data: Any) -> tuple[tuple[Any, ...], str] | None:
    """Where a string (value or key) holds half of a UTF-16 pair, which `\\ud800` in YAML
    or JSON can produce: such a string cannot be written to a file, a database or a hash."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if found := _SURROGATE.search(item):
                return loc, found.group()
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and (found := _SURROGATE.search(key)):
                    return loc, found.group()
                stack.append(((*loc, key), value))
        elif isinstance(item, list):
            stack.extend(((*loc, index), value) for index, value in enumerate(item))
    return None


def validate_data(data: Any, source: str = "<recipe>", root: yaml.Node | None = None) -> Recipe:
    """Validate already-parsed data (JSON imports, edits), keeping positions when known."""
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else None
        raise RecipeError(
            [
                Problem(
                    source,
                    line,
                    "",
                    "a recipe is a mapping of fields",
                    "start with `potluck: 1` and `name: ...`",
                )
            ]
        )
    if (unpaired := _unpaired_surrogate(data)) is not None:
        loc, half = unpaired
        raise RecipeError(
            [
                Problem(
                    source,
                    _locate(root, loc)[0],
                    _field_path(loc, data).encode("utf-8", "backslashreplace").decode(),
                    f"holds an unpaired surrogate (\\u{ord(half):04x}), which is not text",
                    "write the character itself, not half of a UTF-16 pair",
                )
            ]
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Each problem is located in the file by a walk down from the root; thousands of
        # them (a file of unknown keys) would make that quadratic, so report the first few.
        problems = [_problem(e, root, data, source) for e in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(
                Problem(
                    source,
                    None,
                    "",
                    f"and {len(errors) - MAX_PROBLEMS} more problems",
                    "fix these first, then check again",
                )
            )
        raise RecipeError(problems) from None
    except RecursionError:
        raise RecipeError([Problem(source, None, "", "recipe is nested too deeply")]) from None
