"""`potluck serve` and `potluck chat`: the gateway's parts built from the install's config,
in one place, and run until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from typing import Any

from runtime.models.client import Fallback, Models

from .admission import may_invite
from .backup import serving_lock
from .config import Config
from .library import Library
from .receipts.keys import read_key_file
from .receipts.ledger import Ledger
from .sandboxes import open_sandboxes
from .scheduler import start_scheduler
from .service import Gateway
from .store.db import Store

log = logging.getLogger("potluck.serve")


def open_ledger(config: Config, store: Store) -> Ledger:
    """The one ledger of an install: its key, and the relays rooms publish to."""
    return Ledger(store, read_key_file(config.key_file), default_relays=tuple(config.relays))


def open_models(config: Config) -> Models:
    """The install's models: its keys, and its better model ([models]) if it has one."""
    fallback = None
    if config.models.fallback:
        fallback = Fallback(config.models.fallback, config.models.api_base)
    return Models(providers=config.providers, fallback=fallback)


async def build(config: Config, web: bool = False, sandboxes: bool = True) -> Gateway:
    store = Store(config.database_url)
    library = Library(store)
    library.sync_bundled()
    gateway = Gateway(
        config,
        store,
        library,
        open_ledger(config, store),
        open_models(config),
        await open_sandboxes(config) if sandboxes else None,
        config.default_recipe,
    )
    if "matrix" in config.platforms:
        from adapters.matrix import MatrixAdapter, MatrixSettings

        settings = MatrixSettings(**config.platforms["matrix"])
        await gateway.add_adapter(
            MatrixAdapter(
                settings,
                functools.partial(may_invite, config, "matrix"),
                config.home / "matrix-session.json",
            )
        )
        log.info("matrix: connected as %s", settings.user_id)
    if web:
        await _web_room(config, gateway)
    if "telegram" in config.platforms:
        from adapters.telegram import TelegramAdapter, TelegramSettings

        from .commands import platform_commands

        telegram = TelegramAdapter(
            TelegramSettings(**config.platforms["telegram"]), platform_commands()
        )
        await gateway.add_adapter(telegram)
        log.info("telegram: connected as @%s", telegram.username)
    if "discord" in config.platforms:
        from adapters.discord import DiscordAdapter, DiscordSettings

        from .commands import SPECS

        discord_room = DiscordAdapter(
            DiscordSettings(**config.platforms["discord"]),
            SPECS,
            lambda: [s.recipe.name for s in library.heads()],
        )
        await gateway.add_adapter(discord_room)
        log.info("discord: connected as %s", discord_room.client.user)
    return gateway


async def _web_room(config: Config, gateway: Gateway) -> None:
    from adapters.web import WebAdapter, load_token

    from . import metrics
    from .records.web import RecordRoutes
    from .web_console import WebConsole

    def recipes() -> list[dict]:
        return [
            {
                "name": s.recipe.name,
                "title": s.recipe.title,
                "ref": s.ref,
                "tags": list(s.recipe.tags),  # the page marks "for bigger models" from these
                "agents": [{"name": a.name, "model": a.model} for a in s.recipe.agents],
            }
            for s in gateway.library.heads()
        ]

    probes = {
        "/health": lambda: (metrics.health(gateway), "text/plain"),
        "/metrics": lambda: (metrics.render(gateway), "text/plain"),
    }
    room = WebAdapter(
        load_token(config.home / "web.token"),
        gateway.watch,
        config.web_host,
        config.web_port,
        recipes,
        probes,
        WebConsole(gateway).routes() + RecordRoutes(gateway).routes(),
    )
    await gateway.add_adapter(room)
    # the URL carries the token: printed for the person, never logged
    log.info(
        "web room on http://%s:%d/ (token in %s)", room.host, room.port, config.home / "web.token"
    )


async def serve(config: Config) -> None:
    with serving_lock(config):  # one gateway per home; restore waits for it to stop
        await _serve(config)


async def _serve(config: Config) -> None:
    # The web room answers at once; the sandbox broker (a process of its own, seconds to
    # start) joins when it listens, as the scheduler does below.
    gateway = await build(config, web=True, sandboxes=False)
    attaching = asyncio.create_task(_attach_sandboxes(gateway, config))
    scheduler, gateway.services.schedules = start_scheduler(
        gateway.store,
        gateway.ledger.keys,
        gateway.intake,
        library=gateway.library,
        relays=tuple(config.relays),
    )
    web = gateway.adapters.get("web")
    if web is not None:
        if sys.stdout.isatty():  # the token is for the person at this terminal
            print(f"\nPotluck is running. Open the local web room:\n\n    {web.url}\n", flush=True)  # type: ignore[attr-defined]
        else:  # a service's stdout ends up in logs: no token there
            print(
                f"Potluck is running: http://{web.host}:{web.port}/ "  # type: ignore[attr-defined]
                f"(append #token= and the token in {config.home / 'web.token'})",
                flush=True,
            )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("potluck is serving; SIGTERM or Ctrl-C stops it")
    await stop.wait()
    log.info("stopping")
    attaching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await attaching
    scheduler.shutdown(wait=False)
    await gateway.shutdown(config.shutdown_grace_s)
    gateway.store.close()
    log.info("stopped cleanly")


async def _attach_sandboxes(gateway: Gateway, config: Config) -> None:
    client = await open_sandboxes(config)
    if client is None:
        return
    if gateway._closed:
        await client.close()
        return
    gateway.sandboxes = gateway.exchange.sandboxes = gateway.services.sandboxes = client


async def chat(config: Config, recipe: str | None) -> None:
    """A local room in the terminal: the gateway with the terminal as its only platform."""
    from adapters.terminal import TerminalAdapter
    from runtime.text import terminal_safe

    config.platforms = {}  # this room only, even where [matrix] is configured
    gateway = await build(config)
    terminal = TerminalAdapter()
    await gateway.add_adapter(terminal)
    if recipe:
        await gateway.intake.receive(terminal.said(f"/recipe use {recipe}"))
    room = gateway.rooms.get("terminal", terminal.room)
    await _until_idle(room)
    if room.conversation is None:
        room.conversation = gateway.exchange.current(room.room_id)
    saved = room.conversation.saved
    names = ", ".join(a.name for a in saved.recipe.agents)
    title = terminal_safe(saved.recipe.title, one_line=True)  # a recipe's text is a stranger's
    print(f"Potluck local room · {saved.ref} · {title} ({names})")
    if any(m.startswith("local/") for a in saved.recipe.agents for m in [a.model, *a.fallbacks]):
        from runtime.models.local import MODELS

        print("note: " + MODELS["smollm2-135m"].note)
    print("Type to talk; /help for commands, /recipe use NAME to switch, Ctrl-D to leave.")
    await terminal.closed.wait()
    await _until_idle(room)  # let the last answer finish
    await gateway.close()
    gateway.store.close()


async def _until_idle(room: Any) -> None:
    while not room.idle:
        await asyncio.sleep(0.05)
