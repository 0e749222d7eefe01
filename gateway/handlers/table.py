"""The table from command names to handlers. Its keys are the command specs' keys
(gateway/commands.py, which also feeds Telegram's menu, Discord's slash commands and
/help): a spec without a handler, or a handler without a spec, fails at import."""

from __future__ import annotations

from collections.abc import Callable

from ..commands import SPECS
from .context import Handler

HANDLERS: dict[str, Handler] = {}


def handles(name: str) -> Callable[[Handler], Handler]:
    if name not in SPECS:
        raise KeyError(f"no command spec named {name!r} (gateway/commands.py)")

    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        return handler

    return register


def check_complete() -> None:
    missing = sorted(set(SPECS) - set(HANDLERS))
    if missing:
        raise RuntimeError(f"commands without a handler: {', '.join(missing)}")
