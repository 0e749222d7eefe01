"""/help, /run, /stop, /budget, /receipts: the room's conversation and what it has cost."""

from __future__ import annotations

from ..commands import help_text
from ..exchange import STOPPED, Said
from ..store.models import now
from .context import Request
from .table import handles
from .talk import answer


@handles("help")
async def help_(req: Request) -> None:
    note = req.capabilities.help_note
    await req.say(help_text(await req.is_admin()) + (f"\n\n{note}" if note else ""))


@handles("run")
async def run(req: Request) -> None:
    incoming = req.incoming
    said = Said(
        f"{incoming.platform}:{incoming.sender}",
        incoming.sender_name,
        req.command.raw_args,
        incoming.event_id,
    )
    await answer(req.services, req.room, said, req.outlet, force=True)


@handles("stop")
async def stop(req: Request) -> None:
    """Runs as the message arrives, not in the room's queue (which may be busy with the very
    exchange it stops)."""
    stopped = req.room.stop(STOPPED)
    await req.outlet.notice("stopped." if stopped else "nothing is running.")


@handles("budget")
async def budget(req: Request) -> None:
    incoming = req.incoming
    period = req.services.budgets.report(
        req.room.room_id, f"{incoming.platform}:{incoming.sender}", now()
    )
    spent = req.room.conversation.budget if req.room.conversation else None
    if spent is None or not spent.by_agent:
        await req.say(f"nothing spent in this session yet.\n{period}")
        return
    rows = "\n".join(
        f"  {agent}: {tokens} tokens, ${cost:.4f}"
        for agent, (tokens, cost) in spent.by_agent.items()
    )
    await req.say(
        f"this session: {spent.tokens}/{spent.max_tokens} tokens, "
        f"${spent.cost_usd:.4f}/${spent.max_cost_usd:.2f}\n{rows}\n{period}"
    )


@handles("receipts")
async def receipts(req: Request) -> None:
    session_id = req.conversation().session_id
    ledger = req.services.ledger
    report = ledger.verify_session(session_id)
    status = "chain verified" if report.ok else "; ".join(report.problems[:5])
    await req.say(
        f"session {session_id}: {report.checked} signed events, {status}."
        f" Gateway key {ledger.keys.npub}"
    )
