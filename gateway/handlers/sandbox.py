"""/sandbox reset: a fresh container and an empty workspace for this room (asks first)."""

from __future__ import annotations

from .context import Request
from .table import handles


@handles("sandbox reset")
async def sandbox_reset(req: Request) -> None:
    if req.args != ("confirm",):
        await req.say(
            "Reset this room's sandbox? Its workspace and every file in it are deleted. "
            "Confirm with /sandbox reset confirm",
            choices=(("Yes, reset it", "/sandbox reset confirm"),),
        )
        return
    sandboxes = req.services.sandboxes
    if sandboxes is None:
        await req.say("no sandbox engine is configured on this gateway.")
        return
    await sandboxes.reset(req.room.key)
    await req.say("sandbox reset: a fresh container and an empty workspace.")
