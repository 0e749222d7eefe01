"""`potluck run`, `potluck chat` and `potluck serve`: the conversations themselves."""

from __future__ import annotations

import sys
from typing import Any

import click

from .app import Context, _fail, _resolve, cli, pass_context
from .output import one_line, say

# -- run: the terminal front door ----------------------------------------------------------


def _rgb(colour: str | None) -> tuple[int, int, int] | None:
    if not colour:
        return None
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


class TerminalOutlet:
    """`potluck run`'s outlet: each turn printed as it streams, with what it cost."""

    def __init__(self, colours: dict[str, str | None]) -> None:
        self.colours = colours
        self.shown = ""

    async def notice(self, text: str, **_: object) -> None:
        say(text, fg="yellow")

    async def turn_started(self, agent: str) -> None:
        self.shown = ""
        say(f"{one_line(agent)} ", fg=_rgb(self.colours.get(agent)), bold=True, nl=False)

    async def turn_text(self, agent: str, text: str) -> None:
        if text.startswith(self.shown):  # model output is hostile: shown, never obeyed
            say(text[len(self.shown) :], nl=False)
        else:  # a retry replaced the text
            say("\n  " + text, nl=False)
        self.shown = text

    async def turn_finished(self, agent: str, text: str, turn: Any, receipt: Any) -> None:
        if turn.finish == "pass":
            click.secho("(passes)", dim=True, nl=False)
        elif turn.finish == "error":
            say(text, nl=False)
        click.secho(
            f"\n  [{turn.model} · {turn.tokens_in}+{turn.tokens_out} tokens · "
            f"${turn.cost_usd:.4f}]",
            dim=True,
        )
        click.echo()

    async def tool_result(self, agent: str, outcome: Any) -> None:
        say(f"\n  $ {outcome.command}", fg="cyan")
        for line in outcome.text.splitlines()[:12]:  # what a sandboxed process printed
            say(f"    {line}", dim=True)

    async def cut(self, reason: str) -> None:
        say(f"\n[{reason}]", fg="yellow")

    async def badge(self, message_id: str | None, receipt: Any) -> None:
        """The terminal shows the chain's verdict at the end instead."""


@cli.command("run")
@click.argument("ref")
@click.argument("message")
@click.option("--as", "speaker", default="you", help="Your name in the transcript.")
@pass_context
def run(context: Context, ref: str, message: str, speaker: str) -> None:
    """Run a whole conversation of RECIPE on MESSAGE in the terminal, with receipts."""
    import asyncio
    import getpass
    import time

    from runtime.conductor import Ending
    from runtime.models.local import MODELS

    from ..budgets import Budgets
    from ..exchange import Exchange, Said
    from ..sandboxes import open_sandboxes
    from ..serve import open_ledger, open_models
    from ..store.rooms import ensure_room

    saved = _resolve(context, ref)
    if saved.origin == "file":
        saved = context.library.keep(saved.recipe, "import")
    config = context.config
    if not config.key_file.exists():
        _fail("no gateway key yet: run `potluck init` first")
    store = context.library.store
    recipe = saved.recipe
    user = getpass.getuser()
    room_key = f"terminal:{user}"
    say(f"{saved.ref} · {one_line(recipe.title)} · {recipe.protocol.kind}", bold=True)
    if any(m.startswith("local/") for a in recipe.agents for m in [a.model, *a.fallbacks]):
        click.secho("note: " + MODELS["smollm2-135m"].note, dim=True)
    say(f"{one_line(speaker)}: {message}\n")
    outlet = TerminalOutlet({a.name: a.color for a in recipe.agents})
    started = time.monotonic()

    async def converse():  # type: ignore[no-untyped-def]
        sandboxes = None
        if any(agent.tools for agent in recipe.agents):
            sandboxes = await open_sandboxes(config)
            if sandboxes is None:
                click.secho(
                    "note: no Docker engine answers, so agents run without their tools "
                    "(start one with deploy/engine.sh)",
                    fg="yellow",
                )
        exchange = Exchange(
            store,
            context.library,
            open_ledger(config, store),
            open_models(config),
            Budgets(store, config.budgets, config.session_ceiling),
            sandboxes,
        )
        room_id = ensure_room(store, "terminal", user, "terminal")
        conversation = exchange.open(room_id, saved)
        exchange.hear(room_id, conversation, Said(room_key, speaker, message), answer=True)
        try:
            outcome = await exchange.answer(room_id, room_key, conversation, outlet)
        except asyncio.CancelledError:  # Ctrl-C: stopped by the person
            exchange.close(conversation, Ending.STOPPED, "interrupted")
            raise
        finally:
            if sandboxes is not None:
                await sandboxes.close()
        exchange.close(conversation, outcome.ending, outcome.stop_reason)
        return exchange, conversation, outcome

    try:
        exchange, conversation, outcome = asyncio.run(converse())
    except KeyboardInterrupt:
        click.secho("\nstopped", fg="yellow")
        sys.exit(130)
    elapsed = time.monotonic() - started
    report = exchange.ledger.verify_session(conversation.session_id)
    budget = conversation.budget
    spoken = [t for t in outcome.turns if t.finish != "pass"]
    click.secho(
        f"{len(spoken)} turns · {budget.tokens} tokens · ${budget.cost_usd:.4f} · {elapsed:.1f}s"
        f" · {outcome.ending}",
        bold=True,
    )
    for agent, (tokens, cost) in budget.by_agent.items():
        click.echo(f"  {agent}: {tokens} tokens, ${cost:.4f}")
    click.echo(
        f"receipts: {report.checked} signed events, "
        + ("chain verified" if report.ok else f"{len(report.problems)} problems")
        + f" · session {conversation.session_id}"
    )


@cli.command("serve")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@pass_context
def serve_command(context: Context, verbose: bool) -> None:
    """Run the gateway: the configured chat platforms, rooms, agents, sandboxes, receipts."""
    import asyncio

    from .. import logs
    from ..serve import serve

    logs.setup(context.config, verbose)
    if not context.config.key_file.exists():
        _fail("no gateway key yet: run `potluck init` first")
    asyncio.run(serve(context.config))


@cli.command("chat")
@click.argument("recipe", required=False)
@pass_context
def chat_command(context: Context, recipe: str | None) -> None:
    """A local room in this terminal: talk to RECIPE's agents (default: the configured one)."""
    import asyncio
    import logging

    from ..serve import chat

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("LiteLLM", "httpx", "docker", "urllib3", "nio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not context.config.key_file.exists():
        _fail("no gateway key yet: run `potluck init` first")
    asyncio.run(chat(context.config, recipe))
