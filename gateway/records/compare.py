"""Two track records side by side, and whether each difference is more than noise. Pure.

Rates (completion, tool success, people's approval, challenge) are compared by Newcombe's
interval for a difference of proportions; per-exchange spreads (tokens, turns, money) by the
Mann–Whitney U test (stats.py). A difference too small to tell from chance is said to be so,
and so is a comparison with too few observations on either side.
"""

from __future__ import annotations

from dataclasses import dataclass

from .figures import Record
from .stats import Difference, Rate, compare_rates, compare_spreads


@dataclass(frozen=True)
class Row:
    """One figure of two records: its name, each side as shown, and the verdict."""

    figure: str
    a: str
    b: str
    difference: Difference | None  # None: shown, not compared (counts, notes)

    @property
    def verdict(self) -> str:
        if self.difference is None:
            return ""
        if self.difference.more_than_noise is None:
            return self.difference.detail
        head = "more than noise" if self.difference.more_than_noise else "within noise"
        return f"{head}: {self.difference.detail}"

    def to_dict(self) -> dict[str, object]:
        return {
            "figure": self.figure,
            "a": self.a,
            "b": self.b,
            "more_than_noise": None if self.difference is None else self.difference.more_than_noise,
            "verdict": self.verdict,
        }


def rate_text(rate: Rate) -> str:
    if not rate.n:
        return "–"
    low, high = rate.interval
    return f"{rate.value:.0%} of {rate.n} ({low:.0%}–{high:.0%})"


def _median(values: list[float], money: bool = False) -> str:
    if not values:
        return "–"
    ordered = sorted(values)
    middle = len(ordered) // 2
    value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return f"${value:.4f}" if money else f"{value:,.0f}" if value >= 10 else f"{value:g}"


def compare(a: Record, b: Record) -> list[Row]:
    """The figures a person choosing between two recipes (or versions) looks at."""
    rows = [
        Row("sessions", str(a.sessions), str(b.sessions), None),
        Row("exchanges", str(a.exchanges), str(b.exchanges), None),
        Row(
            "completed",
            rate_text(a.completion),
            rate_text(b.completion),
            compare_rates(a.completion, b.completion),
        ),
    ]
    for name, money in (("tokens", False), ("turns", False), ("cost_usd", True)):
        left, right = a.samples.get(name, []), b.samples.get(name, [])
        label = "money" if money else name
        rows.append(
            Row(
                f"{label} per exchange (median)",
                _median(left, money),
                _median(right, money),
                compare_spreads(left, right),
            )
        )
    rows.append(
        Row(
            "tool success",
            rate_text(a.tool_success),
            rate_text(b.tool_success),
            compare_rates(a.tool_success, b.tool_success),
        )
    )
    rows.append(
        Row(
            "people's 👍 (of their votes)",
            rate_text(a.approval),
            rate_text(b.approval),
            compare_rates(a.approval, b.approval),
        )
    )
    for judge in sorted(set(a.challenge) & set(b.challenge)):
        rows.append(
            Row(
                f"challenged ({judge})",
                rate_text(a.challenge[judge]),
                rate_text(b.challenge[judge]),
                compare_rates(a.challenge[judge], b.challenge[judge]),
            )
        )
    da, db = a.diversity, b.diversity
    rows.append(
        Row(
            "final turns alike",
            _alike(da),
            _alike(db),
            None,
        )
    )
    return rows


def _alike(diversity) -> str:  # type: ignore[no-untyped-def]
    if diversity is None or diversity.mean is None:
        return "–"
    flag = " ⚠ ends alike" if diversity.flagged else ""
    return f"{diversity.mean:.0%}{flag}"
