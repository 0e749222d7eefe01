"""The conductor: runs a recipe's protocol in a room, turn by turn, within its limits.

Limits are enforced here, in code, not asked of the models: turns, rounds, the session's
token and cost budget, stop phrases, explicit passes and a loop guard. Cancelling the task
that runs `respond` (`/stop`) cancels the model call in flight.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from dataclasses import dataclass, field
from enum import StrEnum

from .context import Line, build_messages
from .mentions import addressed as _mentions
from .models.client import CallParams, Completion, ModelError, Models
from .recipes import Agent, Recipe
from .tools import (
    MAX_CALLS_PER_REPLY,
    MAX_TOOL_ROUNDS,
    Toolbox,
    ToolCall,
    ToolOutcome,
    instructions_for,
    not_run,
    parse_native_calls,
    parse_text_calls,
    specs_for,
)


@dataclass
class Turn:
    agent: str
    model: str
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    finish: str = "stop"  # stop | length | pass | error
    notes: list[str] = field(default_factory=list)
    tools: list[ToolOutcome] = field(default_factory=list)


@dataclass
class Budget:
    """Spend of one session, checked before every model call."""

    max_tokens: int
    max_cost_usd: float
    tokens: int = 0
    cost_usd: float = 0.0
    by_agent: dict[str, tuple[int, float]] = field(default_factory=dict)

    def exhausted(self) -> str | None:
        if self.tokens >= self.max_tokens:
            return f"the session's token budget ({self.max_tokens}) is spent"
        if self.max_cost_usd and self.cost_usd >= self.max_cost_usd:
            return f"the session's cost budget (${self.max_cost_usd:.2f}) is spent"
        return None

    def add(self, turn: Turn) -> None:
        used = turn.tokens_in + turn.tokens_out
        self.tokens += used
        self.cost_usd += turn.cost_usd
        tokens, cost = self.by_agent.get(turn.agent, (0, 0.0))
        self.by_agent[turn.agent] = (tokens + used, cost + turn.cost_usd)


class Listener:
    """What the conductor tells the room. Override what you need; all are optional."""

    async def turn_started(self, agent: Agent) -> None: ...

    async def turn_text(self, agent: Agent, text: str) -> None: ...

    async def turn_finished(self, agent: Agent, turn: Turn) -> None: ...

    async def tool_result(self, agent: Agent, outcome: ToolOutcome) -> None: ...

    async def note(self, text: str) -> None: ...


class Ending(StrEnum):
    """How an exchange or a session ended: a closed set, so endings can be counted (track
    records) rather than read as free text."""

    COMPLETED = "completed"  # the recipe's own stop condition, or its protocol ran its course
    LIMIT_TURNS = "limit_turns"
    LIMIT_ROUNDS = "limit_rounds"  # rounds ran out while the recipe still waited for a stop phrase
    LIMIT_BUDGET = "limit_budget"  # tokens or cost: the session's, the room's or the person's
    LIMIT_LOOP = "limit_loop"  # the loop guard: the agents were repeating themselves
    STOPPED = "stopped"  # by a person (/stop, a new recipe)
    CUT = "cut"  # a crash or a shutdown
    ERROR = "error"  # no model could answer

    @classmethod
    def parse(cls, value: object) -> Ending:
        """An Ending from its value, or ValueError naming the allowed ones."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(e.value for e in cls)
            raise ValueError(f"{value!r} is not an ending; endings are: {allowed}") from None


@dataclass
class Outcome:
    turns: list[Turn]
    stop_reason: str  # in words, for people
    ending: Ending = Ending.COMPLETED


class _Stop(Exception):
    def __init__(self, reason: str, ending: Ending) -> None:
        self.reason = reason
        self.ending = ending


