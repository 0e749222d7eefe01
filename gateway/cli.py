"""The `potluck` command line: a thin shell over the library, the store and the receipts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.recipes import RecipeError, diff, json_schema, short_ref, to_yaml, version_id
from runtime.recipes.files import read_recipe_file

from .config import Config, ConfigError, default_home, load_config, write_default_config
from .library import Library, Saved
from .receipts.keys import KeyFileError, KeyPair, read_key_file, write_key_file
from .store.db import Store


class Context:
    """Opened lazily, so `potluck --help` and `recipe validate` touch no database."""

    def __init__(self, home: Path | None) -> None:
        self._home = home
        self._config: Config | None = None
        self._library: Library | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self._home)
        return self._config

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library(Store(self.config.database_url))
            self._library.sync_bundled()
        return self._library

    def keys(self) -> KeyPair:
        return read_key_file(self.config.key_file)


pass_context = click.make_pass_decorator(Context)


def _fail(message: str) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(2)


class PotluckGroup(click.Group):
    """Turns the errors users can cause into a clear message and exit 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RecipeError as exc:
            _fail(str(exc))
        except (ConfigError, KeyFileError) as exc:
            _fail(f"error: {exc}")
        return None


@click.group(cls=PotluckGroup)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="POTLUCK_HOME",
    help="Where config, store and keys live (default ~/.potluck).",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """Potluck: AI recipes for group chats. Build anything. Break nothing."""
    ctx.obj = Context(home)


@cli.command()
@pass_context
def init(context: Context) -> None:
    """Write a config and a gateway key (mode 0600); set up the store. Safe to run twice."""
    home = context._home or default_home()
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "config.toml"
    if config_path.exists():
        click.echo(f"config: {config_path} (kept)")
    else:
        write_default_config(home)
        click.echo(f"config: {config_path} (written, mode 0600)")
    context._home = home
    config = context.config
    if config.key_file.exists():
        pair = read_key_file(config.key_file)
        click.echo(f"key:    {config.key_file} (kept)")
    else:
        pair = KeyPair.generate()
        write_key_file(config.key_file, pair)
        click.echo(f"key:    {config.key_file} (written, mode 0600)")
    click.echo(f"npub:   {pair.npub}")
    count = len(context.library.heads())
    click.echo(f"store:  {config.database_url} ({count} recipes)")


@cli.group()
def recipe() -> None:
    """List, show, validate, fork, edit, diff, export and import recipes."""


def _resolve(context: Context, ref: str) -> Saved:
    """A path to a recipe file, or a name[@version] in the library."""
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".json", ".png") and path.exists():
        loaded = read_recipe_file(path)
        return Saved(loaded, version_id(loaded), "file")
    return context.library.get(ref)


@recipe.command("list")
@pass_context
def recipe_list(context: Context) -> None:
    """Bundled and local recipes, with their current versions."""
    heads = context.library.heads()
    width = max((len(s.ref) for s in heads), default=10)
    for saved in heads:
        agents = ", ".join(a.name for a in saved.recipe.agents)
        click.echo(f"{saved.ref:<{width}}  {saved.origin:<7}  {saved.recipe.title}  [{agents}]")


@recipe.command("show")
@click.argument("ref")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the recipe file itself.")
@pass_context
def recipe_show(context: Context, ref: str, as_yaml: bool) -> None:
    """One recipe: version, lineage, agents and protocol."""
    saved = _resolve(context, ref)
    if as_yaml:
        click.echo(to_yaml(saved.recipe), nl=False)
        return
    r = saved.recipe
    click.secho(f"{saved.ref}  {r.title}", bold=True)
    click.echo(f"version: {saved.id}")
    if r.forked_from:
        click.echo(f"forked from: {r.forked_from[:7]}")
    if r.description:
        click.echo(r.description)
    click.echo(
        f"protocol: {r.protocol.kind}, up to {r.protocol.max_turns} turns, "
        f"{r.protocol.max_rounds} rounds; trigger: {r.trigger}"
    )
    click.echo(f"limits: ${r.limits.max_cost_usd:.2f}, {r.limits.max_tokens} tokens per session")
    for agent in r.agents:
        fallbacks = f" (fallbacks: {', '.join(agent.fallbacks)})" if agent.fallbacks else ""
        tools = f" tools: {', '.join(agent.tools)}" if agent.tools else ""
        click.echo(f"  - {agent.name}: {agent.model}{fallbacks}{tools}")


