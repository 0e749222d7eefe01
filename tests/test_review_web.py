"""Adversarial review (issue 13 follow-up): the local web room from a browser's side.

The attack runs in a real headless Chromium against the real gateway's web room; it fails
on the code as reviewed and says in its docstring how bad it is and the smallest fix.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .support import free_port, launch, web_room


async def test_the_web_token_never_reaches_another_server_on_the_same_host(
    tmp_path: Path,
) -> None:
    """Severity: medium. Once the page is opened, the browser keeps the install's token in
    the `potluck_token` cookie. Cookies are scoped by host, not by port, and SameSite
    treats every port of 127.0.0.1 as the same site: the browser sends the token to *any*
    server on 127.0.0.1 it visits or that a page loads from. A local user who runs a server
    on another port (or any local dev server that logs request headers) and gets the person
    to open it receives the token, and with it the whole web room from any client (Origin
    and X-Potluck-Token are just headers outside a browser): every room's watch, receipts
    and transcripts, `/recipe set`, admin in the web room. Smallest fix: do not put the token
    in a cookie; the page already embeds it, so send it as a header on every request
    (and as a WebSocket subprotocol or first message), or keep only a derived value that
    the server binds to its own port (e.g. cookie name and HMAC both include the port and a
    per-start nonce), so a leaked cookie opens nothing elsewhere."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie", ""))
        return web.Response(text="<!doctype html><p>an unrelated local app</p>")

    other = web.Application()
    other.router.add_get("/", record)
    runner = web.AppRunner(other)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        from playwright.async_api import async_playwright

        async with web_room(tmp_path) as room, async_playwright() as pw:
            browser = await launch(pw)
            page = await browser.new_page()
            await page.goto(room.url)  # the person opens the web room, as told
            await page.goto(f"http://127.0.0.1:{port}/")  # later, another local page
            await browser.close()
            token = room.token
    finally:
        await runner.cleanup()
    assert seen, "the other server was never visited"
    assert not any(token in cookie for cookie in seen), (
        f"the browser sent the web room's token to 127.0.0.1:{port}: {seen}"
    )
