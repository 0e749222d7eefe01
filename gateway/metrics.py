"""`/health` and `/metrics` (Prometheus text format) for a home server's monitor. Pure
rendering over counters the gateway already keeps; no client library needed for a page of
plain counters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from .store.models import Outbox, Publication, ReceiptRow, Room, Session, Spend


def render(gateway: Any) -> str:
    with gateway.store.session() as db:
        rooms = db.scalar(select(func.count()).select_from(Room)) or 0
        live = (
            db.scalar(select(func.count()).select_from(Session).where(Session.status == "live"))
            or 0
        )
        receipts = db.scalar(select(func.count()).select_from(ReceiptRow)) or 0
        published = (
            db.scalar(
                select(func.count()).select_from(Publication).where(Publication.state == "ok")
            )
            or 0
        )
        tokens, cost = db.execute(
            select(
                func.coalesce(func.sum(Spend.tokens), 0), func.coalesce(func.sum(Spend.cost_usd), 0)
            )
        ).one()
    delivery_errors = sum(d.errors for d in gateway.deliveries.values())
    lines = [
        ("potluck_rooms", "gauge", "Rooms known to this gateway", rooms),
        ("potluck_sessions_live", "gauge", "Live sessions", live),
        ("potluck_receipts_signed", "counter", "Receipts signed and stored", receipts),
        ("potluck_receipts_published", "counter", "Receipt copies a relay accepted", published),
        ("potluck_tokens_total", "counter", "Model tokens, in and out, all rooms", int(tokens)),
        ("potluck_cost_usd_total", "counter", "Model cost in US dollars, all rooms", float(cost)),
        (
            "potluck_delivery_errors_total",
            "counter",
            "Sends or edits a platform failed or rate-limited",
            delivery_errors,
        ),
        ("potluck_messages_in_total", "counter", "Messages received", gateway.counters["incoming"]),
        ("potluck_turns_total", "counter", "Agent turns", gateway.counters["turns"]),
        ("potluck_commands_total", "counter", "Commands handled", gateway.counters["commands"]),
        ("potluck_reactions_total", "counter", "Reactions received", gateway.counters["reactions"]),
        (
            "potluck_refused_total",
            "counter",
            "Events from rooms or users not allowed",
            gateway.counters["refused"],
        ),
    ]
    if gateway.sandboxes is not None:
        for name, value in gateway.sandboxes.counters.items():
            lines.append((f"potluck_sandbox_{name}_total", "counter", f"Sandbox {name}", value))
    out = []
    for name, kind, help_text, value in lines:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(out) + "\n"


def health(gateway: Any) -> str:
    """One line for a monitor: the platforms connected, and whether the gateway is quiet
    (no room handling a message, nothing waiting in the outbox) — what a deploy script or a
    test waits for before calling a gateway idle."""
    adapters = ",".join(sorted(gateway.adapters)) or "none"
    busy = sum(not room.idle for room in gateway.rooms.all())
    with gateway.store.session() as db:
        undelivered = (
            db.scalar(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.state.in_(("pending", "streaming")))
            )
            or 0
        )
    return f"ok adapters={adapters} busy={busy} undelivered={undelivered}\n"
