"""Outcome diversity: how alike the final turns of different sessions are. Pure.

Each exchange's final agent turn is cut into shingles (overlapping pairs of words from the
last TAIL characters of its lower-cased text, punctuation set apart: how it ends) and two
turns are as alike as their shingle sets overlap (Jaccard similarity: 0 nothing shared, 1
the same words in the same order). Only turns of *different*
sessions are compared, so a long session repeating itself in one room is not mistaken for
a recipe that ends every conversation the same way.

Comparing every pair is quadratic; a record compares at most MAX_PAIRS pairs, drawn by a
generator seeded from the turns' sessions, so anyone recomputing from the same turns draws
the same pairs and gets the same figure. A recipe is flagged when its turns, on average,
share most of their text (MEAN_FLAG), however people voted: a conversation partner that
always ends the same way is a strawman.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

TAIL = 300  # characters of a turn's end that are compared
MAX_PAIRS = 500
MIN_TURNS = 4  # final turns (from at least two sessions) before a figure means anything
MEAN_FLAG = 0.6  # mean similarity at or above which the recipe is flagged
ALIKE = 0.8  # a pair this similar counts as "the same ending"


_WORD = re.compile(r"\w+|[^\w\s]")


def shingles(text: str) -> frozenset[str]:
    words = _WORD.findall(text[-TAIL:].lower())
    if len(words) < 2:
        return frozenset(words)
    return frozenset(map(" ".join, itertools.pairwise(words)))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    union = len(a | b)
    return len(a & b) / union if union else 0.0


@dataclass(frozen=True)
class Diversity:
    """How alike the final turns of different sessions are."""

    turns: int  # final turns with known text
    sessions: int  # sessions they come from
    pairs: int  # pairs compared
    mean: float | None  # mean similarity of the pairs (0..1)
    alike: float | None  # share of pairs at least ALIKE similar
    flagged: bool
    note: str

    def to_dict(self) -> dict[str, object]:
        return {
            "turns": self.turns,
            "sessions": self.sessions,
            "pairs": self.pairs,
            "mean": None if self.mean is None else round(self.mean, 6),
            "alike": None if self.alike is None else round(self.alike, 6),
            "flagged": self.flagged,
            "note": self.note,
        }


def diversity(finals: Sequence[tuple[str, str]]) -> Diversity:
    """`finals`: (session id, final turn text) of each exchange, in a stable order (by
    session, then place in the session)."""
    sessions = {session for session, _ in finals}
    if len(finals) < MIN_TURNS or len(sessions) < 2:
        return Diversity(
            len(finals),
            len(sessions),
            0,
            None,
            None,
            False,
            f"too few final turns to compare ({len(finals)} from {len(sessions)} sessions; "
            f"needs {MIN_TURNS} from 2)",
        )
    pairs = _pairs(finals)
    cache: dict[int, frozenset[str]] = {}

    def cut(index: int) -> frozenset[str]:
        found = cache.get(index)
        if found is None:
            found = cache[index] = shingles(finals[index][1])
        return found

    scores = [jaccard(cut(i), cut(j)) for i, j in pairs]
    mean = sum(scores) / len(scores)
    alike = sum(1 for s in scores if s >= ALIKE) / len(scores)
    flagged = mean >= MEAN_FLAG
    note = (
        f"its sessions end alike: final turns share {mean:.0%} of their text on average"
        if flagged
        else f"final turns share {mean:.0%} of their text on average"
    )
    return Diversity(len(finals), len(sessions), len(scores), mean, alike, flagged, note)


def _pairs(finals: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """Every cross-session pair when there are few; else MAX_PAIRS drawn with a seed taken
    from the turns (so the same turns always give the same pairs)."""
    n = len(finals)
    if n * (n - 1) // 2 <= MAX_PAIRS:
        return [(i, j) for i in range(n) for j in range(i + 1, n) if finals[i][0] != finals[j][0]]
    seed = hashlib.sha256("\n".join(session for session, _ in finals).encode()).digest()
    draw = random.Random(seed)
    out: list[tuple[int, int]] = []
    tries = 0
    while len(out) < MAX_PAIRS and tries < MAX_PAIRS * 20:
        tries += 1
        i, j = draw.randrange(n), draw.randrange(n)
        if finals[i][0] != finals[j][0]:
            out.append((i, j))
    return out
