"""The one way a person's words become the agents' signed answers.

`potluck serve` rooms, `potluck chat`, `potluck run` and scheduled runs all go through an
`Exchange`: it opens or continues a session on a recipe version, signs the person's message
into the session's chain, runs the conductor, and commits each agent turn together with its
spend row and its receipt. What the room should see goes forward to an `Outlet`; nothing
here calls back into whoever asked.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from runtime.conductor import Budget, Conductor, Ending, Listener, Outcome, Turn
from runtime.context import Line
from runtime.models.client import Models
from runtime.recipes import Agent
from runtime.tools import SandboxToolbox, ToolOutcome

from .budgets import Budgets, RoomBudget, session_limits
from .commands import is_command
from .library import Library, Saved
from .outlet import Outlet
from .receipts.ledger import Ledger
from .receipts.nostr import Event
from .store.db import Store
from .store.messages import Messages
from .store.models import now
from .store.rooms import attach, end_session, room_recipe, start_session

log = logging.getLogger("potluck.exchange")

TRANSCRIPT_LINES = 500  # kept in memory per session; the context trims further by tokens
# Why an exchange was cancelled (the room passes these as the cancellation's message).
STOPPED = "stopped by /stop"
SHUT_DOWN = "stopped: the gateway is shutting down; ask again once it is back"
QUIET_NOTES = ("stopped: reached max_turns",)  # a recipe's normal end needs no notice


@dataclass
class Conversation:
    """A session: the recipe version it runs, what has been said (the agents' context), what
    it has spent, and whose message the agents are answering (for period budgets)."""

    session_id: str
    saved: Saved
    transcript: list[Line]
    budget: Budget
    asker: str = ""  # platform:user
    told: set[str] = field(default_factory=set)  # model notes the room has already heard


@dataclass(frozen=True)
class Said:
    """A person's message, as the exchange takes it."""

    user: str  # platform:user: the receipt's pseudonym and the person's budget
    name: str  # as the transcript shows it
    text: str
    event_id: str | None = None  # the stored message it is (joins it to the session)


class Exchange:
    def __init__(
        self,
        store: Store,
        library: Library,
        ledger: Ledger,
        models: Models,
        budgets: Budgets,
        sandboxes: Any = None,
        default_recipe: str = "solo",
    ) -> None:
        self.store = store
        self.library = library
        self.ledger = ledger
        self.models = models
        self.budgets = budgets
        self.sandboxes = sandboxes
        self.default_recipe = default_recipe
        self.messages = Messages(store)
        self.turns = 0  # for /metrics

    # -- sessions --------------------------------------------------------------------------

    def _budget(self, saved: Saved, room_id: int, conversation: Conversation | None) -> Budget:
        limits = saved.recipe.limits
        tokens, usd = session_limits(limits.max_tokens, limits.max_cost_usd, self.budgets.ceiling)
        # a session continued (after a restart, or a room rebuilt) keeps what it has spent
        spent = self.budgets.of_session(conversation.session_id) if conversation else None
        return RoomBudget(
            tokens,
            usd,
            tokens=spent.tokens if spent else 0,
            cost_usd=spent.cost_usd if spent else 0.0,
            period=lambda: self.budgets.check(
                room_id, conversation.asker if conversation else "", now()
            ),
        )

    def open(self, room_id: int, saved: Saved, *, live: bool = True) -> Conversation:
        """A new session on `saved` (a room's live one, or a side session such as a
        scheduled run, which leaves the room's own alone)."""
        session_id = start_session(self.store, room_id, saved.id, live=live)
        self.ledger.open(session_id, saved.recipe.name, saved.id)
        conversation = Conversation(session_id, saved, [], Budget(0, 0.0))
        conversation.budget = self._budget(saved, room_id, conversation)
        return conversation

    def current(self, room_id: int) -> Conversation:
        """The room's conversation: its live session continued (context read back from the
        store), or a new one on its attached recipe, attaching the default if it has none."""
        version, live = room_recipe(self.store, room_id)
        saved = self.library.get(version) if version else None
        if saved is None:
            saved = self.library.get(self.default_recipe)
            attach(self.store, room_id, saved.id)
        if live is None or live.recipe_version_id != saved.id:
            return self.open(room_id, saved)
        conversation = Conversation(live.id, saved, self._transcript(live.id), Budget(0, 0.0))
        conversation.budget = self._budget(saved, room_id, conversation)
        return conversation

    def switch(
        self, room_id: int, old: Conversation | None, saved: Saved, detail: str
    ) -> Conversation:
        """Attach another version to the room: its session ends (stopped by a person), a new
        one begins."""
        attach(self.store, room_id, saved.id)
        if old is not None:
            self.close(old, Ending.STOPPED, detail)
        return self.open(room_id, saved)

    def close(self, conversation: Conversation, ending: Ending, detail: str = "") -> None:
        self.ledger.close(conversation.session_id, ending, detail)
        end_session(self.store, conversation.session_id)

    def _transcript(self, session_id: str) -> list[Line]:
        lines = []
        for row in self.messages.of_session(session_id):
            if row.direction == "out":
                lines.append(Line(row.sender, "agent", row.text))
            elif not is_command(row.text):
                lines.append(Line(row.sender, "person", row.text))
        return lines[-TRANSCRIPT_LINES:]

    # -- one exchange ----------------------------------------------------------------------

    def hear(self, room_id: int, conversation: Conversation, said: Said, *, answer: bool) -> Event:
        """The person's message joins the session and its chain (one commit), and the
        transcript: as an instruction when the agents will answer it, else as context."""
        with self.ledger.batch() as conn:
            if said.event_id is not None:
                self.messages.join_session(conn, room_id, said.event_id, conversation.session_id)
            signed = self.ledger.person(conversation.session_id, said.user, said.text)
        conversation.transcript.append(
            Line(said.name, "person" if answer else "observed", said.text)
        )
        del conversation.transcript[:-TRANSCRIPT_LINES]  # months of chat: the store keeps it all
        if answer:
            conversation.asker = said.user
        return signed

    async def answer(
        self, room_id: int, room_key: str, conversation: Conversation, outlet: Outlet
    ) -> Outcome:
        """The agents answer the transcript's last line; each turn is committed as it ends.
        Cancelled (by /stop or a shutdown), the turn in progress is cut off in the open and
        the exchange's ending recorded before the cancellation goes on."""
        recipe = conversation.saved.recipe
        toolbox = None
        if self.sandboxes is not None and any(a.tools for a in recipe.agents):
            toolbox = SandboxToolbox(self.sandboxes, room_key, recipe.sandbox)
        conductor = Conductor(recipe, self.models, conversation.budget, toolbox)
        recorder = _Recorder(self, room_id, conversation, outlet)
        try:
            outcome = await conductor.respond(conversation.transcript, recorder)
        except asyncio.CancelledError as cancelled:
            why = str(cancelled.args[0]) if cancelled.args else STOPPED
            ending = Ending.CUT if why == SHUT_DOWN else Ending.STOPPED
            await outlet.cut(why)
            self.ledger.end_exchange(conversation.session_id, ending, why)
            raise
        self.ledger.end_exchange(conversation.session_id, outcome.ending, outcome.stop_reason)
        return outcome

    def commit(self, room_id: int, conversation: Conversation, turn: Turn) -> Event:
        """An agent's finished turn: its message, its spend row and its signed receipt, in
        one commit."""
        session_id = conversation.session_id
        with self.ledger.batch() as conn:
            self.messages.record_agent(conn, room_id, session_id, turn.agent, turn.text)
            self.budgets.record(conn, room_id, session_id, conversation.asker, turn)
            return self.ledger.record_turn(session_id, turn)


class _Recorder(Listener):
    """The conductor's listener for one exchange: commits what the conductor reports and
    passes on what the room should see."""

    def __init__(
        self, exchange: Exchange, room_id: int, conversation: Conversation, outlet: Outlet
    ) -> None:
        self.exchange = exchange
        self.room_id = room_id
        self.conversation = conversation
        self.outlet = outlet

    async def turn_started(self, agent: Agent) -> None:
        await self.outlet.turn_started(agent.name)

    async def turn_text(self, agent: Agent, text: str) -> None:
        await self.outlet.turn_text(agent.name, text)

    async def turn_finished(self, agent: Agent, turn: Turn) -> None:
        if turn.finish == "error":
            text = f"(could not answer: {turn.notes[-1]})"
        elif turn.finish == "pass":
            text = "(passes)"
        else:
            text = turn.text
        receipt = None
        if turn.finish != "error":  # nothing was said: nothing to sign
            receipt = self.exchange.commit(self.room_id, self.conversation, turn)
            self.exchange.turns += 1
        await self.outlet.turn_finished(agent.name, text, turn, receipt)
        fresh = [n for n in turn.notes if n not in self.conversation.told]
        if fresh and turn.finish != "error":  # e.g. a model ran without a key, and why
            self.conversation.told.update(fresh)
            await self.outlet.notice("(" + "; ".join(fresh) + ")")

    async def tool_result(self, agent: Agent, outcome: ToolOutcome) -> None:
        self.exchange.ledger.record_tool(self.conversation.session_id, agent.name, outcome)
        await self.outlet.tool_result(agent.name, outcome)

    async def note(self, text: str) -> None:
        if not text.startswith(QUIET_NOTES):
            await self.outlet.notice(f"({text})")
