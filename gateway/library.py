"""The recipe library: bundled and local recipes, every version kept, lineage walkable.

A name points at a head version; a version is immutable and named by its content hash. Edits
and forks both record the version they came from in `forked_from`, so history is one chain
that can be walked back to the origin, across names and authors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select

from runtime.recipes import (
    Recipe,
    derive,
    fork,
    parse_recipe,
    set_field,
    validate_data,
    version_id,
)
from runtime.recipes.errors import Problem, RecipeError
from runtime.recipes.files import bundled_recipes
from runtime.recipes.version import SHORT, canonical_bytes

from .store.db import Store
from .store.models import RecipeHead, RecipeVersion, now


@dataclass(frozen=True)
class Saved:
    recipe: Recipe
    id: str
    origin: str

    @property
    def ref(self) -> str:
        return f"{self.recipe.name}@{self.id[:SHORT]}"


def _not_found(ref: str, hint: str = "see `potluck recipe list`") -> RecipeError:
    return RecipeError([Problem(ref, None, "", "no such recipe or version", hint)])


class Library:
    def __init__(self, store: Store) -> None:
        self.store = store

    def sync_bundled(self) -> list[Saved]:
        """Add the shipped recipes; a name the user has edited keeps the user's head."""
        saved = []
        for _path, recipe in bundled_recipes():
            vid = version_id(recipe)
            with self.store.session.begin() as db:
                head = db.get(RecipeHead, recipe.name)
                self._insert(db, recipe, vid, "bundled")
                if head is None:
                    db.add(RecipeHead(name=recipe.name, version_id=vid, origin="bundled"))
                elif head.origin == "bundled" and head.version_id != vid:
                    head.version_id, head.updated_at = vid, now()
            saved.append(Saved(recipe, vid, "bundled"))
        return saved

    @staticmethod
    def _insert(db, recipe: Recipe, vid: str, origin: str) -> None:  # type: ignore[no-untyped-def]
        if db.get(RecipeVersion, vid) is None:
            db.add(
                RecipeVersion(
                    id=vid,
                    name=recipe.name,
                    forked_from=recipe.forked_from,
                    document=canonical_bytes(recipe).decode(),
                    origin=origin,
                )
            )
            db.flush()

    def save(self, recipe: Recipe, origin: str = "local") -> Saved:
        """Store a version and make it the head of its name."""
        vid = version_id(recipe)
        with self.store.session.begin() as db:
            self._insert(db, recipe, vid, origin)
            head = db.get(RecipeHead, recipe.name)
            if head is None:
                db.add(RecipeHead(name=recipe.name, version_id=vid, origin=origin))
            else:
                head.version_id, head.origin, head.updated_at = vid, origin, now()
        return Saved(recipe, vid, origin)

    def keep(self, recipe: Recipe, origin: str = "local") -> Saved:
        """Store a version without moving its name's head: a room's own edit, which only
        that room runs until someone asks for it by its version elsewhere."""
        vid = version_id(recipe)
        with self.store.session.begin() as db:
            self._insert(db, recipe, vid, origin)
            if db.get(RecipeHead, recipe.name) is None:  # a new name: this is its first version
                db.add(RecipeHead(name=recipe.name, version_id=vid, origin=origin))
        return Saved(recipe, vid, origin)

    def has(self, name: str) -> bool:
        with self.store.session() as db:
            return db.get(RecipeHead, name) is not None

    def _load(self, row: RecipeVersion) -> Saved:
        recipe = validate_data(json.loads(row.document), f"{row.name}@{row.id[:SHORT]}")
        return Saved(recipe, row.id, row.origin)

    def get(self, ref: str) -> Saved:
        """`name`, `name@abc1234` (any unique prefix) or a full 64-hex version id."""
        name, _, prefix = ref.partition("@")
        with self.store.session() as db:
            if not prefix and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                row = db.get(RecipeVersion, name)
                if row is None:
                    raise _not_found(ref)
                return self._load(row)
            if not prefix:
                head = db.get(RecipeHead, name)
                if head is None:
                    raise _not_found(ref)
                return self._load(db.get(RecipeVersion, head.version_id))
            if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix.lower()):
                raise _not_found(ref, "a version is at least 4 hex digits, e.g. solo@4134b64")
            rows = db.scalars(
                select(RecipeVersion).where(
                    RecipeVersion.name == name, RecipeVersion.id.startswith(prefix.lower())
                )
            ).all()
            if len(rows) > 1:
                raise RecipeError(
                    [Problem(ref, None, "", "version prefix is ambiguous", "give more hex digits")]
                )
            if not rows:
                raise _not_found(ref, f"see `potluck recipe history {name}`")
            return self._load(rows[0])

    def heads(self) -> list[Saved]:
        with self.store.session() as db:
            rows = db.execute(
                select(RecipeHead, RecipeVersion)
                .join(RecipeVersion, RecipeHead.version_id == RecipeVersion.id)
                .order_by(RecipeHead.name)
            )
            return [
                Saved(self._load(version).recipe, version.id, head.origin) for head, version in rows
            ]

    def lineage(self, ref: str) -> list[Saved | str]:
        """This version, its parent, and so on to the origin. A parent not in this store
        (forked elsewhere) ends the chain as its bare id."""
        chain: list[Saved | str] = [self.get(ref)]
        seen = {chain[0].id}  # type: ignore[union-attr]
        parent = chain[0].recipe.forked_from  # type: ignore[union-attr]
        with self.store.session() as db:
            while parent and parent not in seen:
                row = db.get(RecipeVersion, parent)
                if row is None:
                    chain.append(parent)
                    break
                saved = self._load(row)
                chain.append(saved)
                seen.add(saved.id)
                parent = saved.recipe.forked_from
        return chain

    def fork(self, ref: str, new_name: str, author: str | None = None) -> Saved:
        with self.store.session() as db:
            if db.get(RecipeHead, new_name) is not None:
                raise RecipeError(
                    [
                        Problem(
                            new_name,
                            None,
                            "name",
                            "a recipe of that name exists",
                            "pick another name for the fork",
                        )
                    ]
                )
        return self.save(fork(self.get(ref).recipe, new_name, author=author))

    def set(self, ref: str, path: str, value: str) -> Saved:
        """The install owner's edit: a new version that becomes the name's head."""
        return self.save(set_field(self.get(ref).recipe, path, value))

    def set_in_room(self, ref: str, path: str, value: str) -> Saved:
        """A room's edit: a new version, the head left where it was (see `keep`)."""
        return self.keep(set_field(self.get(ref).recipe, path, value))

    def replace(self, ref: str, text: str) -> Saved:
        """A new version from edited YAML, its parent the version edited. Errors carry the
        line in `text`; the name stays (forking is how a recipe gets a new one)."""
        current = self.get(ref)
        source = f"{current.recipe.name}.yaml"
        edited = parse_recipe(text, source)
        if edited.name != current.recipe.name:
            raise RecipeError(
                [
                    Problem(
                        source,
                        _line_of(text, "name"),
                        "name",
                        f"an edit keeps the name {current.recipe.name!r}",
                        "fork the recipe to give it another name",
                    )
                ]
            )
        if version_id(edited) == current.id:
            return current
        data = edited.model_dump(mode="json")
        return self.save(derive(current.recipe, data, source))


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(f"{key}:"):
            return number
    return None
