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
from gateway.store.schedules import set_next_run
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
        room = jobs[ids[0]].kwargs["room"]
        set_next_run(store, room, ids[0], now - timedelta(minutes=10))
        set_next_run(store, room, ids[1], now - timedelta(hours=2))
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


class _Runs:
    """Unpickled, it would create a file: the stand-in for any code a pickle can name."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_an_old_store_keeps_its_schedules_and_runs_nothing_its_job_table_names(
    tmp_path: Path,
) -> None:
    """A store from before schedules had plain columns: APScheduler's own job store wrote
    its pickled jobs. Upgrading keeps the rows `/schedule add` wrote, drops anything else,
    and unpickles nothing for real (a crafted row would otherwise run code)."""
    import pickle

    from alembic import command
    from alembic.config import Config as AlembicConfig
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from sqlalchemy import text

    from gateway.schedules import fire
    from gateway.store.db import MIGRATIONS, make_engine
    from gateway.store.schedules import every

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
    old = BackgroundScheduler()  # what the first version ran: the real SQLAlchemy job store
    old.add_jobstore(SQLAlchemyJobStore(engine=engine, tablename="apscheduler_jobs"), "rooms")
    old.start(paused=True)
    kwargs = {"room": "mem:r1", "recipe": "duo", "text": "good morning", "schedule_id": "ab12cd"}
    old.add_job(
        fire, CronTrigger(hour=7, minute=0), kwargs=kwargs, id="mem:r1|ab12cd", name="daily 7:00",
        jobstore="rooms",
    )  # fmt: skip
    old.shutdown(wait=False)
    marker = tmp_path / "code-ran-here"
    with engine.begin() as db:
        db.execute(
            text("INSERT INTO apscheduler_jobs VALUES ('mem:r1|evil', 1.0, :state)"),
            {"state": pickle.dumps({"func": "gateway.schedules:fire", "x": _Runs(marker)})},
        )
        db.execute(
            text("INSERT INTO apscheduler_jobs VALUES ('mem:r1|evil2', 1.0, :state)"),
            {"state": pickle.dumps(_Runs(marker))},
        )
        for n, shifted in enumerate(({"schedule_id": "ab:cd"}, {"recipe": "duo:other"})):
            job = {"func": "gateway.schedules:fire", "name": "daily 7:00"}
            job["kwargs"] = {**kwargs, "schedule_id": f"{n}", **shifted}  # a colon shifts
            db.execute(  # the fired run's key, "schedule:ID:RECIPE:TIME"
                text(f"INSERT INTO apscheduler_jobs VALUES ('mem:r1|shift{n}', 1.0, :state)"),
                {"state": pickle.dumps(job)},
            )
    engine.dispose()

    store = Store(url)  # opening the store upgrades it
    try:
        kept = every(store)
        with store.engine.connect() as db:
            tables = db.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
            names = {row[0] for row in tables}
    finally:
        store.close()
    assert not marker.exists(), "upgrading the store ran code a pickled job named"
    assert [(s.room, s.schedule_id, s.when, s.recipe, s.text) for s in kept] == [
        ("mem:r1", "ab12cd", "daily 7:00", "duo", "good morning")
    ]
    assert kept[0].next_run is not None
    assert "apscheduler_jobs" not in names
