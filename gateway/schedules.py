"""`/schedule`: run a recipe in a room on a timetable, kept in the store across restarts.

Schedules are plain rows in the gateway's own database (gateway/store/schedules.py), so they
survive restarts and move with a backup; at start they are rebuilt into the scheduler's
memory. Nothing is ever unpickled from the store (APScheduler's SQLAlchemy job store pickles
its jobs, and a restored backup could name any callable in one). Each row keeps the run it
is due to make next, so a restart knows what it missed. Missed-run policy, APScheduler's own
with coalescing: a run missed while the gateway was down is made once at start if it is at
most an hour late (several missed runs coalesce into one); a later one is skipped and the
room is told. When a job fires, the room's worker runs the recipe as a session of its own,
so the room's conversation and attached recipe are untouched and `/stop` works as usual.

A job only describes what fired (`fire` returns it); the scheduler's own "executed" and
"missed" events carry that forward into the gateway's intake, as an adapter's events do.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.triggers.cron import CronTrigger

from .store import schedules as saved_schedules
from .store.schedules import Saved

log = logging.getLogger("potluck.schedules")

STORE = "rooms"  # the scheduler's job store of room schedules, rebuilt from the store at start
GRACE_S = 3600
DAYS = {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun",
}  # fmt: skip
WHEN_HELP = (
    'WHEN is "hourly", "daily 9:00", "weekdays 9:00", "weekends 10:30", "mondays 9:00" '
    '(any day), or five cron fields in quotes, e.g. "30 8 * * 1-5"'
)


class WhenError(ValueError):
    pass


def _time(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?", text)
    if not match or int(match[1]) > 23 or int(match[2] or 0) > 59:
        raise WhenError(f"{text!r} is not a time of day like 9:00 or 18:30")
    return int(match[1]), int(match[2] or 0)


def split_when(raw: str) -> tuple[str, list[str]]:
    """The WHEN at the start of `raw`, and the words after it. Pure."""
    stripped = raw.strip()
    try:
        words = shlex.split(stripped)
    except ValueError as exc:
        raise WhenError(f"{exc} (check your quotes)") from None
    if not words:
        raise WhenError(WHEN_HELP)
    if stripped[:1] in "\"'":
        return words[0], words[1:]
    head = words[0].lower()
    if head == "hourly":
        return head, words[1:]
    day = head.removesuffix("s")
    if head in ("daily", "weekdays", "weekends") or day in DAYS or head in DAYS:
        if len(words) < 2:
            raise WhenError(f"{head} needs a time, e.g. {head} 9:00")
        return f"{head} {words[1]}", words[2:]
    raise WhenError(WHEN_HELP)


HORIZON = timedelta(days=9 * 366)  # Feb 29 comes within 8 years, even across 2100


def cron_fields(when: str) -> dict[str, str]:
    """APScheduler cron fields for a WHEN that fires some day. Pure."""
    fields = _cron_fields(when)
    # A WHEN naming no real date ("31st of February") has no next run: APScheduler would
    # search every year up to 9999 for one (seconds of CPU on the event loop); bounded, the
    # search ends quickly.
    now = datetime.now(UTC)
    if CronTrigger(**fields, end_date=now + HORIZON).get_next_fire_time(None, now) is None:
        raise WhenError(f"{when!r} never fires: no such date comes (check the day and month)")
    return fields


def _cron_fields(when: str) -> dict[str, str]:
    words = when.lower().split()
    if len(words) == 5:
        minute, hour, day, month, weekdays = words
        fields = {"minute": minute, "hour": hour, "day": day, "month": month}
        fields["day_of_week"] = cron_weekdays(weekdays)
        try:
            CronTrigger(**fields)  # validates every field
        except ValueError as exc:
            raise WhenError(f"{when!r} is not a cron expression: {exc}") from None
        return fields
    if words == ["hourly"]:
        return {"minute": "0"}
    if len(words) == 2:
        hour, minute = _time(words[1])
        at = {"hour": str(hour), "minute": str(minute)}
        if words[0] == "daily":
            return at
        if words[0] == "weekdays":
            return {**at, "day_of_week": "mon-fri"}
        if words[0] == "weekends":
            return {**at, "day_of_week": "sat,sun"}
        day = DAYS.get(words[0]) or DAYS.get(words[0].removesuffix("s"))
        if day:
            return {**at, "day_of_week": day}
    raise WhenError(WHEN_HELP)


CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_weekdays(field: str) -> str:
    """Cron's day-of-week field (0 or 7 = Sunday) as day names: APScheduler 3 counts from
    Monday, so numbers cannot be passed through. Pure."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            a, _, b = base.partition("-")
            low, high = _day(a), _day(b)
        else:
            low = high = _day(base)
        if high < low:
            raise WhenError(f"day range {base!r} runs backwards")
        days.update(range(low, high + 1, int(step) if step.isdigit() and step != "0" else 1))
    return ",".join(CRON_DAYS[d % 7] for d in sorted({d % 7 for d in days}))


