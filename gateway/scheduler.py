"""APScheduler in `potluck serve`: the gateway's own recurring job (relay publishing) in
memory, and the rooms' `/schedule` jobs rebuilt from the store (schedules.py). Idle sandboxes are
reaped by the sandbox broker itself.

The own jobs are short and idempotent, so a run missed while the gateway was down is simply
coalesced into the next one.
"""

from __future__ import annotations

import logging
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .receipts.publisher import publish_pending
from .schedules import Schedules
from .updates import check_updates

log = logging.getLogger("potluck.scheduler")


def start_scheduler(
    store: Any,
    keys: Any,
    intake: Any = None,
    publish_every_s: int = 30,
    library: Any = None,
    relays: tuple[str, ...] = (),
    updates_every_s: int = 600,
) -> tuple[Any, Schedules | None]:
    """The running scheduler, and the rooms' schedules when there is an `intake` (the
    gateway's entry point) for their runs to go into. With a `library` and relays, rooms
    running a stranger's recipe hear of its newer versions (gateway/updates.py)."""
    scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1})

    async def publish() -> None:
        result = await publish_pending(store, keys)
        if result.accepted or result.errors:
            log.info(
                "relays: %d accepted, %d rejected, %d errors (kept for retry)",
                result.accepted,
                result.rejected,
                len(result.errors),
            )

    async def updates() -> None:
        told = await check_updates(store, library, relays, keys.pubkey, intake.notice)
        if told:
            log.info("told %d rooms of newer versions of their recipes", told)

    scheduler.add_job(publish, "interval", seconds=publish_every_s, id="publish-receipts")
    if library is not None and relays and intake is not None:
        scheduler.add_job(updates, "interval", seconds=updates_every_s, id="recipe-updates")
    schedules = Schedules(scheduler, store, intake) if intake is not None else None
    scheduler.start()
    return scheduler, schedules