@recipe.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def recipe_validate(files: tuple[Path, ...]) -> None:
    """Check recipe files; every problem is printed with its file, line and field."""
    failed = 0
    for path in files:
        try:
            loaded = read_recipe_file(path)
        except RecipeError as exc:
            failed += 1
            click.secho(str(exc), fg="red", err=True)
        else:
            click.echo(f"{path}: ok ({short_ref(loaded)})")
    if failed:
        sys.exit(1)


@recipe.command("fork")
@click.argument("ref")
@click.argument("new_name")
@click.option("--author", default=None)
@pass_context
def recipe_fork(context: Context, ref: str, new_name: str, author: str | None) -> None:
    """Copy a recipe under a new name; its lineage points at the exact parent version."""
    parent = _resolve(context, ref)
    if parent.origin == "file":
        context.library.save(parent.recipe, "import")
    saved = context.library.fork(parent.id if parent.origin == "file" else ref, new_name, author)
    click.echo(f"{saved.ref} forked from {parent.ref}")


@recipe.command("set")
@click.argument("ref")
@click.argument("path")
@click.argument("value")
@pass_context
def recipe_set(context: Context, ref: str, path: str, value: str) -> None:
    """Change one field, e.g. `set my-review agents.architect.model openai/gpt-5`."""
    before = context.library.get(ref)
    saved = context.library.set(ref, path, value)
    click.echo(f"{before.ref} → {saved.ref}")
    for change in diff(before.recipe, saved.recipe):
        click.echo("  " + change.render())


@recipe.command("diff")
@click.argument("old")
@click.argument("new")
@pass_context
def recipe_diff(context: Context, old: str, new: str) -> None:
    """What changed from one version (or file) to another, field by field."""
    a, b = _resolve(context, old), _resolve(context, new)
    changes = diff(a.recipe, b.recipe)
    click.echo(f"{a.ref} → {b.ref}: {len(changes)} change(s)")
    for change in changes:
        line = change.render()
        colour = {"+": "green", "-": "red"}.get(line[0], "yellow")
        click.secho(line, fg=colour)


@recipe.command("history")
@click.argument("ref")
@pass_context
def recipe_history(context: Context, ref: str) -> None:
    """The lineage of a version, back to its origin."""
    for index, item in enumerate(context.library.lineage(ref)):
        arrow = "  " if index == 0 else "← "
        if isinstance(item, str):
            click.echo(f"{arrow}{item[:7]} (not in this store: forked from elsewhere)")
        else:
            click.echo(f"{arrow}{item.ref}  {item.origin}  {item.recipe.title}")


@recipe.command("export")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write.")
@pass_context
def recipe_export(context: Context, ref: str, output: Path | None) -> None:
    """Write a recipe as a YAML file to share; its version id travels with its content."""
    saved = _resolve(context, ref)
    text = to_yaml(saved.recipe)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"{saved.ref} → {output}")


@recipe.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_context
def recipe_import(context: Context, file: Path) -> None:
    """Add a recipe file, or a SillyTavern character card (.json/.png), to the library."""
    loaded = read_recipe_file(file)
    saved = context.library.save(loaded, "import")
    click.echo(f"imported {saved.ref}  {loaded.title}")


@recipe.command("schema")
def recipe_schema() -> None:
    """The recipe JSON Schema, for editors and other tools."""
    click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


def main() -> None:
    try:
        cli(prog_name="potluck")
    except PermissionError as exc:  # a home or file this user may not write: say which
        click.echo(
            f"error: permission denied: {exc.filename or exc}. POTLUCK_HOME must be "
            "writable by the user running potluck (and its key readable only by it).",
            err=True,
        )
        raise SystemExit(1) from None


# -- receipts ------------------------------------------------------------------------------


@cli.group()
def receipts() -> None:
    """Verify, export, reveal and publish the signed receipts of conversations."""


def _ledger(context: Context):  # type: ignore[no-untyped-def]
    from .receipts.ledger import Ledger

    return Ledger(
        context.library.store, context.keys(), default_relays=tuple(context.config.relays)
    )


