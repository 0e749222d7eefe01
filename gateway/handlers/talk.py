"""Talk: a person's message joins the room's conversation, and the agents answer it when the
room's recipe says they should (gateway/admission.py decides)."""

from __future__ import annotations

from adapters.base import Incoming

from ..admission import answers
from ..exchange import Said
from ..outlet import Outlet
from ..room import Room
from .context import Services, conversation_of


async def talk(
    services: Services, room: Room, incoming: Incoming, addressed: bool, outlet: Outlet
) -> None:
    said = Said(
        f"{incoming.platform}:{incoming.sender}",
        incoming.sender_name,
        incoming.text,
        incoming.event_id,
    )
    recipe = conversation_of(services, room).saved.recipe
    await answer(services, room, said, outlet, force=answers(recipe, incoming, addressed))


async def answer(
    services: Services, room: Room, said: Said, outlet: Outlet, *, force: bool
) -> None:
    """The message is heard (signed into the session); with `force`, the agents answer it,
    as the room's cancellable exchange."""
    exchange = services.exchange
    conversation = conversation_of(services, room)
    signed = exchange.hear(room.room_id, conversation, said, answer=force)
    await outlet.badge(said.event_id, signed)
    if force:
        await room.run(exchange.answer(room.room_id, room.key, conversation, outlet))
