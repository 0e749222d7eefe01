"""Review 2: the session spend ceiling ([budgets] session_tokens / session_usd).

Finding B1 — severity MEDIUM (spend control bypass).
Attack: a session's spend is only counted in memory. `Exchange.current()` continues a room's
live session after a restart (or any rebuild of `room.conversation`) with a fresh
`RoomBudget(tokens, usd)` whose `tokens`/`cost_usd` start at 0, although the session's spend
rows are in the store. A session that has spent its ceiling is therefore given the whole
ceiling again by every restart of the gateway (a crash, an update, a supervisor's restart on
a health failure), with no new session and no admin command.
What the attacker gets: any room member keeps the same session talking past the install's
per-session ceiling, N restarts × the ceiling; with no [budgets] period limits configured
(the default) nothing else bounds it.
Smallest fix: in `Exchange._budget` (or `current()`), seed the budget with what the session
has already spent: `SELECT sum(tokens), sum(cost_usd) FROM spend WHERE session_id = :id`
(the rows `Budgets.record` writes), e.g. `RoomBudget(tokens, usd, tokens=spent.tokens,
cost_usd=spent.cost_usd, ...)`.
"""

from __future__ import annotations

from pathlib import Path

from adapters.base import Incoming
from gateway.config import load_config
from gateway.library import Library
from gateway.receipts.keys import KeyPair
from gateway.receipts.ledger import Ledger
from gateway.service import Gateway
from gateway.store.db import Store
from runtime.models.client import Models
from runtime.recipes import validate_data

from .support import ECHO, MemoryPlatform, said, settle


async def test_a_restart_does_not_refill_a_spent_session(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    config = load_config(
        env={
            "POTLUCK_HOME": str(tmp_path),
            "POTLUCK_ALLOWED_ROOMS": "mem:*",
            "POTLUCK_BUDGET_SESSION_TOKENS": "120",
        }
    )
    library = Library(store)
    library.save(validate_data({**ECHO, "trigger": "every_message"}))
    keys = KeyPair.generate()

    async def talk(prefix: str, n: int) -> tuple[int, list[str]]:
        """A gateway started on the same store (a restart), and n messages in room r1."""
        gw = Gateway(
            config, store, library, Ledger(store, keys), Models(), default_recipe="echo-room"
        )
        platform = MemoryPlatform()
        await gw.add_adapter(platform)
        try:
            for k in range(n):
                await platform.on_incoming(
                    Incoming("mem", "r1", "bob", "bob", f"{prefix} {k}", f"{prefix}{k}")
                )
            await settle(gw)
        finally:
            await gw.close()
        texts = said(platform)
        return sum(t.startswith("echo:") for t in texts), texts

    answered, texts = await talk("a", 12)
    assert any("the session's token budget (120) is spent" in t for t in texts), texts
    assert 0 < answered < 12
    for restart in range(2):
        again, texts = await talk(f"r{restart}x", 4)
        assert again == 0, (
            f"restart {restart + 1}: the same session answered {again} more messages after "
            f"spending its 120-token ceiling: {texts}"
        )
