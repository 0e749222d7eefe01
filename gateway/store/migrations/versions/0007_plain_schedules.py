"""schedules in plain columns; APScheduler's pickled job table is converted without running
anything it names, then dropped

A room's schedules used to live in APScheduler's SQLAlchemy job store, whose `job_state`
column is a pickle that APScheduler unpickles: a store restored from a stranger's backup could
name any callable to run when the gateway starts. The rows are read here with an unpickler
that resolves no global at all (every class or function a pickle names becomes an inert
stand-in), so only plain strings survive: the room, WHEN, recipe, text and schedule id.
A row that is not exactly what `/schedule add` wrote is dropped and logged.

Revision ID: 0007
Revises: 0006
"""

import io
import logging
import pickle
import re
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

log = logging.getLogger("potluck.store")
LEGACY = "apscheduler_jobs"
MAX_STATE = 64 * 1024  # a job of ours pickles to well under 2 KiB
FIELDS = ("room", "recipe", "text", "schedule_id")
LIMITS = {"when": 64, "room": 255, "recipe": 255, "schedule_id": 16, "text": 4000}


class _Inert:
    """What every global in a legacy pickle becomes: called, built, given state or called
    again, it does nothing, so no code named by the pickle runs."""

    def __new__(cls, *_args: object, **_kwargs: object) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def __setstate__(self, _state: object) -> None:
        pass

    def __call__(self, *_args: object, **_kwargs: object) -> "_Inert":
        return _Inert()  # a "bound method" a pickle builds with getattr, then calls


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        return _Inert

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not ours")


def legacy_job(state: bytes) -> dict[str, str] | None:
    """The plain fields of one of our old jobs, or None for anything else."""
    if not isinstance(state, bytes | bytearray | memoryview) or len(state) > MAX_STATE:
        return None
    try:
        job = _InertUnpickler(io.BytesIO(bytes(state))).load()
    except Exception:  # a malformed pickle is just not one of ours
        return None
    if not isinstance(job, dict) or job.get("func") != "gateway.schedules:fire":
        return None
    kwargs, when = job.get("kwargs"), job.get("name")
    if not isinstance(kwargs, dict) or not isinstance(when, str):
        return None
    fields = {"when": when, **{field: kwargs.get(field) for field in FIELDS}}
    if not all(_storable(value) for value in fields.values()):
        return None
    if any(len(fields[field]) > limit for field, limit in LIMITS.items()):
        return None
    # a fired run is keyed "schedule:ID:RECIPE:TIME": an id is hex, a recipe a recipe name
    # (runtime/recipes/schema.py SLUG), so neither can shift the key with a colon
    if not re.fullmatch(r"[0-9a-f]{1,16}", fields["schedule_id"]):
        return None
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?", fields["recipe"]):  # SLUG
        return None
    return fields


def _storable(value: object) -> bool:
    """Text every database takes: no lone surrogates (not UTF-8), no NUL (PostgreSQL)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _moment(value: object) -> datetime | None:
    """A stored next-run time, or None (computed afresh at start) when it is not a sane one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):  # 1e300, -1e20, nan, inf
        return None


def upgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table("schedules"):
        # SQLite's driver commits DDL on its own: a run of this migration that failed after
        # creating the table (before the fixes below) left it behind; start over cleanly.
        op.drop_table("schedules")
    schedules = op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room", sa.String(length=255), nullable=False),
        sa.Column("schedule_id", sa.String(length=16), nullable=False),
        sa.Column("when", sa.String(length=64), nullable=False),
        sa.Column("recipe", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("next_run", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("room", "schedule_id", name=op.f("uq_schedules_room")),
    )
    if not sa.inspect(bind).has_table(LEGACY):
        return
    rows, seen, dropped = [], set(), 0
    for _id, next_run_time, state in bind.execute(
        sa.text(f"SELECT id, next_run_time, job_state FROM {LEGACY}")
    ):
        job = legacy_job(state)
        key = (job["room"], job["schedule_id"]) if job else None
        if job is None or key in seen:
            dropped += 1
            continue
        seen.add(key)
        next_run = _moment(next_run_time)
        rows.append({**job, "next_run": next_run, "created_at": datetime.now(UTC)})
    if rows:
        op.bulk_insert(schedules, rows)
    op.drop_table(LEGACY)
    if dropped:
        log.warning("schedules: %d dropped from the old job table (not ours)", dropped)
    log.info("schedules: %d kept from the old job table", len(rows))


def downgrade() -> None:
    op.drop_table("schedules")
