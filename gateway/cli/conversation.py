"""`potluck run`, `potluck chat` and `potluck serve`: the conversations themselves."""

from __future__ import annotations

import sys

import click

from .app import Context, _fail, _resolve, cli, pass_context
from .sandbox import _terminal_sandboxes

# -- run: the terminal front door ----------------------------------------------------------


def _rgb(colour: str | None) -> tuple[int, int, int] | None:
    if not colour:
        return None
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


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

    from runtime.conductor import Conductor, Listener
    from runtime.context import Line
    from runtime.models.client import Models
    from runtime.models.local import MODELS

    from ..receipts.ledger import Ledger
    from ..rooms import end_session, ensure_room, start_session

    saved = _resolve(context, ref)
    if saved.origin == "file":
        saved = context.library.save(saved.recipe, "import")
    store = context.library.store
    config = context.config
    if not config.key_file.exists():
        click.echo("no gateway key yet: run `potluck init` first", err=True)
        sys.exit(2)
    ledger = Ledger(store, context.keys())
    room = ensure_room(store, "terminal", getpass.getuser(), "terminal")
    session_id = start_session(store, room, saved.id)
    ledger.open(session_id, saved.recipe.name)
    ledger.person(session_id, f"terminal:{getpass.getuser()}", message)
    recipe = saved.recipe
    click.secho(f"{saved.ref} · {recipe.title} · {recipe.protocol.kind}", bold=True)
    if any(m.startswith("local/") for a in recipe.agents for m in [a.model, *a.fallbacks]):
        click.secho("note: " + MODELS["smollm2-135m"].note, dim=True)
    click.echo(f"{speaker}: {message}\n")

    class Terminal(Listener):
        def __init__(self) -> None:
            self.shown = ""

        async def turn_started(self, agent) -> None:  # type: ignore[no-untyped-def]
            self.shown = ""
            click.secho(f"{agent.name} ", fg=_rgb(agent.color), bold=True, nl=False)

        async def turn_text(self, agent, text: str) -> None:  # type: ignore[no-untyped-def]
            if text.startswith(self.shown):
                click.echo(text[len(self.shown) :], nl=False)
            else:  # a retry replaced the text
                click.echo("\n  " + text, nl=False)
            self.shown = text

        async def turn_finished(self, agent, turn) -> None:  # type: ignore[no-untyped-def]
            if turn.finish == "pass":
                click.secho("(passes)", dim=True, nl=False)
            click.secho(
                f"\n  [{turn.model} · {turn.tokens_in}+{turn.tokens_out} tokens · "
                f"${turn.cost_usd:.4f}]",
                dim=True,
            )
            for note in turn.notes:
                click.secho(f"  note: {note}", fg="yellow")
            click.echo()
            if turn.text or turn.finish != "error":
                ledger.record_turn(session_id, turn)

        async def note(self, text: str) -> None:
            click.secho(text, fg="yellow")

        async def tool_result(self, agent, outcome) -> None:  # type: ignore[no-untyped-def]
            click.secho(f"\n  $ {outcome.command}", fg="cyan")
            for line in outcome.text.splitlines()[:12]:
                click.secho(f"    {line}", dim=True)
            ledger.record_tool(session_id, agent.name, outcome)

    sandboxes = None
    if any(agent.tools for agent in recipe.agents):
        sandboxes = _terminal_sandboxes(context)
    toolbox = None
    if sandboxes is not None:
        from runtime.tools import SandboxToolbox

        toolbox = SandboxToolbox(sandboxes, f"terminal:{getpass.getuser()}", recipe.sandbox)
    conductor = Conductor(recipe, Models(secrets=config.secrets), toolbox=toolbox)
    transcript = [Line(speaker, "person", message)]
    started = time.monotonic()

    async def converse():  # type: ignore[no-untyped-def]
        try:
            return await conductor.respond(transcript, Terminal())
        finally:
            if sandboxes is not None:
                await sandboxes.close(stop=False)

    try:
        outcome = asyncio.run(converse())
    except KeyboardInterrupt:
        ledger.close(session_id, "cut")
        end_session(store, session_id, "cut")
        click.secho("\nstopped", fg="yellow")
        sys.exit(130)
    ledger.close(session_id)
    end_session(store, session_id)
    elapsed = time.monotonic() - started
    report = ledger.verify_session(session_id)
    budget = conductor.budget
    spoken = [t for t in outcome.turns if t.finish != "pass"]
    click.secho(
        f"{len(spoken)} turns · {budget.tokens} tokens · ${budget.cost_usd:.4f} · {elapsed:.1f}s",
        bold=True,
    )
    for agent, (tokens, cost) in budget.by_agent.items():
        click.echo(f"  {agent}: {tokens} tokens, ${cost:.4f}")
    click.echo(
        f"receipts: {report.checked} signed events, "
        + ("chain verified" if report.ok else f"{len(report.problems)} problems")
        + f" · session {session_id}"
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
