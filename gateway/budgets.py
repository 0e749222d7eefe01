"""Spend limits per room and per person over a calendar period (UTC), checked before every
model call. The windows are computed from the spend rows' times, so nothing needs resetting:
a new day (week, month) simply starts with nothing spent in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select

from runtime.conductor import Budget, Turn

from .config import SessionCeiling
from .store.db import Store
from .store.models import Spend


def period_start(moment: datetime, period: str) -> datetime:
    """The start of the calendar day, ISO week (Monday) or month containing `moment`. Pure."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def period_end(moment: datetime, period: str) -> datetime:
    start = period_start(moment, period)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass
class RoomBudget(Budget):
    """A session's own budget, and the period budgets of its room and of whoever asked."""

    period: Callable[[], str | None] = field(default=lambda: None)

    def exhausted(self) -> str | None:
        return super().exhausted() or self.period()


def session_limits(
    max_tokens: int, max_cost_usd: float, ceiling: SessionCeiling
) -> tuple[int, float]:
    """A recipe's session limits under the install's ceiling: a recipe may only narrow what
    the install allows, and "no cost limit" (0) is not narrower than any. Pure."""
    usd = min(max_cost_usd, ceiling.usd) if max_cost_usd else ceiling.usd
    return min(max_tokens, ceiling.tokens), usd


def capped_words(max_tokens: int, max_cost_usd: float, ceiling: SessionCeiling) -> list[str]:
    """What a recipe asked for beyond the ceiling, in words for the room. Pure."""
    tokens, usd = session_limits(max_tokens, max_cost_usd, ceiling)
    words = []
    if tokens < max_tokens:
        words.append(f"{max_tokens} tokens a session → {tokens}")
    if usd != max_cost_usd:
        asked = f"${max_cost_usd:.2f}" if max_cost_usd else "no cost limit"
        words.append(f"{asked} a session → ${usd:.2f}")
    return words


@dataclass(frozen=True)
class Spent:
    tokens: int
    cost_usd: float


def over_limit(limits: dict[str, Any], room: Spent, user: Spent) -> str | None:
    """Which limit is reached, in words, or None. Pure."""
    period = {"day": "daily", "week": "weekly", "month": "monthly"}[limits["period"]]
    checks = (
        ("room_usd", room.cost_usd, f"this room's {period} budget of ${{:.2f}}"),
        ("user_usd", user.cost_usd, f"your {period} budget of ${{:.2f}}"),
        ("room_tokens", room.tokens, f"this room's {period} budget of {{:.0f}} tokens"),
        ("user_tokens", user.tokens, f"your {period} budget of {{:.0f}} tokens"),
    )
    for key, used, words in checks:
        limit = limits.get(key)
        if limit and used >= limit:
            return words.format(limit) + " is spent"
    return None


class Budgets:
    def __init__(
        self, store: Store, limits: dict[str, Any], ceiling: SessionCeiling | None = None
    ) -> None:
        self.store = store
        self.limits = limits
        self.ceiling = ceiling or SessionCeiling()

    @staticmethod
    def record(conn: Connection, room_id: int, session_id: str, user: str, turn: Turn) -> None:
        """What a turn cost, and whose message it answered (in the caller's commit)."""
        conn.execute(
            insert(Spend),
            {
                "room_id": room_id,
                "session_id": session_id,
                "user": user,
                "agent": turn.agent,
                "model": turn.model,
                "tokens": turn.tokens_in + turn.tokens_out,
                "cost_usd": turn.cost_usd,
            },
        )

    def _spent(self, since: datetime | None, **where: Any) -> Spent:
        after = () if since is None else (Spend.created_at >= since,)
        with self.store.session() as db:
            tokens, cost = db.execute(
                select(
                    func.coalesce(func.sum(Spend.tokens), 0),
                    func.coalesce(func.sum(Spend.cost_usd), 0.0),
                ).where(*after, *(getattr(Spend, k) == v for k, v in where.items()))
            ).one()
        return Spent(int(tokens), float(cost))

    def of_session(self, session_id: str) -> Spent:
        """What a session has spent so far: a session continued after a restart starts its
        budget from here, not from nothing."""
        return self._spent(None, session_id=session_id)

    def check(self, room_id: int, user: str, moment: datetime) -> str | None:
        """Before a model call: None, or why not (with when it resets and who can change it)."""
        if not self.limits:
            return None
        since = period_start(moment, self.limits["period"])
        reason = over_limit(
            self.limits,
            self._spent(since, room_id=room_id),
            self._spent(since, user=user) if user else Spent(0, 0.0),
        )
        if reason is None:
            return None
        resets = period_end(moment, self.limits["period"]).strftime("%Y-%m-%d %H:%M UTC")
        return f"{reason}; it resets {resets} (the gateway's owner sets [budgets])"

    def report(self, room_id: int, user: str, moment: datetime) -> str:
        """/budget: this period's spend in the room by agent and model, and the asker's."""
        period = self.limits.get("period", "day")
        since = period_start(moment, period)
        with self.store.session() as db:
            rows = db.execute(
                select(Spend.agent, Spend.model, func.sum(Spend.tokens), func.sum(Spend.cost_usd))
                .where(Spend.room_id == room_id, Spend.created_at >= since)
                .group_by(Spend.agent, Spend.model)
                .order_by(Spend.agent, Spend.model)
            ).all()
        mine = self._spent(since, user=user)
        room = self._spent(since, room_id=room_id)
        lines = [f"since {since:%Y-%m-%d %H:%M} UTC ({period}):"]
        lines += [
            f"  {agent} on {model}: {tokens} tokens, ${cost:.4f}"
            for agent, model, tokens, cost in rows
        ]
        lines.append(
            f"  this room: {room.tokens} tokens, ${room.cost_usd:.4f}"
            + _of(self.limits.get("room_tokens"), self.limits.get("room_usd"))
        )
        lines.append(
            f"  you: {mine.tokens} tokens, ${mine.cost_usd:.4f}"
            + _of(self.limits.get("user_tokens"), self.limits.get("user_usd"))
        )
        return "\n".join(lines)


def _of(tokens: float | None, usd: float | None) -> str:
    parts = [f"{tokens:.0f} tokens" if tokens else "", f"${usd:.2f}" if usd else ""]
    shown = " and ".join(p for p in parts if p)
    return f" (limit {shown})" if shown else " (no limit)"
