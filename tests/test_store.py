"""The store on SQLite and on a real PostgreSQL server: migrations, library, no doubles."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from gateway.library import Library
from gateway.store.db import Store
from gateway.store.models import Base, Message, Room
from runtime.recipes import RecipeError, parse_recipe

from .support import MINIMAL


@pytest.fixture
def store(database_url: str):
    store = Store(database_url)
    yield store
    store.close()


def test_migrations_match_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "recipe_versions",
        "recipe_heads",
        "rooms",
        "sessions",
        "messages",
        "outbox",
        "receipts",
        "publications",
        "adapter_cursors",
        "alembic_version",
    } <= tables


def test_migrate_twice_is_harmless(database_url: str) -> None:
    """A second start migrates nothing and loses nothing: one version row, at the head,
    and what the first start stored is still there."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from gateway.store.db import MIGRATIONS
    from gateway.store.rooms import ensure_room

    first = Store(database_url)
    room = ensure_room(first, "web", "kept")
    first.close()
    second = Store(database_url)
    try:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        with second.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [head]
        assert ensure_room(second, "web", "kept") == room
    finally:
        second.close()


def test_the_head_is_known_without_alembic_and_a_store_behind_it_is_migrated(
    tmp_path,
) -> None:
    """Start skips Alembic for a store at the head, which it reads from the file names:
    every migration file is `NNNN_*.py` with revision NNNN, and the newest is Alembic's
    head. A store one migration behind is still brought up to it."""
    import re

    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from gateway.store.db import MIGRATIONS, at_head, head_revision, make_engine

    for path in (MIGRATIONS / "versions").glob("*.py"):
        revision = re.search(r'^revision = "(\w+)"', path.read_text(), re.M)
        assert revision and path.name.startswith(f"{revision[1]}_"), path.name
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()

    engine = make_engine(f"sqlite:///{tmp_path / 'behind.db'}")
    assert not at_head(engine)
    previous = ScriptDirectory.from_config(config).get_revision(head_revision()).down_revision
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, previous)
    assert not at_head(engine)
    engine.dispose()
    store = Store(f"sqlite:///{tmp_path / 'behind.db'}")
    try:
        assert at_head(store.engine)
    finally:
        store.close()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_library_keeps_every_version_and_walks_lineage(store: Store) -> None:
    library = Library(store)
    bundled = {saved.recipe.name: saved for saved in library.sync_bundled()}
    assert library.get("solo").id == bundled["solo"].id
    fork = library.fork("solo", "my-solo")
    edited = library.set("my-solo", "agents.assistant.temperature", "0.1")
    assert library.get("my-solo").id == edited.id
    assert library.get(f"my-solo@{fork.id[:7]}").id == fork.id  # old versions stay reachable
    assert (
        library.get(fork.id).recipe.agents[0].temperature
        == bundled["solo"].recipe.agents[0].temperature
    )
    chain = [saved.id for saved in library.lineage("my-solo")]
    assert chain == [edited.id, fork.id, bundled["solo"].id]
    with pytest.raises(RecipeError, match="exists"):
        library.fork("solo", "my-solo")
    with pytest.raises(RecipeError, match="no such recipe"):
        library.get("my-solo@ffffff")


def test_bundled_sync_never_overwrites_a_local_edit(store: Store) -> None:
    library = Library(store)
    library.sync_bundled()
    edited = library.set("solo", "title", "Mine now")
    library.sync_bundled()
    assert library.get("solo").id == edited.id


def test_a_parent_from_elsewhere_ends_the_lineage(store: Store) -> None:
    library = Library(store)
    foreign = "ab" * 32
    saved = library.save(parse_recipe(MINIMAL + f"forked_from: {'ab' * 32}\n"), "import")
    assert library.lineage(saved.ref)[-1] == foreign


def test_the_same_platform_event_cannot_be_stored_twice(store: Store) -> None:
    with store.session.begin() as db:
        room = Room(platform="matrix", platform_room_id="!r:hs")
        db.add(room)
        db.flush()
        room_id = room.id
        db.add(
            Message(room_id=room_id, platform_event_id="$e1", direction="in", sender="h", text="hi")
        )
    with pytest.raises(IntegrityError), store.session.begin() as db:
        db.add(
            Message(
                room_id=room_id,
                platform_event_id="$e1",
                direction="in",
                sender="h",
                text="hi again",
            )
        )
