"""The engine's own account of what happened in this install's containers.

One subscription to Docker's event stream, filtered to our install's label: `exec_start`,
`exec_die` and `oom`, in the order the engine published them. An out-of-memory kill belongs
to the exec whose start and end events surround it, so a kill from before a restart, or from
another command, is never reported as this one's. Nothing here comes from text a sandboxed
process can write.

The engine only replays its last 256 events to a late query, which a busy engine overruns
within one long command; a live subscription does not depend on that buffer. When it is
down (the engine restarting), `oom_during` says "unknown" and the caller asks the engine
for the time window instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from .policy import LABEL_INSTALL

log = logging.getLogger("potluck.sandbox")
KEEP = 4096  # exec records kept (consumed ones are dropped at once)


class Watch:
    def __init__(self, api: Any, install: str) -> None:
        self.api = api
        self.install = install
        self.seq = 0
        self.generation = 0  # bumped on every (re)connection: a gap means "unknown"
        self.connected = asyncio.Event()
        self._starts: OrderedDict[str, int] = OrderedDict()
        self._dies: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._ooms: OrderedDict[str, deque[int]] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        self._stream: Any = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._follow, name="engine-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(Exception):
            if self._stream is not None:
                self._stream.close()

    # -- the thread: follow the stream, hand each event to the loop ------------------------

    def _follow(self) -> None:
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_INSTALL}={self.install}"],
            "event": ["exec_start", "exec_die", "oom"],
        }
        delay = 0.2
        while not self._stopping.is_set():
            try:
                self._stream = self.api.events(filters=filters, decode=True)
                self._hand(self._connected)
                delay = 0.2
                for event in self._stream:
                    self._hand(self._record, event)
            except Exception as exc:  # the engine went away: say so, then try again
                if not self._stopping.is_set():
                    log.debug("engine events interrupted (%s); reconnecting", exc)
            self._hand(self._disconnected)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 5.0)

    def _hand(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    # -- on the loop -----------------------------------------------------------------------

    def _connected(self) -> None:
        self.generation += 1
        self.connected.set()

    def _disconnected(self) -> None:
        self.connected.clear()

    def _record(self, event: dict[str, Any]) -> None:
        self.seq += 1
        action = str(event.get("Action", "")).split(":", 1)[0]
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        container = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        exec_id = str(attributes.get("execID", ""))
        if action == "exec_start" and exec_id:
            _bounded(self._starts, exec_id, self.seq)
        elif action == "exec_die" and exec_id:
            try:
                code = int(attributes.get("exitCode", -1))
            except ValueError:
                code = -1
            _bounded(self._dies, exec_id, (self.seq, code))
            if waiter := self._waiters.get(exec_id):
                waiter.set()
        elif action == "oom" and container:
            if container not in self._ooms:
                _bounded(self._ooms, container, deque(maxlen=64))
            self._ooms[container].append(self.seq)

    async def ended(self, exec_id: str, timeout: float) -> bool:
        """Wait until the engine has reported the exec's end (or give up)."""
        if exec_id in self._dies:
            return True
        waiter = self._waiters.setdefault(exec_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(exec_id, None)

    def oom_during(self, container: str, exec_id: str) -> bool | None:
        """Did the container run out of memory between this exec's start and end? None when
        the stream did not see both (it was down): ask the engine for the time window."""
        start = self._starts.pop(exec_id, None)
        died = self._dies.pop(exec_id, None)
        if start is None or died is None:
            return None
        return any(start < seq < died[0] for seq in self._ooms.get(container, ()))


def _bounded(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    while len(table) > KEEP:
        table.popitem(last=False)


def oom_in_window(api: Any, container: str, since: float, until: float) -> bool:
    """Blocking: the engine's replay of `oom` events for one container in a time window; the
    fallback when the live stream missed the exec."""
    found = api.events(
        since=f"{since:.9f}",
        until=f"{max(until, time.time()):.9f}",
        filters={"container": container, "event": "oom"},
        decode=True,
    )
    try:
        return any(True for _ in found)
    finally:
        with contextlib.suppress(Exception):
            found.close()
