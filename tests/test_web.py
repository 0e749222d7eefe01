"""The local web room: its locks (token, origin, cross-site) over HTTP, and the page itself in
a real headless Chromium, with the embedded local model answering."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import load_config
from gateway.library import Library
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.serve import build
from gateway.store.db import Store
from runtime.recipes import validate_data

from .conftest import ECHO_DUO, ROOT, missing

ARTIFACTS = ROOT / "artifacts"


@contextlib.asynccontextmanager
async def web_room(tmp: Path) -> AsyncIterator[Any]:
    write_key_file(tmp / "gateway.key", KeyPair.generate())
    store = Store(f"sqlite:///{tmp / 'potluck.db'}")
    library = Library(store)
    library.sync_bundled()
    library.save(validate_data(ECHO_DUO))
    store.close()
    config = load_config(env={"POTLUCK_HOME": str(tmp), "POTLUCK_WEB_PORT": "0"})
    gateway = await build(config, web=True)
    try:
        yield gateway.adapters["web"]
    finally:
        await gateway.close()
        gateway.store.close()


async def test_nothing_opens_without_the_token_or_from_another_origin(tmp_path: Path) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for an IP address, as browsers do
    async with web_room(tmp_path) as web, aiohttp.ClientSession(cookie_jar=jar) as http:
        base = f"http://127.0.0.1:{web.port}"
        assert web.host == "127.0.0.1"
        for url in (f"{base}/", f"{base}/?token=wrong", f"{base}/api/recipes"):
            async with http.get(url) as response:
                assert response.status == 403, url
        assert (tmp_path / "web.token").stat().st_mode & 0o777 == 0o600
        async with http.get(f"{base}/?token={web.token}") as response:
            assert response.status == 200
            assert "HttpOnly" in response.headers["Set-Cookie"]
            assert "SameSite=Strict" in response.headers["Set-Cookie"]
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        # the cookie alone opens pages but changes nothing: a cross-site form could send it
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}) as response:
            assert response.status == 403
        headers = {"X-Potluck-Token": web.token, "Origin": "https://evil.example"}
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=headers) as r:
            assert r.status == 403
        headers["Origin"] = base
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=headers) as r:
            assert r.status == 200
            room = (await r.json())["room"]
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{base}/ws/{room}", origin="https://evil.example")
        async with http.ws_connect(f"{base}/ws/{room}", origin=base) as ws:
            await ws.send_json({"text": "hi <b>there</b>"})
            texts: dict[str, str] = {}
            agents: dict[str, str] = {}
            async for message in ws:
                line = message.json()
                texts[line["id"]] = line["text"]
                if line.get("agent"):
                    agents[line["id"]] = line["agent"]
                if sum("echo" in texts[i] for i in agents) >= 2:
                    break
            assert any("now runs duo@" in t for t in texts.values())
            assert sorted(agents.values()) == ["first", "second"]
            assert all("hi <b>there</b>" in texts[i] for i in agents)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("Debian's chromium (`make test` installs it)")
    return path  # type: ignore[return-value]


async def test_a_person_talks_to_several_agents_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    async with web_room(tmp_path) as web, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = await browser.new_page()
        await page.goto(web.url)
        await page.screenshot(path=str(ARTIFACTS / "web-recipes.png"))
        # the bundled debate, on the embedded local model
        await page.click("button[data-recipe=debate]")
        await page.wait_for_selector("text=now runs debate@")
        await page.fill("#text", "Should our town ban cars from the centre?")
        await page.click("#send")
        await page.wait_for_function(
            "() => new Set([...document.querySelectorAll('.msg.agent')]"
            ".filter(n => n.querySelector('.body').textContent.split(' ').length > 3)"
            ".map(n => n.dataset.agent)).size >= 2",
            timeout=120_000,
        )
        agents = await page.eval_on_selector_all(
            ".msg.agent", "nodes => nodes.map(n => [n.dataset.agent, n.innerText])"
        )
        assert {a for a, _ in agents} >= {"advocate", "devil"}
        await page.screenshot(path=str(ARTIFACTS / "web-room.png"), full_page=True)

        # HTML from a person or an agent is shown as text, never run
        await page.click("button[data-recipe=duo]")
        await page.wait_for_selector("text=now runs duo@")
        await page.fill(
            "#text", "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
        )
        await page.click("#send")
        await page.wait_for_function(
            "() => document.querySelectorAll('.msg.agent').length >= 2", timeout=30_000
        )
        texts = await page.eval_on_selector_all(
            ".msg.agent .body", "ns => ns.map(n => n.textContent)"
        )
        assert any("<script>window.pwned=1</script>" in t for t in texts)
        assert await page.evaluate("() => window.pwned") is None
        assert (
            await page.evaluate("() => document.querySelectorAll('#log script, #log img').length")
            == 0
        )
        await browser.close()


async def test_health_and_metrics_are_open_to_a_local_monitor_and_count(tmp_path: Path) -> None:
    async with web_room(tmp_path) as web, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{web.port}"
        async with http.get(f"{base}/health") as response:
            assert response.status == 200 and (await response.text()).startswith("ok")
        headers = {"X-Potluck-Token": web.token, "Origin": base}
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=headers) as r:
            room = (await r.json())["room"]
        async with http.ws_connect(f"{base}/ws/{room}?token={web.token}", origin=base) as ws:
            await ws.send_json({"text": "count me"})
            finished = 0
            async for message in ws:
                line = message.json()
                if line["type"] == "edit" and "count me" in line["text"]:
                    finished += 1
                if finished >= 2:
                    break
        await asyncio.sleep(0.2)
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        values = dict(
            line.split() for line in text.splitlines() if line and not line.startswith("#")
        )
        assert int(values["potluck_messages_in_total"]) == 2  # the /recipe use, then the line
        assert int(values["potluck_turns_total"]) == 2
        assert int(values["potluck_rooms"]) >= 1 and int(values["potluck_receipts_signed"]) >= 4
        assert "# TYPE potluck_turns_total counter" in text
