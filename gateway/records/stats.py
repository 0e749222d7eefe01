"""The statistics a track record needs, small enough to read in one sitting. Pure.

Rates carry a Wilson score interval (95%), which behaves at 0/n and n/n and for small n,
where the textbook "p ± 1.96·SE" interval claims certainty it does not have. Spreads are a
median and a 90th percentile (nearest rank: a value that was actually seen). Comparisons say
whether a difference is more than noise: rates by Newcombe's interval for a difference of
two proportions (it excludes zero, or it does not), spreads by the Mann–Whitney U test
(two-sided, normal approximation with tie and continuity corrections, p < 0.05).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
MIN_COMPARE = 5  # fewer observations on either side: too few to tell


@dataclass(frozen=True)
class Rate:
    """k of n, with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_dict(self) -> dict[str, object]:
        low, high = self.interval
        value = self.value
        return {
            "k": self.k,
            "n": self.n,
            "rate": None if value is None else round(value, 6),
            "low": round(low, 6),
            "high": round(high, 6),
        }


@dataclass(frozen=True)
class Spread:
    """A distribution in two numbers (and how many values it summarises)."""

    n: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(0, None, None)
        ordered = sorted(values)
        return cls(len(ordered), median_sorted(ordered), percentile_sorted(ordered, 0.9))

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "median": _round(self.median), "p90": _round(self.p90)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 8)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0/n and n/n the bound is exactly 0 or 1; floating point would miss it by an ulp
    low = 0.0 if k <= 0 else max(0.0, centre - half)
    high = 1.0 if k >= n else min(1.0, centre + half)
    return low, high


def median_sorted(values: Sequence[float]) -> float:
    n = len(values)
    middle = n // 2
    return float(values[middle]) if n % 2 else (values[middle - 1] + values[middle]) / 2


def percentile_sorted(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    rank = max(1, math.ceil(q * len(values)))
    return float(values[rank - 1])


@dataclass(frozen=True)
class Difference:
    """How two figures differ, and whether the difference is more than noise."""

    a: float | None
    b: float | None
    more_than_noise: bool | None  # None: too few observations to tell
    detail: str


def compare_rates(a: Rate, b: Rate) -> Difference:
    """Newcombe's hybrid score interval (his method 10) for the difference of two rates:
    more than noise when its 95% interval excludes zero."""
    if a.n < MIN_COMPARE or b.n < MIN_COMPARE:
        return Difference(a.value, b.value, None, f"too few to tell (n={a.n} and n={b.n})")
    p1, p2 = a.k / a.n, b.k / b.n
    l1, u1 = a.interval
    l2, u2 = b.interval
    delta = p1 - p2
    low = delta - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = delta + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    beyond = low > 0 or high < 0
    return Difference(
        p1,
        p2,
        beyond,
        f"difference {delta:+.1%} (95% interval {low:+.1%} to {high:+.1%})",
    )


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test, by the normal approximation with the
    tie correction and a continuity correction."""
    n1, n2 = len(a), len(b)
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks_a = 0.0
    ties = 0.0
    index = 0
    total = n1 + n2
    while index < total:
        end = index
        while end + 1 < total and pooled[end + 1][0] == pooled[index][0]:
            end += 1
        count = end - index + 1
        rank = (index + end + 2) / 2  # ranks are 1-based; tied values share their mean
        ranks_a += rank * sum(1 for j in range(index, end + 1) if pooled[j][1] == 0)
        ties += count**3 - count
        index = end + 1
    u = ranks_a - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0  # every value the same: nothing tells them apart
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def compare_spreads(a: Sequence[float], b: Sequence[float], unit: str = "") -> Difference:
    """Medians side by side; more than noise when Mann–Whitney says p < 0.05."""
    ma = median_sorted(sorted(a)) if a else None
    mb = median_sorted(sorted(b)) if b else None
    if len(a) < MIN_COMPARE or len(b) < MIN_COMPARE:
        return Difference(ma, mb, None, f"too few to tell (n={len(a)} and n={len(b)})")
    p = mann_whitney_p(a, b)
    return Difference(ma, mb, p < 0.05, f"Mann–Whitney p = {p:.3g}{unit}")
