"""`/schedule`: timetables parsed with usage help, jobs kept in the store across a restart,
a fired run answered in the room as a session of its own, and the missed-run policy (at
most an hour late: run once; later: skipped and the room told)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.base import Incoming
from gateway.config import load_config
from gateway.library import Library
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.scheduler import start_scheduler
from gateway.schedules import STORE, WhenError, cron_fields, cron_weekdays, split_when
from gateway.service import Gateway
from gateway.store.db import Store
from gateway.store.models import Session
from runtime.models.client import Models
from runtime.recipes import validate_data

from .support import ECHO, ECHO_DUO, MemoryPlatform, said, settle


def test_timetables_in_words_or_cron() -> None:
    assert split_when("weekdays 9:00 standup what now?") == (
        "weekdays 9:00",
        ["standup", "what", "now?"],
    )
    assert split_when('"30 8 * * 1-5" standup') == ("30 8 * * 1-5", ["standup"])
    assert cron_fields("weekdays 9:00") == {"hour": "9", "minute": "0", "day_of_week": "mon-fri"}
    assert cron_fields("sundays 18:30")["day_of_week"] == "sun"
    assert cron_fields("30 8 * * 1-5")["day_of_week"] == "mon,tue,wed,thu,fri"  # cron's 1 = Mon
    assert cron_weekdays("0,7") == "sun" and cron_weekdays("*/2") == "sun,tue,thu,sat"
    for bad in ("tomorrow 9:00 x", "daily 25:00 x", "daily", '"61 * * * *" x', "'unclosed"):
        with pytest.raises(WhenError):
            cron_fields(split_when(bad)[0])


KEY = KeyPair.generate()


async def make(tmp: Path, store: Store) -> tuple[Gateway, MemoryPlatform, object]:
    config = load_config(env={"POTLUCK_HOME": str(tmp), "POTLUCK_ALLOWED_ROOMS": "mem:*"})
    library = Library(store)
    library.save(validate_data(ECHO))
    library.save(validate_data(ECHO_DUO))
    ledger = Ledger(store, KEY)  # the same gateway key across the restart
    gateway = Gateway(config, store, library, ledger, Models(), default_recipe="echo-room")
    platform = MemoryPlatform()
    platform.admins.add("alice")
    await gateway.add_adapter(platform)
    scheduler, gateway.services.schedules = start_scheduler(
        store, gateway.ledger.keys, gateway.intake
    )
    return gateway, platform, scheduler


def say(platform: MemoryPlatform, text: str, event: str, who: str = "alice") -> Incoming:
    return Incoming("mem", "r1", who, who, text, event, mentions_bot=True)


async def test_a_schedule_survives_a_restart_runs_once_and_reports_a_missed_run(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    gateway, platform, scheduler = await make(tmp_path, store)
    try:
        await platform.on_incoming(say(platform, "hello room", "e1"))
        await platform.on_incoming(say(platform, "/schedule add daily 7:00 duo good morning", "e2"))
        await platform.on_incoming(say(platform, '/schedule add "0 3 * * 1" duo weekly', "e3"))
        await platform.on_incoming(say(platform, "/schedule add daily 7:00 duo", "e4", "bob"))
        await platform.on_incoming(say(platform, "/schedule add soonish duo", "e5"))
        await settle(gateway)
        texts = said(platform)
        added = [t for t in texts if t.startswith("scheduled ")]
        assert len(added) == 2 and "duo@" in added[0] and "next run" in added[0]
        assert any("only room admins" in t for t in texts)  # bob
        assert any("Usage: /schedule add WHEN RECIPE" in t for t in texts)
        ids = [t.split()[1].rstrip(":") for t in added]

        jobs = {j.kwargs["schedule_id"]: j for j in scheduler.get_jobs(jobstore=STORE)}
        assert set(jobs) == set(ids)
        scheduler.pause()  # the gateway "goes down" with both runs due in the past
        now = datetime.now().astimezone()
        scheduler.modify_job(jobs[ids[0]].id, STORE, next_run_time=now - timedelta(minutes=10))
        scheduler.modify_job(jobs[ids[1]].id, STORE, next_run_time=now - timedelta(hours=2))
    finally:
        scheduler.shutdown(wait=False)
        await gateway.close()

    gateway, platform, scheduler = await make(tmp_path, store)  # back up, same store
    try:
        await platform.on_incoming(say(platform, "/schedule list", "e6"))
        await settle(gateway)
        for _ in range(50):  # the late run and the missed notice arrive
            await settle(gateway)
            texts = said(platform)
            if (
                any("missed the scheduled run" in t for t in texts)
                and sum("good morning" in t and t.startswith("echo") for t in texts) >= 2
            ):
                break
        texts = said(platform)
        listing = next(t for t in texts if t.startswith("schedules here:"))
        assert all(i in listing for i in ids) and "good morning" in listing, listing
        assert sum(t.startswith("scheduled run of duo@") for t in texts) == 1  # once
        assert any("missed the scheduled run of duo (0 3 * * 1)" in t for t in texts)
        assert sum("good morning" in t and t.startswith("echo") for t in texts) == 2  # both agents
        with store.session() as db:
            side = db.scalars(select(Session).where(Session.status == "ended")).all()
            live = db.scalars(select(Session).where(Session.status == "live")).all()
        assert len(live) == 1  # the room's own conversation was left alone
        assert any(s.recipe_version_id != live[0].recipe_version_id for s in side)
        reports = [gateway.ledger.verify_session(s.id) for s in [*side, *live]]
        assert all(r.ok for r in reports), [r.problems for r in reports]

        await platform.on_incoming(say(platform, f"/schedule cancel {ids[0]}", "e7"))
        await platform.on_incoming(say(platform, "/schedule cancel nope", "e8"))
        await settle(gateway)
        texts = said(platform)
        assert f"cancelled schedule {ids[0]}." in texts and any(
            "no schedule nope" in t for t in texts
        )
        assert [j.kwargs["schedule_id"] for j in scheduler.get_jobs(jobstore=STORE)] == [ids[1]]
    finally:
        scheduler.shutdown(wait=False)
        await gateway.close()
        store.close()
