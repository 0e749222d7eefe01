"""A track record in words, for the command line, chat rooms and the web room. Pure.

Every figure says how many it counts, rates say their 95% interval, and the unit (exchange
or session) is named where it matters. Text from a record is made of numbers and of names
the install chose or checked (models, judges), so it is shown as is by whoever prints it
through its own escaping (the CLI's `say`, the page's textContent).
"""

from __future__ import annotations

from ..receipts.endings import Ending
from .compare import Row, rate_text
from .figures import Record
from .stats import Spread


def _amount(value: float | None, money: bool = False) -> str:
    if value is None:
        return "–"
    if money:
        return f"${value:.4f}"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:g}"


def _spread(spread: Spread, money: bool = False) -> str:
    if not spread.n:
        return "–"
    return f"median {_amount(spread.median, money)}, p90 {_amount(spread.p90, money)}"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def lines(record: Record) -> list[str]:
    """The whole record, one figure a line."""
    if not record.sessions:
        return ["no sessions yet: nothing to count"]
    ends = " · ".join(f"{e.value} {record.endings[e.value]}" for e in Ending if record.endings[e])
    closed = " · ".join(
        f"{e.value} {record.session_endings[e.value]}" for e in Ending if record.session_endings[e]
    )
    rooms = f" in {_count(record.rooms, 'room')}" if record.rooms else ""
    out = [
        f"{_count(record.sessions, 'session')}{rooms} ({record.sessions_closed} closed"
        + (f": {closed}" if closed else "")
        + f"), {_count(record.exchanges, 'exchange')}, {_count(record.people, 'person', 'people')}"
        f", {_count(record.installs, 'install')}",
        f"completed: {rate_text(record.completion)} exchanges (by the recipe's own end)",
        f"endings: {ends or '–'}",
    ]
    if record.tool_calls:
        out.append(
            f"tools: {record.tool_calls} calls, ok {rate_text(record.tool_success)}, "
            f"{record.tool_timeouts} time-outs, {record.tool_failed} failed; "
            f"median {_ms(record.tool_ms.median)}, p90 {_ms(record.tool_ms.p90)}"
        )
    else:
        out.append("tools: none called")
    pe, ps = record.per_exchange, record.per_session
    if pe:
        out.append(
            f"per exchange: tokens {_spread(pe['tokens'])}; turns {_spread(pe['turns'])}; "
            f"money {_spread(pe['cost_usd'], True)}"
        )
        out.append(
            f"per session (so far): tokens {_spread(ps['tokens'])}; "
            f"turns {_spread(ps['turns'])}; money {_spread(ps['cost_usd'], True)}"
        )
    if record.models:
        models = ", ".join(f"{m} ({n})" for m, n in record.models.most_common())
        out.append(f"models that answered (exchanges, fallbacks included): {models}")
    votes = f"👍 {record.up} 👎 {record.down}"
    approval = f" = {rate_text(record.approval)} 👍" if record.up + record.down else ""
    out.append(
        f"people's verdicts (one per person per session): {votes}{approval}; "
        f"insiders apart (room admins, the owner): 👍 {record.insider_up} "
        f"👎 {record.insider_down}"
    )
    if record.diversity is not None:
        flag = "⚠ " if record.diversity.flagged else ""
        pairs = f" ({record.diversity.pairs} pairs)" if record.diversity.pairs else ""
        out.append(f"diversity: {flag}{record.diversity.note}{pairs}")
    for judge, rate in sorted(record.challenge.items()):
        out.append(f"challenged the person (judged by {judge}): {rate_text(rate)}")
    if record.skipped_v1:
        out.append(f"({record.skipped_v1} older sessions in receipts format v1 not counted)")
    return out


def summary(record: Record) -> str:
    """One line for a card or a listing: what a person choosing a recipe looks at first."""
    if not record.sessions:
        return "no track record yet"
    parts = [f"{record.completion.value or 0:.0%} of {record.exchanges} exchanges completed"]
    if record.up + record.down:
        parts.append(f"👍 {record.up} 👎 {record.down}")
    median = record.per_exchange.get("cost_usd")
    if median is not None and median.median:
        parts.append(f"{_amount(median.median, True)}/exchange")
    if record.diversity is not None and record.diversity.flagged:
        parts.append("⚠ ends alike")
    return " · ".join(parts)


def table(rows: list[Row], a: str, b: str) -> list[str]:
    width = max([len(r.figure) for r in rows] + [6])
    left = max([len(r.a) for r in rows] + [len(a)])
    right = max([len(r.b) for r in rows] + [len(b)])
    out = [f"{'':<{width}}  {a:<{left}}  {b:<{right}}"]
    for row in rows:
        verdict = f"  {row.verdict}" if row.verdict else ""
        out.append(f"{row.figure:<{width}}  {row.a:<{left}}  {row.b:<{right}}{verdict}")
    return out