class Conductor:
    def __init__(
        self,
        recipe: Recipe,
        models: Models,
        budget: Budget | None = None,
        toolbox: Toolbox | None = None,
    ) -> None:
        self.recipe = recipe
        self.models = models
        self.toolbox = toolbox
        self.budget = budget or Budget(recipe.limits.max_tokens, recipe.limits.max_cost_usd)
        self.last_spoke: dict[str, int] = {}
        self._clock = 0

    # -- one turn --------------------------------------------------------------------------

    async def _turn(
        self, agent: Agent, transcript: list[Line], listener: Listener, turns: list[Turn]
    ) -> Turn:
        if reason := self.budget.exhausted():
            raise _Stop(reason, Ending.LIMIT_BUDGET)
        if len(turns) >= self.recipe.protocol.max_turns:
            # checked before a turn, not after one: a protocol ending exactly at the limit
            # completed; only one that wanted another turn was cut short by it
            raise _Stop(f"reached max_turns ({self.recipe.protocol.max_turns})", Ending.LIMIT_TURNS)
        chain = [agent.model, *agent.fallbacks]
        answering = self.models.answering(chain, agent.api_base)
        profile = self.models.profile(answering)
        window = min(self.models.context_window(m) for m in chain)
        tools = list(agent.tools) if self.toolbox is not None else []
        notes: list[str] = []
        if agent.tools and profile.tools is False:
            # measured: the model cannot use them, and instructions for them spoil its answers
            notes.append(
                f"{agent.name}'s tools ({', '.join(agent.tools)}) are unavailable on "
                f"{answering}: it is too small to use them. With a bigger model they work: "
                f"/recipe set agents.{agent.name}.model MODEL"
            )
            tools = []
        native = bool(tools) and all(self.models.supports_tools(m) for m in chain)

        def messages_for(model: str) -> list[dict]:
            return build_messages(
                self.recipe,
                agent,
                transcript,
                window=window,
                count=lambda ms: self.models.count_tokens(model, ms),
                instructions="" if native or not tools else instructions_for(tools),
                profile=self.models.profile(model),
            )

        messages = messages_for(answering)
        await listener.turn_started(agent)
        max_tokens = agent.max_tokens
        if len(self.recipe.agents) > 1 and profile.group_reply_tokens is not None:
            max_tokens = min(max_tokens, profile.group_reply_tokens)  # short turns
        params = CallParams(
            temperature=agent.temperature,
            max_tokens=max_tokens,
            top_p=agent.top_p,
            api_base=agent.api_base,
            min_p=agent.min_p,
            repeat_penalty=agent.repeat_penalty,
        )
        shown: list[str] = []
        tokens_in = tokens_out = 0
        cost = 0.0
        outcomes: list[ToolOutcome] = []
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            prefix = "".join(part + "\n\n" for part in shown)
            try:
                done: Completion = await self.models.complete(
                    chain,
                    messages if round_ else messages_for,
                    params,
                    on_text=lambda text, p=prefix: listener.turn_text(agent, p + text),
                    tools=specs_for(tools) if native else None,
                    on_wait=lambda ahead: listener.note(_waiting(ahead)),
                )
            except ModelError as exc:
                turn = Turn(agent.name, agent.model, "", finish="error", notes=[str(exc)])
                await listener.turn_finished(agent, turn)
                raise _Stop(f"{agent.name} could not answer: {exc}", Ending.ERROR) from None
            tokens_in += done.tokens_in
            tokens_out += done.tokens_out
            cost += done.cost_usd
            notes += [n for n in done.notes if n not in notes]
            if done.text.strip():
                shown.append(done.text.strip())
            calls = (
                parse_native_calls(done.tool_calls)
                if native
                else parse_text_calls(done.text, tools)
                if tools
                else []
            )
            if not calls or self.toolbox is None:
                break
            if round_ == MAX_TOOL_ROUNDS:
                notes.append(f"stopped after {MAX_TOOL_ROUNDS} rounds of tool use")
                break
            results = []
            for index, call in enumerate(calls):
                if index < MAX_CALLS_PER_REPLY:
                    outcome = await self.toolbox.run(call)
                else:
                    outcome = not_run(
                        call, f"only {MAX_CALLS_PER_REPLY} tool calls run from one reply"
                    )
                outcomes.append(outcome)
                results.append(outcome)
                await listener.tool_result(agent, outcome)
            messages = messages + _tool_messages(done.text, calls, results, native)
            if self.budget.tokens + tokens_in + tokens_out >= self.budget.max_tokens:
                notes.append("the token budget ran out during tool use")
                break
        text = "\n\n".join(shown).strip()
        finish = done.finish
        if finish == "length" and self.models.profile(done.model).tiny:
            text = whole_sentences(text)  # a short turn ends where a sentence does
        if (text.startswith(self.recipe.protocol.pass_phrase) or not text) and not outcomes:
            finish = "pass"
        turn = Turn(
            agent.name,
            done.model,
            text,
            tokens_in,
            tokens_out,
            cost,
            finish,
            notes,
            outcomes,
        )
        for outcome in outcomes:
            transcript.append(Line(agent.name, "tool", _tool_line(outcome)))
        self.budget.add(turn)
        self._clock += 1
        self.last_spoke[agent.name] = self._clock
        turns.append(turn)
        if finish != "pass":
            transcript.append(Line(agent.name, "agent", text))
        await listener.turn_finished(agent, turn)
        self._check_after(turn, turns)
        return turn

    def _check_after(self, turn: Turn, turns: list[Turn]) -> None:
        protocol = self.recipe.protocol
        for phrase in protocol.stop_when:
            if turn.finish != "pass" and phrase in turn.text:
                raise _Stop(f"{turn.agent} said {phrase}", Ending.COMPLETED)
        at_limit = len(turns) >= protocol.max_turns  # the next turn's check ends it anyway
        if protocol.loop_guard and turn.finish != "pass" and not at_limit:
            spoken = [t for t in turns[:-1] if t.finish != "pass"]
            earlier = [t.text for t in spoken[-len(self.recipe.agents) :]]
            if any(_similar(turn.text, other) for other in earlier):
                raise _Stop("loop guard: the agents are repeating themselves", Ending.LIMIT_LOOP)

    # -- protocols -------------------------------------------------------------------------

    async def respond(self, transcript: list[Line], listener: Listener | None = None) -> Outcome:
        """Run the protocol on the transcript, whose last line is what triggered it."""
        listener = listener or Listener()
        turns: list[Turn] = []
        kind = self.recipe.protocol.kind
        runner = {
            "round_robin": self._round_robin,
            "moderated": self._moderated,
            "pipeline": self._pipeline,
            "parallel": self._parallel,
            "mention": self._mention,
        }[kind]
        try:
            await runner(transcript, listener, turns)
        except _Stop as stop:
            await listener.note(f"stopped: {stop.reason}")
            return Outcome(turns, stop.reason, stop.ending)
        if self.recipe.protocol.stop_when and kind in ("round_robin", "moderated"):
            # it waited for a stop phrase that never came: the rounds ran out first
            return Outcome(turns, "the rounds ran out", Ending.LIMIT_ROUNDS)
        return Outcome(turns, "done", Ending.COMPLETED)

    async def _round_robin(
        self, transcript: list[Line], listener: Listener, turns: list[Turn]
    ) -> None:
        for _round in range(self.recipe.protocol.max_rounds):
            before = len(turns)
            for agent in self.recipe.agents:
                await self._turn(agent, transcript, listener, turns)
            if all(t.finish == "pass" for t in turns[before:]):
                raise _Stop("every agent passed", Ending.COMPLETED)

    async def _pipeline(
        self, transcript: list[Line], listener: Listener, turns: list[Turn]
    ) -> None:
        """Each agent works on the previous one's output; people's words stay as the brief."""
        people = [line for line in transcript if line.role == "person"][-1:]
        for _round in range(self.recipe.protocol.max_rounds):
            for agent in self.recipe.agents:
                handoff = [line for line in transcript if line.role == "agent"][-1:]
                view = people + handoff
                turn = await self._turn(agent, view, listener, turns)
                if turn.finish != "pass":
                    transcript.append(Line(agent.name, "agent", turn.text))

    async def _parallel(
        self, transcript: list[Line], listener: Listener, turns: list[Turn]
    ) -> None:
        protocol = self.recipe.protocol
        speakers = [a for a in self.recipe.agents if a.name != protocol.synthesizer]
        for _round in range(protocol.max_rounds):
            snapshot = list(transcript)
            results = await asyncio.gather(
                *(self._turn(agent, list(snapshot), listener, turns) for agent in speakers),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, _Stop):
                    raise result
                if isinstance(result, BaseException):
                    raise result
            for turn in results:
                if isinstance(turn, Turn) and turn.finish != "pass":
                    transcript.append(Line(turn.agent, "agent", turn.text))
        if protocol.synthesizer:
            await self._turn(self.recipe.agent(protocol.synthesizer), transcript, listener, turns)

    async def _mention(self, transcript: list[Line], listener: Listener, turns: list[Turn]) -> None:
        names = [a.name for a in self.recipe.agents]
        last = transcript[-1].text if transcript else ""
        addressed = _mentions(last, names)
        if not addressed:
            await listener.note("address an agent by name: " + ", ".join(names))
            return
        for name in addressed:
            await self._turn(self.recipe.agent(name), transcript, listener, turns)

    def _least_recent(self, exclude: str | None = None) -> Agent:
        candidates = [a for a in self.recipe.agents if a.name != exclude] or self.recipe.agents
        return min(candidates, key=lambda a: self.last_spoke.get(a.name, 0))

    async def _pick(self, transcript: list[Line], previous: str | None) -> Agent:
        protocol = self.recipe.protocol
        names = [a.name for a in self.recipe.agents]
        if protocol.moderator == "least-recent":
            return self._least_recent(previous)
        if protocol.moderator == "mentioned-else-least-recent":
            person = [line for line in transcript if line.role == "person"][-1:]
            mentioned = _mentions(person[0].text, names) if person else []
            fresh = [n for n in mentioned if self.last_spoke.get(n, 0) == 0]
            return self.recipe.agent(fresh[0]) if fresh else self._least_recent(previous)
        moderator = self.recipe.agent(protocol.moderator or names[0])
        if reason := self.budget.exhausted():
            raise _Stop(reason, Ending.LIMIT_BUDGET)
        question = Line(
            "conductor",
            "person",
            "Who should speak next? Answer with exactly one name from: " + ", ".join(names),
        )
        messages = build_messages(
            self.recipe,
            moderator,
            [*transcript, question],
            window=self.models.context_window(moderator.model),
            count=lambda ms: self.models.count_tokens(moderator.model, ms),
        )
        try:
            done = await self.models.complete(
                [moderator.model, *moderator.fallbacks],
                messages,
                CallParams(temperature=0.0, max_tokens=12, api_base=moderator.api_base),
            )
        except ModelError:
            return self._least_recent(previous)
        self.budget.add(
            Turn(moderator.name, done.model, "", done.tokens_in, done.tokens_out, done.cost_usd)
        )
        chosen = _mentions(done.text, names)
        choice = next((n for n in chosen if n != previous), None)
        return self.recipe.agent(choice) if choice else self._least_recent(previous)

    async def _moderated(
        self, transcript: list[Line], listener: Listener, turns: list[Turn]
    ) -> None:
        protocol = self.recipe.protocol
        limit = min(protocol.max_turns, protocol.max_rounds * len(self.recipe.agents))
        previous: str | None = None
        while len(turns) < limit:
            speakers = [a for a in self.recipe.agents if a.name != protocol.synthesizer]
            agent = await self._pick(transcript, previous)
            if agent.name == protocol.synthesizer and len(speakers) > 0:
                agent = min(speakers, key=lambda a: self.last_spoke.get(a.name, 0))
            await self._turn(agent, transcript, listener, turns)
            previous = agent.name
            if protocol.synthesizer and len(turns) >= limit - 1:
                break
        if protocol.synthesizer:
            await self._turn(self.recipe.agent(protocol.synthesizer), transcript, listener, turns)


