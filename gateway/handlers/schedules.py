"""/schedule add|list|cancel, and a fired schedule's run: the recipe in a session of its own
in the room, so the room's conversation and attached recipe are untouched."""

from __future__ import annotations

from adapters.base import Incoming
from runtime.conductor import Ending

from ..admission import NOTICE_EVENT, SCHEDULER
from ..exchange import Said
from ..outlet import Outlet
from ..room import Room
from ..schedules import WhenError, split_when
from .context import Request, Services
from .table import handles


async def _schedules(req: Request):  # type: ignore[no-untyped-def]
    if req.services.schedules is None:
        await req.say("schedules run only under `potluck serve` (its scheduler is not running).")
    return req.services.schedules


@handles("schedule list")
async def schedule_list(req: Request) -> None:
    if (schedules := await _schedules(req)) is None:
        return
    lines = [
        f"  {s.id}: {s.when} → {s.recipe}"
        + (f" “{s.text}”" if s.text else "")
        + (f", next {s.next_run:%a %Y-%m-%d %H:%M %Z}" if s.next_run else "")
        for s in schedules.of_room(req.room.key)
    ]
    await req.say("\n".join(["schedules here:", *lines]) if lines else "no schedules here.")


@handles("schedule cancel")
async def schedule_cancel(req: Request) -> None:
    if (schedules := await _schedules(req)) is None:
        return
    which = req.args[0]
    gone = schedules.cancel(req.room.key, which)
    await req.say(
        f"cancelled schedule {which}." if gone else f"no schedule {which} here; see /schedule list"
    )


@handles("schedule add")
async def schedule_add(req: Request) -> None:
    if (schedules := await _schedules(req)) is None:
        return
    try:
        when, rest = split_when(req.command.raw_args)
        if not rest:
            raise WhenError("name the recipe to run after WHEN")
        saved = req.services.library.get(rest[0])
        added = schedules.add(req.room.key, when, saved.recipe.name, " ".join(rest[1:]))
    except WhenError as exc:
        await req.say(f"{exc}. Usage: {req.command.spec.usage}")
        return
    next_run = f"{added.next_run:%a %Y-%m-%d %H:%M %Z}" if added.next_run else "never"
    await req.say(
        f"scheduled {added.id}: {saved.ref} {when}; next run {next_run}. "
        f"Cancel with /schedule cancel {added.id}"
    )


async def scheduled_run(services: Services, room: Room, incoming: Incoming, outlet: Outlet) -> None:
    """A fired schedule: its recipe answers its text in a side session, then the session
    closes with the exchange's ending. The gateway's own notices (a run missed while it was
    down, a newer version of the room's recipe) are said."""
    if incoming.event_id.startswith(NOTICE_EVENT):
        await outlet.notice(incoming.text)
        return
    recipe_ref = incoming.event_id.split(":")[2]
    saved = services.library.get(recipe_ref)
    exchange = services.exchange
    conversation = exchange.open(room.room_id, saved, live=False)
    await outlet.notice(f"scheduled run of {saved.ref}: {incoming.text}")
    exchange.hear(
        room.room_id,
        conversation,
        Said(f"{SCHEDULER}:schedule", "schedule", incoming.text, incoming.event_id),
        answer=True,
    )
    outcome = None
    try:
        outcome = await room.run(exchange.answer(room.room_id, room.key, conversation, outlet))
    finally:
        if outcome is not None:
            exchange.close(conversation, outcome.ending, outcome.stop_reason)
        else:  # cancelled: by /stop, or cut off by a shutdown
            exchange.close(conversation, Ending.CUT if room.draining else Ending.STOPPED)