def _day(token: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token[:3] in CRON_DAYS:
        return CRON_DAYS.index(token[:3])
    raise WhenError(f"{token!r} is not a day of the week (0-7 or mon..sun)")


@dataclass(frozen=True)
class Scheduled:
    id: str
    when: str
    recipe: str
    text: str
    next_run: datetime | None


async def fire(room: str, recipe: str, text: str, schedule_id: str) -> dict[str, str]:
    """A job's function: referenced by name in the store, so it must stay importable here.
    It only says what fired; `Schedules` hands that on."""
    return {"room": room, "recipe": recipe, "text": text, "schedule_id": schedule_id}


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back what it was given without its zone; the store writes UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class Schedules:
    """The rooms' schedules, and where their firings go: `intake` is the gateway's entry
    point (gateway/intake.py), given as adapters are given theirs. Made before the
    scheduler starts, so runs missed while the gateway was down are judged at its start."""

    def __init__(self, scheduler: Any, store: Any, intake: Any) -> None:
        self.scheduler = scheduler
        self.store = store
        self.intake = intake
        self._tasks: set[asyncio.Task[None]] = set()
        scheduler.add_jobstore(MemoryJobStore(), STORE)
        scheduler.add_listener(self._executed, EVENT_JOB_EXECUTED)
        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        for row in saved_schedules.every(store):
            try:
                self._job(row, CronTrigger(**cron_fields(row.when)))
            except (WhenError, ValueError) as exc:
                log.warning("schedule %s in %s not loaded: %s", row.schedule_id, row.room, exc)

    def _job(self, row: Saved, trigger: CronTrigger) -> Any:
        return self.scheduler.add_job(
            fire,
            trigger,
            kwargs={
                "room": row.room,
                "recipe": row.recipe,
                "text": row.text,
                "schedule_id": row.schedule_id,
            },
            id=f"{row.room}|{row.schedule_id}",
            name=row.when,
            jobstore=STORE,
            misfire_grace_time=GRACE_S,
            coalesce=True,
            max_instances=1,
            next_run_time=_aware(row.next_run) or trigger.get_next_fire_time(None, _now()),
        )

    def _forward(self, step: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(step)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add(self, room: str, when: str, recipe: str, text: str) -> Scheduled:
        trigger = CronTrigger(**cron_fields(when))
        next_run = trigger.get_next_fire_time(None, _now())
        row = Saved(room, uuid.uuid4().hex[:6], when, recipe, text, next_run)
        saved_schedules.add(self.store, row)
        self._job(row, trigger)
        return Scheduled(row.schedule_id, when, recipe, text, next_run)

    def of_room(self, room: str) -> list[Scheduled]:
        found = [
            Scheduled(row.schedule_id, row.when, row.recipe, row.text, _aware(row.next_run))
            for row in saved_schedules.every(self.store)
            if row.room == room
        ]
        return sorted(found, key=lambda s: s.next_run or datetime.max.replace(tzinfo=UTC))

    def cancel(self, room: str, schedule_id: str) -> bool:
        job = self.scheduler.get_job(f"{room}|{schedule_id}", jobstore=STORE)
        if job is not None:
            job.remove()
        return saved_schedules.remove(self.store, room, schedule_id)

    def _moved_on(self, job_id: str) -> tuple[Any, datetime | None]:
        """The job, and its next run after now, kept in the store so that a restart neither
        repeats the run just handled nor forgets one it missed."""
        job = self.scheduler.get_job(job_id, jobstore=STORE)
        if job is None:
            return None, None
        next_run = job.trigger.get_next_fire_time(None, _now())
        saved_schedules.set_next_run(
            self.store, job.kwargs["room"], job.kwargs["schedule_id"], next_run
        )
        return job, next_run

    def _executed(self, event: JobExecutionEvent) -> None:
        fired = event.retval
        if event.jobstore != STORE or not isinstance(fired, dict):
            return
        self._moved_on(event.job_id)
        when = event.scheduled_run_time or _now()
        self._forward(
            self.intake.scheduled(
                fired["room"], fired["recipe"], fired["text"], fired["schedule_id"], when
            )
        )

    def _missed(self, event: JobExecutionEvent) -> None:
        if event.jobstore != STORE:
            return
        job, next_run = self._moved_on(event.job_id)
        if job is None:
            return
        kwargs = job.kwargs
        self._forward(
            self.intake.missed(
                kwargs["room"], job.name, kwargs["recipe"], next_run, kwargs["schedule_id"]
            )
        )


def _now() -> datetime:
    return datetime.now(UTC)
