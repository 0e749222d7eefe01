"""Review 2: the install's session ceiling as configured ([budgets] session_usd/_tokens).

Finding C1 — severity LOW (a ceiling silently switched off; owner-side input).
Attack: `_session_ceiling` parses with `float()` and refuses only `value <= 0`. "nan" passes
(every comparison with NaN is false), so `session_usd = "nan"` is accepted; then
`session_limits(…, max_cost_usd=0, …)` gives a session cost limit of NaN and
`Budget.exhausted` (`cost_usd >= nan`) is never true: a recipe asking for "no cost limit"
gets none. "inf" is accepted for session_usd the same way, and for session_tokens
`int(float("inf"))` raises a bare OverflowError instead of the ConfigError that says what
was wrong. A typo'd or templated env var (POTLUCK_BUDGET_SESSION_USD=nan) is enough.
What the attacker gets: a stranger's recipe with `max_cost_usd: 0` runs without any cost
ceiling on an install whose owner believes one applies.
Smallest fix: `if not math.isfinite(value) or value <= 0: raise ConfigError(...)`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("key", "value"),
    [("SESSION_USD", "nan"), ("SESSION_USD", "inf"), ("SESSION_TOKENS", "inf")],
)
def test_a_ceiling_that_is_not_a_finite_number_is_refused(
    tmp_path: Path, key: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=key.lower()):
        load_config(env={"POTLUCK_HOME": str(tmp_path), f"POTLUCK_BUDGET_{key}": value})
