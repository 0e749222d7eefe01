"""What a room does with each message, in order: a scheduled run, a command (one handler per
command, in a table generated from the command specs), or talk.

This is the room worker's one step (`handle`); `/stop` alone runs as it arrives (see
gateway/intake.py), since the queue may be busy with the very exchange it stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from adapters.base import Capabilities
from runtime.recipes import RecipeError

from ..commands import CommandError
from ..outlet import Outlet
from ..room import Room, Work
from ..sharing import FetchError
from . import (  # noqa: F401  (each registers its commands)
    recipes,
    records,
    sandbox,
    schedules,
    session,
    sharing,
)
from .context import Request, Services, conversation_of
from .schedules import scheduled_run
from .table import HANDLERS, check_complete
from .talk import talk

check_complete()

__all__ = ["HANDLERS", "Request", "Services", "conversation_of", "handle"]


async def handle(
    services: Services,
    room: Room,
    work: Work,
    outlet: Outlet,
    capabilities: Capabilities,
    is_admin: Callable[[], Awaitable[bool]],
) -> None:
    incoming, admission = work.incoming, work.admission
    if admission.kind == "scheduled":
        await scheduled_run(services, room, incoming, outlet)
        return
    if admission.kind == "talk":
        await talk(services, room, incoming, admission.addressed, outlet)
        return
    command = admission.command
    if isinstance(command, CommandError) or command is None:
        await outlet.notice(
            command.message if command else "not a command", reply_to=incoming.event_id
        )
        return
    if command.spec.admin and not await is_admin():
        await outlet.notice(
            f"only room admins may use {command.spec.usage.split()[0]} "
            f"{command.name.split()[-1]}; you can talk and read here",
            reply_to=incoming.event_id,
        )
        return
    request = Request(services, room, incoming, command, outlet, capabilities, is_admin)
    try:
        await HANDLERS[command.name](request)
    except (RecipeError, FetchError) as exc:  # the person's to fix: say exactly what
        await request.say(str(exc))
