"""The local web room: its locks (token, origin, cross-site) over HTTP, and the page itself in
a real headless Chromium, with the embedded local model answering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.receipts.kinds import AGENT_TURN, PERSON_MESSAGE

from .support import ARTIFACTS, ROOT, MemoryPlatform, launch, web_gateway, web_room


async def test_nothing_opens_without_the_token_or_from_another_origin(tmp_path: Path) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for an IP address, as browsers do
    async with web_room(tmp_path) as web, aiohttp.ClientSession(cookie_jar=jar) as http:
        base = f"http://127.0.0.1:{web.port}"
        assert web.host == "127.0.0.1"
        assert (tmp_path / "web.token").stat().st_mode & 0o777 == 0o600
        # the printed link carries the token after '#': a browser sends that to no server
        assert web.url == f"{base}/#token={web.token}"
        # The page and its scripts are the same bytes for everyone, with no token in them and
        # none set as a cookie (a cookie for 127.0.0.1 goes to every port of it).
        for path in ("/", f"/?token={web.token}", "/room/0123abcd", "/static/receipts.js"):
            async with http.get(base + path) as response:
                assert response.status == 200, path
                assert web.token not in await response.text(), path
                assert "Set-Cookie" not in response.headers, path
        assert not list(jar)
        async with http.get(f"{base}/") as response:
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["Referrer-Policy"] == "no-referrer"
        # Everything else wants the token in its header: not in the query, not in the cookie
        # earlier versions kept, not wrong, not a prefix, not in a non-ASCII disguise.
        refused = [
            ("/api/recipes", {}),
            (f"/api/recipes?token={web.token}", {}),
            ("/api/recipes", {"Cookie": f"potluck_token={web.token}"}),
            ("/api/recipes", {"X-Potluck-Token": "wrong"}),
            ("/api/recipes", {"X-Potluck-Token": web.token[:-1]}),
            ("/api/recipes", {"X-Potluck-Token": web.token + "é"}),
            ("/api/watch", {}),
            ("/api/transcript?room=web:x", {}),
            ("/no-such-page", {}),
        ]
        for path, headers in refused:
            async with http.get(base + path, headers=headers) as response:
                assert response.status == 403, (path, headers)
                assert "X-Potluck-Token header" in (await response.json())["error"]
        async with http.get(f"{base}/api/recipes", headers={"x-potluck-token": web.token}) as r:
            assert r.status == 200 and {x["name"] for x in await r.json()} >= {"duo"}
        # a cookie an earlier version left is deleted when the page is next opened
        async with http.get(f"{base}/", headers={"Cookie": f"potluck_token={web.token}"}) as r:
            assert r.status == 200
            assert r.cookies["potluck_token"].value == ""
            assert r.cookies["potluck_token"]["max-age"] == "0"
        # changing anything also needs this origin: a page elsewhere cannot send the header,
        # and one that somehow had the token would still be refused
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}) as response:
            assert response.status == 403
        headers = {"X-Potluck-Token": web.token, "Origin": "https://evil.example"}
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=headers) as r:
            assert r.status == 403
        no_origin = {"X-Potluck-Token": web.token}
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=no_origin) as r:
            assert r.status == 403
        headers["Origin"] = base
        async with http.post(f"{base}/api/rooms", json={"recipe": "duo"}, headers=headers) as r:
            assert r.status == 200
            room = (await r.json())["room"]
        # A WebSocket carries the token as a subprotocol, after "potluck" (what the server
        # answers, so the token is never echoed), and must come from this origin.
        token = f"potluck-token.{web.token}"
        for url, origin, protocols, status in (
            (f"/ws/{room}", base, (), 403),
            (f"/ws/{room}?token={web.token}", base, ("potluck",), 403),
            (f"/ws/{room}", base, ("potluck", "potluck-token.wrong"), 403),
            (f"/ws/{room}", "https://evil.example", ("potluck", token), 403),
            (f"/ws/{room}", base, (token,), 400),  # said how: offer "potluck" too
            ("/watch/ws?room=web:" + room, "https://evil.example", ("potluck", token), 403),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
                await http.ws_connect(base + url, origin=origin, protocols=protocols)
            assert refusal.value.status == status, (url, origin, protocols)
        async with http.ws_connect(
            f"{base}/ws/{room}", origin=base, protocols=("potluck", token)
        ) as ws:
            assert ws.protocol == "potluck"
            await ws.send_json({"text": "hi <b>there</b>"})
            texts: dict[str, str] = {}
            agents: dict[str, str] = {}
            signed: dict[str, dict] = {}
            async with asyncio.timeout(60):  # both agents' turns, shown and signed
                async for message in ws:
                    line = message.json()
                    if line["type"] == "receipt":  # the signed event of a message shown
                        signed[line["id"]] = line["event"]
                        if len(set(signed) & set(agents)) >= 2:
                            break
                        continue
                    texts[line["id"]] = line["text"]
                    if line.get("role") == "agent":
                        agents[line["id"]] = line["who"]
            assert any("now runs duo@" in t for t in texts.values())
            assert sorted(agents.values()) == ["first", "second"]
            assert all("hi <b>there</b>" in texts[i] for i in agents)
            assert all(signed[i]["kind"] == AGENT_TURN for i in agents)
            assert any(e["kind"] == PERSON_MESSAGE for e in signed.values())  # the person's line
        async with http.ws_connect(  # the watch socket speaks the same way
            f"{base}/watch/ws?room=web:{room}", origin=base, protocols=("potluck", token)
        ) as watching:
            assert watching.protocol == "potluck"
            assert (await watching.receive_json(timeout=10))["type"] == "message"


async def test_the_page_keeps_the_token_in_its_tab_and_out_of_the_address(tmp_path: Path) -> None:
    """The link's token moves into this tab's sessionStorage and out of the address bar (an
    older `?token=` link's too, once), no cookie is ever set, a reload keeps working, and a
    tab opened without the link, or with a stale token, asks for the link and shows nothing."""
    from playwright.async_api import async_playwright

    async with web_room(tmp_path) as web, async_playwright() as pw:
        browser = await launch(pw)
        base = f"http://127.0.0.1:{web.port}"
        stored = "() => sessionStorage.getItem('potluck-token')"
        for link in (web.url, f"{base}/?token={web.token}"):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(link)
            await page.wait_for_selector("button[data-recipe=duo]")
            assert page.url == f"{base}/", link
            assert await page.evaluate(stored) == web.token
            await page.reload()
            await page.click("button[data-recipe=duo]")
            await page.wait_for_selector("text=now runs duo@")  # its WebSocket opened too
            assert web.token not in page.url and "/room/" in page.url
            assert await context.cookies() == []
            await context.close()
        page = await browser.new_page()
        await page.goto(f"{base}/")
        await page.wait_for_selector("#title >> text=Open the link")
        await page.evaluate("() => sessionStorage.setItem('potluck-token', 'stale')")
        await page.reload()
        await page.wait_for_selector("#title >> text=Open the link")
        assert await page.evaluate(stored) is None
        assert await page.eval_on_selector_all("button[data-recipe]", "b => b.length") == 0
        await browser.close()


async def test_a_person_talks_to_several_agents_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with web_room(tmp_path) as web, async_playwright() as pw:
        browser = await launch(pw)
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
        async with http.ws_connect(f"{base}/ws/{room}", origin=base, headers=headers) as ws:
            await ws.send_json({"text": "count me"})
            finished = 0
            async with asyncio.timeout(60):  # both agents' final edits
                async for message in ws:
                    line = message.json()
                    if line["type"] == "edit" and "count me" in line["text"]:
                        finished += 1
                    if finished >= 2:
                        break
        values: dict[str, str] = {}
        text = ""
        deadline = asyncio.get_running_loop().time() + 30
        while values.get("potluck_turns_total") != "2":  # the turns are counted as committed
            assert asyncio.get_running_loop().time() < deadline, f"turns never counted: {text}"
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            values = dict(
                line.split() for line in text.splitlines() if line and not line.startswith("#")
            )
        assert int(values["potluck_messages_in_total"]) == 2  # the /recipe use, then the line
        assert int(values["potluck_rooms"]) >= 1 and int(values["potluck_receipts_signed"]) >= 4
        assert "# TYPE potluck_turns_total counter" in text
        assert int(values["potluck_tokens_total"]) > 0  # the two turns' tokens, from spend rows
        assert float(values["potluck_cost_usd_total"]) == 0.0  # scripted models are free
        assert int(values["potluck_delivery_errors_total"]) == 0


def test_the_vendored_verifier_is_the_published_package() -> None:
    """noble-secp256k1 3.2.0's index.js, byte for byte (see adapters/web_static/README.md)."""
    import hashlib

    static = ROOT / "adapters" / "web_static"
    digest = hashlib.sha256((static / "noble-secp256k1.js").read_bytes()).hexdigest()
    assert digest == "ba5aadb469e9208f2da1c9878ab6bb93d2c894f84e6c7ebf9dbf9462741b9fb7"
    assert "MIT License" in (static / "noble-secp256k1.LICENSE").read_text()


async def test_gallery_fork_edit_shows_a_schema_error_at_its_line(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with web_room(tmp_path) as web, async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page()
        await page.goto(web.url)
        await page.click("#nav-gallery")
        await page.click("button[data-open=duo]")
        await page.wait_for_selector("#detail-ref >> text=duo@")
        await page.screenshot(path=str(ARTIFACTS / "web-gallery.png"), full_page=True)
        await page.fill("#fork-name", "my-duo")
        await page.click("#fork")
        await page.wait_for_selector("#problems >> text=forked as my-duo@")
        lineage = await page.text_content("#lineage")
        assert "my-duo@" in lineage and "duo@" in lineage.split("←")[1]

        text = await page.input_value("#yaml")
        broken = text.replace("max_rounds:", "max_roundz:", 1)
        line = next(n for n, row in enumerate(broken.splitlines(), 1) if "max_roundz" in row)
        await page.fill("#yaml", broken)
        await page.click("#save")
        await page.wait_for_selector(".gutter span.err")
        marked = await page.eval_on_selector_all(
            ".gutter span.err", "spans => spans.map(s => Number(s.dataset.line))"
        )
        assert marked == [line]
        problems = await page.text_content("#problems")
        assert f"line {line}" in problems and "max_roundz" in problems
        assert "did you mean 'max_rounds'" in problems
        await page.screenshot(path=str(ARTIFACTS / "web-editor-error.png"), full_page=True)

        await page.fill("#yaml", text.replace("title: Echo duo", "title: My echo duo", 1))
        await page.click("#save")
        await page.wait_for_selector("#problems >> text=saved my-duo@")
        assert "title" in await page.text_content("#changes")
        assert await page.eval_on_selector_all(".gutter span.err", "s => s.length") == 0
        await page.click("#lineage button")  # diff against the version it came from
        await page.wait_for_selector("#changes >> text=→")
        assert "My echo duo" in await page.text_content("#changes")
        await browser.close()


async def test_an_exported_transcript_verifies_from_disk_and_a_changed_byte_fails(
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    async with web_room(tmp_path) as web, async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page()
        await page.goto(web.url)
        await page.click("button[data-recipe=duo]")
        await page.wait_for_selector("text=now runs duo@")
        await page.fill("#text", "a line worth keeping")
        await page.click("#send")
        await page.wait_for_function(  # both agents' turns signed and checked in the page
            "() => document.querySelectorAll('.msg.agent .receipt.ok').length >= 2",
            timeout=30_000,
        )
        assert await page.eval_on_selector_all(".receipt.bad", "s => s.length") == 0
        # the chain status keeps itself current as receipts arrive; the button re-checks
        await page.wait_for_selector("#chain >> text=chain verified")
        await page.click("#verify")
        await page.wait_for_selector("#chain >> text=chain verified")
        async with page.expect_download() as download_info:
            await page.click("#export button")
        download = await download_info.value
        exported = tmp_path / "transcript.html"
        await download.save_as(exported)
        await browser.close()

        browser = await launch(pw)  # a fresh browser, offline, the file alone
        page = await browser.new_page()
        await page.goto(exported.as_uri())
        await page.wait_for_function("() => document.body.dataset.verified", timeout=20_000)
        assert await page.evaluate("() => document.body.dataset.verified") == "yes"
        assert "receipts verified" in await page.text_content("#status")
        shown = await page.text_content("#transcript")
        assert "a line worth keeping" in shown and "echo" in shown
        await page.screenshot(path=str(ARTIFACTS / "transcript-verified.png"), full_page=True)

        original = exported.read_bytes()
        at = original.index(b"a line worth keeping")
        altered = tmp_path / "altered.html"
        altered.write_bytes(original[:at] + b"A" + original[at + 1 :])  # one byte
        await page.goto(altered.as_uri())
        await page.wait_for_function("() => document.body.dataset.verified", timeout=20_000)
        assert await page.evaluate("() => document.body.dataset.verified") == "no"
        assert "FAILED" in await page.text_content("#status")
        bad = await page.eval_on_selector_all(".badge.bad", "s => s.map(n => n.textContent)")
        assert len(bad) == 1 and "not the text that was signed" in bad[0]
        await page.screenshot(path=str(ARTIFACTS / "transcript-altered.png"), full_page=True)

        signature = original.index(b'"sig": "') + len(b'"sig": "')
        flipped = b"0" if original[signature : signature + 1] != b"0" else b"1"
        forged = tmp_path / "forged.html"
        forged.write_bytes(original[:signature] + flipped + original[signature + 1 :])
        await page.goto(forged.as_uri())
        await page.wait_for_function("() => document.body.dataset.verified", timeout=20_000)
        assert await page.evaluate("() => document.body.dataset.verified") == "no"
        bad = await page.eval_on_selector_all(".badge.bad", "s => s.map(n => n.textContent)")
        assert len(bad) == 1 and "signature" in bad[0]
        await browser.close()


async def test_watch_shows_a_room_on_another_platform_live_and_read_only(
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    from adapters.base import Incoming

    async with web_gateway(tmp_path) as gateway, async_playwright() as pw:
        platform = MemoryPlatform()  # stands in for a Matrix/Telegram/Discord room
        platform.admins.add("u1")
        await gateway.add_adapter(platform)
        gateway.config.allowed_rooms.append("mem:r1")
        await platform.on_incoming(Incoming("mem", "r1", "u1", "carol", "/recipe use duo", "e1"))
        web = gateway.adapters["web"]
        browser = await launch(pw)
        page = await browser.new_page()
        await page.goto(web.url)
        await page.click("#nav-watch")
        await page.click("button[data-watch='mem:r1']")
        await page.wait_for_selector("#watch-log >> text=now runs duo@")
        await platform.on_incoming(
            Incoming("mem", "r1", "u1", "carol", "hello spectators", "e2", mentions_bot=True)
        )
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#watch-log .msg.agent .body')]"
            ".filter(n => n.textContent.includes('hello spectators')).length >= 2",
            timeout=30_000,
        )
        people = await page.eval_on_selector_all(
            "#watch-log .msg.person", "ns => ns.map(n => n.innerText)"
        )
        assert any("carol" in p and "hello spectators" in p for p in people)
        assert (
            await page.eval_on_selector_all("#view-watch form, #view-watch input", "n => n.length")
            == 0
        )
        await page.screenshot(path=str(ARTIFACTS / "web-watch.png"), full_page=True)
        await browser.close()