def _print_report(name: str, report) -> bool:  # type: ignore[no-untyped-def]
    if report.ok:
        click.secho(
            f"{name}: {report.checked} events, ids, signatures and chain verified", fg="green"
        )
    else:
        click.secho(
            f"{name}: {len(report.problems)} problem(s) in {report.checked} events", fg="red"
        )
        for problem in report.problems:
            click.echo(f"  - {problem}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    return report.ok


@receipts.command("verify")
@click.option("--session", "session_id", help="One session's chain, from the store.")
@click.option("--room", help="Every session of a room: platform:room-id or its number.")
@click.option(
    "--file",
    "bundle",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An exported JSON-lines bundle; needs no store.",
)
@click.option("--pubkey", help="With --file: the gateway's npub or hex key to expect.")
@pass_context
def receipts_verify(
    context: Context,
    session_id: str | None,
    room: str | None,
    bundle: Path | None,
    pubkey: str | None,
) -> None:
    """Check every id, signature and link; names exactly what is wrong."""
    from .receipts.chain import verify_chain
    from .receipts.nip19 import npub_decode
    from .receipts.nostr import EventFormatError, parse_event
    from .rooms import find_room

    if sum(x is not None for x in (session_id, room, bundle)) != 1:
        _fail("give exactly one of --session, --room or --file")
    results: list[bool] = []
    if bundle is not None:
        events = []
        for number, line in enumerate(bundle.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(parse_event(json.loads(line)))
            except (ValueError, EventFormatError) as exc:
                _fail(f"{bundle}:{number}: not a Nostr event: {exc}")
        expected = npub_decode(pubkey) if pubkey and pubkey.startswith("npub") else pubkey
        results.append(_print_report(str(bundle), verify_chain(events, pubkey=expected)))
    else:
        ledger = _ledger(context)
        if session_id is not None:
            sessions = [session_id]
        else:
            room_id = find_room(ledger.store, room or "")
            if room_id is None:
                _fail(f"no room {room!r}; rooms are named platform:room-id")
            sessions = ledger.sessions_of_room(room_id)
        for sid in sessions:
            results.append(_print_report(f"session {sid}", ledger.verify_session(sid)))
    if not all(results):
        sys.exit(1)


@receipts.command("export")
@click.argument("session_id")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write.")
@click.option(
    "--reveals",
    type=click.Path(path_type=Path),
    help="Also write the texts and salts that open the commitments (private!).",
)
@pass_context
def receipts_export(
    context: Context, session_id: str, output: Path | None, reveals: Path | None
) -> None:
    """A session's receipts as JSON lines of plain Nostr events."""
    ledger = _ledger(context)
    lines = list(ledger.export(session_id))
    if not lines:
        _fail(f"session {session_id} has no receipts")
    text = "\n".join(lines) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{len(lines)} events → {output}", err=True)
    if reveals is not None:
        rows = [r for r in ledger.rows(session_id) if r.plaintext is not None]
        body = "".join(
            json.dumps({"id": r.id, "text": r.plaintext, "salt": r.salt}, ensure_ascii=False) + "\n"
            for r in rows
        )
        from .config import write_private

        reveals.unlink(missing_ok=True)
        write_private(reveals, body.encode())
        click.echo(f"{len(rows)} reveals → {reveals} (mode 0600)", err=True)


@receipts.command("share")
@click.argument("session_id")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="The .html to write."
)
@click.option("--title", default="Potluck session", show_default=True)
@pass_context
def receipts_share(context: Context, session_id: str, output: Path, title: str) -> None:
    """A session as one HTML file that verifies its own receipts, offline, in any browser.
    It contains the texts: share it only where the conversation may be read."""
    from .receipts.share import share_html

    try:
        page = share_html(_ledger(context), session_id, title)
    except LookupError as exc:
        _fail(str(exc))
    output.write_text(page, encoding="utf-8")
    click.echo(f"transcript with receipts → {output}", err=True)


@receipts.command("reveal")
@click.argument("event_id", required=False)
@click.option(
    "--check",
    "check_file",
    type=click.Path(path_type=Path, exists=True),
    help="Check a reveal (JSON with event, text, salt) without any store.",
)
@pass_context
def receipts_reveal(context: Context, event_id: str | None, check_file: Path | None) -> None:
    """Prove what a commitment-form receipt said, or check such a proof."""
    from .receipts.chain import reveal_matches
    from .receipts.nostr import check_event, parse_event

    if check_file is not None:
        claim = json.loads(check_file.read_text(encoding="utf-8"))
        event = parse_event(claim.get("event"))
        problem = check_event(event)
        if problem:
            _fail(f"the event itself does not verify: {problem}")
        if not reveal_matches(event, str(claim.get("text")), bytes.fromhex(claim.get("salt", ""))):
            _fail("the text does not match the event's commitment")
        click.secho(
            f"verified: event {event.id[:12]}… by {event.pubkey[:12]}… committed to "
            "exactly this text",
            fg="green",
        )
        return
    if event_id is None:
        _fail("give an EVENT_ID, or --check FILE")
    event, text, salt = _ledger(context).reveal(event_id)
    proof = {
        "event": event.to_dict(),
        "text": text,
        "salt": salt.hex(),
        "matches": reveal_matches(event, text, salt),
    }
    click.echo(json.dumps(proof, ensure_ascii=False, indent=2))


@receipts.command("publish")
@click.option("--all", "force", is_flag=True, help="Retry now, ignoring backoff.")
@pass_context
def receipts_publish(context: Context, force: bool) -> None:
    """Send pending receipts of opted-in rooms to their relays (one pass)."""
    import asyncio

    from .receipts.publisher import publication_counts, publish_pending

    result = asyncio.run(publish_pending(context.library.store, context.keys(), force=force))
    click.echo(
        f"accepted {result.accepted}, rejected {result.rejected}, deferred {result.deferred}"
    )
    for error in result.errors:
        click.secho(f"  {error} (kept; will retry)", fg="yellow")
    counts = publication_counts(context.library.store)
    click.echo("state: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")


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

    from .receipts.ledger import Ledger
    from .rooms import end_session, ensure_room, start_session

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


# -- sandbox -----------------------------------------------------------------------------------


def _terminal_sandboxes(context: Context):  # type: ignore[no-untyped-def]
    """Sandboxes for `potluck run`, or None (with a note) when no engine answers."""
    import docker

    from runtime.sandbox import Sandboxes

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception:
        click.secho(
            "note: no Docker engine answers, so agents run without their tools "
            "(start one with deploy/engine.sh)",
            fg="yellow",
        )
        return None
    config = context.config
    return Sandboxes(config.home / "state", install=config.install_id, client=client)


@cli.group()
def sandbox() -> None:
    """Build the sandbox image, check what the engine enforces, reset a room's sandbox."""


def _docker():  # type: ignore[no-untyped-def]
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _fail(
            f"no Docker engine answers ({exc.__class__.__name__}); start one with "
            "`deploy/engine.sh` (installs docker.io and starts dockerd), or set DOCKER_HOST"
        )
    return client


def _sandboxes(context: Context):  # type: ignore[no-untyped-def]
    from runtime.sandbox import Sandboxes

    config = context.config
    return Sandboxes(config.home / "state", install=config.install_id, client=_docker())


@sandbox.command("build")
def sandbox_build() -> None:
    """Build the default image from Debian's mirror (no registry); skipped when current."""
    from runtime.sandbox.image import ensure_image

    try:
        tag = ensure_image(_docker(), progress=click.echo)
    except (PermissionError, RuntimeError) as exc:
        _fail(f"error: {exc}")
    click.secho(f"sandbox image ready: {tag} (also tagged potluck-sandbox:default)", fg="green")


@sandbox.command("probe")
@pass_context
def sandbox_probe(context: Context) -> None:
    """Start a throwaway sandbox and report which limits this kernel really enforces."""
    import asyncio

    from runtime.sandbox import SandboxError

    boxes = _sandboxes(context)

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await boxes.probe()
        finally:
            await boxes.close()

    try:
        result = asyncio.run(go())
    except SandboxError as exc:
        _fail(f"error: {exc}")
    for line in result.lines():
        click.secho(line, fg="green" if line.startswith("in force") else "yellow")


@sandbox.command("exec")
@click.argument("room")
@click.argument("command")
@pass_context
def sandbox_exec(context: Context, room: str, command: str) -> None:
    """Run COMMAND in ROOM's sandbox (ROOM as platform:room-id), as an agent would."""
    import asyncio

    from runtime.sandbox import SandboxError

    boxes = _sandboxes(context)

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await boxes.exec(room, command)
        finally:
            await boxes.close(stop=False)

    try:
        result = asyncio.run(go())
    except SandboxError as exc:
        _fail(f"error: {exc}")
    click.echo(result.stdout, nl=False)
    click.echo(result.stderr, nl=False, err=True)
    click.secho(result.summary(), dim=True, err=True)
    sys.exit(result.exit_code if 0 <= result.exit_code < 256 else 1)


@sandbox.command("reset")
@click.argument("room")
@pass_context
def sandbox_reset(context: Context, room: str) -> None:
    """Remove ROOM's container and workspace; the next command starts clean."""
    import asyncio

    boxes = _sandboxes(context)

    async def go() -> None:
        try:
            await boxes.reset(room)
        finally:
            await boxes.close(stop=False)

    asyncio.run(go())
    click.echo(f"sandbox for {room}: reset (container and workspace removed)")


@sandbox.command("list")
@pass_context
def sandbox_list(context: Context) -> None:
    """This install's sandbox containers and workspaces (nothing else on the engine)."""
    boxes = _sandboxes(context)
    for container in boxes.ours():
        room = container.labels.get("io.potluck.room", "?")
        click.echo(f"container  {container.short_id}  {container.status:<8}  {room}")
    for volume in boxes.ours("workspace"):
        click.echo(f"workspace  {volume.name}  {volume.attrs['Labels'].get('io.potluck.room')}")


@cli.command("serve")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@pass_context
def serve_command(context: Context, verbose: bool) -> None:
    """Run the gateway: the configured chat platforms, rooms, agents, sandboxes, receipts."""
    import asyncio

    from . import logs
    from .serve import serve

    logs.setup(context.config, verbose)
    if not context.config.key_file.exists():
        _fail("no gateway key yet: run `potluck init` first")
    asyncio.run(serve(context.config))


@cli.command("doctor")
@click.option("--no-sandbox", is_flag=True, help="Skip the Docker engine and sandbox probe.")
@pass_context
def doctor_command(context: Context, no_sandbox: bool) -> None:
    """Check what a home server needs (engine, limits, image, key, config, tokens, relays,
    model, disk) and say exactly what to fix. Exits 1 if anything fails."""
    import asyncio

    from . import doctor
    from .config import ConfigError

    try:
        config = context.config
    except ConfigError as exc:
        click.echo(doctor.Check("config", doctor.FAIL, str(exc)).line())
        raise SystemExit(1) from None
    click.echo(f"potluck doctor: {config.home}")
    checks = asyncio.run(doctor.run(config, sandbox=not no_sandbox))
    for check in checks:
        colour = {doctor.OK: "green", doctor.WARN: "yellow", doctor.FAIL: "red"}[check.status]
        click.secho(check.line(), fg=colour)
    failed = [c for c in checks if c.status == doctor.FAIL]
    warned = [c for c in checks if c.status == doctor.WARN]
    click.echo(f"{len(checks)} checks: {len(failed)} failed, {len(warned)} warnings")
    if failed:
        raise SystemExit(1)


@cli.command("docker-proxy")
@click.option(
    "--listen",
    default="127.0.0.1:2375",
    show_default=True,
    help="HOST:PORT, or unix:PATH (mode 0660: give its group to the gateway's user).",
)
@click.option("--socket", "socket_path", default="/var/run/docker.sock", show_default=True)
def docker_proxy_command(listen: str, socket_path: str) -> None:
    """Forward only the Docker calls sandboxes need (see deploy/compose.yaml). The gateway
    then gets DOCKER_HOST=tcp://HOST:PORT instead of the socket, which is root on the host."""
    import asyncio
    import logging

    from .docker_proxy import serve, serve_unix

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        if listen.startswith("unix:"):
            server = await serve_unix(listen.removeprefix("unix:"), socket_path)
        else:
            host, _, port = listen.rpartition(":")
            server = await serve(host or "127.0.0.1", int(port), socket_path)
        click.echo(f"docker proxy on {listen} → {socket_path}", err=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@cli.command("backup")
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@pass_context
def backup_command(context: Context, output: Path) -> None:
    """The store, the gateway key and config in one archive (mode 0600); safe while serving."""
    from .backup import BackupError, backup

    try:
        manifest = backup(context.config, output)
    except (BackupError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"backup of the {manifest.database} store and keys → {output} (keep it private)")


@cli.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing store and key (kept aside).")
@pass_context
def restore_command(context: Context, archive: Path, force: bool) -> None:
    """Put a backup back: checked member by member first; refuses while the gateway runs."""
    from .backup import BackupError, restore

    try:
        manifest = restore(context.config, archive, force)
    except (BackupError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"restored the {manifest.database} store and keys from {manifest.created}")


@cli.command("chat")
@click.argument("recipe", required=False)
@pass_context
def chat_command(context: Context, recipe: str | None) -> None:
    """A local room in this terminal: talk to RECIPE's agents (default: the configured one)."""
    import asyncio
    import logging

    from .serve import chat

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("LiteLLM", "httpx", "docker", "urllib3", "nio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not context.config.key_file.exists():
        _fail("no gateway key yet: run `potluck init` first")
    asyncio.run(chat(context.config, recipe))
