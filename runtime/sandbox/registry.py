"""Which containers this broker created, by room: the authority on what is "mine".

Labels and names say whose a container claims to be, and anyone who can create containers
can imitate them. The id the engine returned when we created a container cannot be; so a
container is ours only if its id is recorded here. Everything else, however it is labelled,
is left alone. The record is a small JSON file, private to the broker (0600), replaced
atomically so a crash leaves the old or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rooms: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            data = json.loads(path.read_text(encoding="utf-8"))
            rooms = data.get("containers", {}) if isinstance(data, dict) else {}
            self._rooms = {
                str(room): str(cid)
                for room, cid in rooms.items()
                if isinstance(cid, str) and len(cid) == 64
            }

    def get(self, room: str) -> str | None:
        return self._rooms.get(room)

    def rooms(self) -> dict[str, str]:
        return dict(self._rooms)

    def owns(self, container_id: str) -> bool:
        return container_id in self._rooms.values()

    def remember(self, room: str, container_id: str) -> None:
        with self._lock:
            self._rooms[room] = container_id
            self._save()

    def forget(self, room: str, container_id: str | None = None) -> None:
        with self._lock:
            if container_id is None or self._rooms.get(room) == container_id:
                self._rooms.pop(room, None)
                self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"version": 1, "containers": self._rooms}, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)
