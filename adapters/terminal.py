"""The terminal as a room: the same gateway, commands and receipts as any chat, on stdin and
stdout. Every line a person types is addressed to the agents (it is a private room).

What the room prints comes from models and recipes, both untrusted: it passes through
`terminal_safe`, which works character by character, so each streamed piece can be made
safe on its own."""

from __future__ import annotations

import asyncio
import getpass
import itertools
import sys
import uuid
from typing import TextIO

from runtime.text import terminal_safe

from .base import Capabilities, Incoming, OnCursor, OnIncoming, Outgoing

COLOURS = itertools.cycle(
    ["\033[38;5;99m", "\033[38;5;178m", "\033[38;5;35m", "\033[38;5;203m", "\033[38;5;39m"]
)
RESET, DIM = "\033[0m", "\033[2m"


class TerminalAdapter:
    name = "terminal"
    capabilities = Capabilities(edit_interval_s=0.05, max_chars=100_000, local_owner=True)

    def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.room = "local"
        self.user = getpass.getuser()
        self.closed = asyncio.Event()
        self._shown: dict[str, str] = {}
        self._colours: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._colour = stdout.isatty()

    def _paint(self, agent: str) -> str:
        label = terminal_safe(agent, one_line=True)
        if not self._colour:
            return f"{label}: "
        if agent not in self._colours:
            self._colours[agent] = next(COLOURS)
        return f"{self._colours[agent]}{label}{RESET}: "

    async def connect(self) -> None: ...

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        self._task = asyncio.create_task(self._read(on_incoming))

    async def _read(self, on_incoming: OnIncoming) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, self.stdin.readline)
            if not line or line.strip() in ("/quit", "/exit"):
                break
            text = line.rstrip("\n")
            if not text.strip():
                continue
            await on_incoming(self.said(text))
        self.closed.set()

    def said(self, text: str, event_id: str | None = None) -> Incoming:
        """A line typed here, as the gateway takes it: always addressed (a private room)."""
        return Incoming(
            "terminal",
            self.room,
            self.user,
            self.user,
            text,
            event_id or uuid.uuid4().hex,
            mentions_bot=True,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    async def send(self, message: Outgoing) -> str:
        message_id = uuid.uuid4().hex
        if message.agent:
            text = "" if message.text == "…" else message.text
            self._write(f"\n{self._paint(message.agent)}{terminal_safe(text)}")
            self._shown[message_id] = text
        else:
            dim, reset = (DIM, RESET) if self._colour else ("", "")
            self._write(f"\n{dim}{terminal_safe(message.text)}{reset}\n")
        return message_id

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        shown = self._shown.get(message_id, "")
        if message.text.startswith(shown):
            self._write(terminal_safe(message.text[len(shown) :]))
        else:  # rewritten (a retry, a cut-off note): show the whole text again
            self._write(f"\n{self._paint(message.agent or '')}{terminal_safe(message.text)}")
        self._shown[message_id] = message.text

    async def is_admin(self, room: str, user: str) -> bool:
        return True  # the person at the keyboard owns this gateway