def whole_sentences(text: str) -> str:
    """Text cut off by the token cap, ended at its last finished sentence (outside a code
    block); unchanged when there is none to end at. Pure."""
    if text.count("```") % 2:  # inside an open code block: close it instead
        return text.rstrip() + "\n```"
    cut = max(text.rfind(mark) for mark in (". ", "! ", "? ", ".\n", "!\n", "?\n"))
    if text.rstrip().endswith((".", "!", "?", "```")):
        return text.rstrip()
    return text[: cut + 1].rstrip() if cut > len(text) // 3 else text.rstrip() + " …"


def _waiting(ahead: int) -> str:
    return (
        "the embedded model is answering other rooms; this one is next in line"
        if ahead <= 1
        else f"the embedded model is answering other rooms; {ahead - 1} ahead of this one"
    )


def _similar(a: str, b: str) -> bool:
    a, b = " ".join(a.lower().split()), " ".join(b.lower().split())
    if not a or not b:
        return False
    if a == b:
        return True
    return (
        len(a) > 20
        and difflib.SequenceMatcher(None, a, b).quick_ratio() > 0.95
        and difflib.SequenceMatcher(None, a, b).ratio() > 0.9
    )


def _tool_messages(
    text: str, calls: list[ToolCall], results: list[ToolOutcome], native: bool
) -> list[dict]:
    """What the model is shown after its tool calls, in the form it asked in."""
    if native:
        ids = [call.id or f"call_{n}" for n, call in enumerate(calls)]
        return [
            {
                "role": "assistant",
                "content": text or None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                    for call_id, call in zip(ids, calls, strict=True)
                ],
            },
            *(
                {"role": "tool", "tool_call_id": call_id, "content": result.text}
                for call_id, result in zip(ids, results, strict=True)
            ),
        ]
    shown = "\n\n".join(f"$ {r.command}\n{r.text}" for r in results)
    return [
        {"role": "assistant", "content": text},
        {"role": "user", "content": f"(tool output)\n{shown}\n(continue your answer)"},
    ]


def _tool_line(outcome: ToolOutcome) -> str:
    first = outcome.text.splitlines()[0] if outcome.text else ""
    return f"{outcome.command} → {first}"[:500]
