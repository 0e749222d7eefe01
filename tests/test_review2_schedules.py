"""Review 2: WHENs that never fire, from `/schedule add` or a restored store's rows.

Finding T1 — severity MEDIUM (the whole gateway stalls; reachable by any room admin).
Attack: `cron_fields` accepts five cron fields that name no real date, e.g.
"0 0 31 2,4,6,9,11 *" (the 31st of months that have 30 days or fewer). APScheduler's
`CronTrigger.get_next_fire_time` then searches every year up to 9999 before answering None:
about 1.7 s of CPU, synchronously on the event loop, in `Schedules.add`, again for every such
row when the gateway starts (`Schedules.__init__`), and after each firing. `/schedule add`
needs only a *room* admin: on Matrix anyone who creates a room and invites the bot.
What the attacker gets: each command freezes every room on every platform for ~1.7 s (the
2-core box this runs on: the loop answers nothing meanwhile); repeated, or as many rows in a
store from a stranger's backup, the gateway stops answering or takes minutes to start. The
schedule itself is useless ("next run never") and is kept anyway.
Smallest fix: in `Schedules.add` (and when loading rows), refuse a WHEN whose trigger has no
next fire time within a bounded horizon (e.g. compute it with the search bounded to a few
years, or check the day/month pairs: a day-of-month above every listed month's length), with
a WhenError saying "never fires"; and drop such rows at start with the existing warning.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from gateway.schedules import Schedules, WhenError
from gateway.store.db import Store
from gateway.store.schedules import every


@pytest.mark.parametrize("when", ["0 0 31 2,4,6,9,11 *", "0 0 30 2 *"])
def test_a_when_that_never_fires_is_refused(tmp_path: Path, when: str) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    scheduler = BackgroundScheduler()
    try:
        schedules = Schedules(scheduler, store, intake=None)
        with pytest.raises(WhenError, match="never"):
            schedules.add("mem:r1", when, "duo", "hello")
        assert every(store) == [], "a schedule that can never run was kept"
    finally:
        store.close()
