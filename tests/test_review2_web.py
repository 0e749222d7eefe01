"""Review 2: the web room's token boundary (fragment → sessionStorage → header/subprotocol).

Finding W1 — severity LOW (information disclosure to any web page, via DNS rebinding).
Attack: the web room checks no Host header. A page on http://rebind.attacker.example:8737
whose name the attacker re-points to 127.0.0.1 becomes same-origin with the attacker's own
name, so the browser lets it read whatever the web room answers without the token: the
probes (/health: which platforms are connected, how many rooms are busy, what waits in the
outbox; /metrics: turns, sandbox starts/kills/OOMs, ...) and the page. The token itself is
safe (sessionStorage is per origin, and every /api/* and socket needs it), which is why this
is low; but it is the standard hole a loopback server closes for free.
What the attacker gets: the install's activity, polled from any web page the person visits.
Smallest fix: in `WebAdapter._guard`, before anything else, refuse (421 or 403) a request
whose Host is not `127.0.0.1:PORT`, `localhost:PORT` or the configured host:PORT (a
monitor on the same machine sends one of these).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from .support import web_room


async def test_a_foreign_host_name_is_refused_even_on_open_paths(tmp_path: Path) -> None:
    async with web_room(tmp_path) as room, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{room.port}"
        own = {}
        async with http.get(f"{base}/health") as response:
            own["/health"] = response.status
        assert own["/health"] == 200  # the probe answers a local monitor
        foreign = {}
        for path in ("/health", "/metrics", "/"):
            async with http.get(
                base + path, headers={"Host": f"rebind.attacker.example:{room.port}"}
            ) as response:
                foreign[path] = (response.status, (await response.text())[:80])
    assert all(status >= 400 for status, _ in foreign.values()), (
        f"a rebound host name reads the web room's open paths: {foreign}"
    )
