"""Adversarial review (issue 13 follow-up): where a configured key goes when a recipe names
no api_base at all. Real litellm, real servers on loopback; fails on the code as reviewed."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from aiohttp import web

from runtime.models.client import CallParams, Models
from runtime.models.keys import Endpoint, Provider, normalise_endpoint

from .fake_providers import FakeProvider

OLLAMA_KEY = "ollama-cloud-key-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hi"}]


class Squatter(FakeProvider):
    """A local user's server on a port of their choosing (here: Ollama's default, which
    nothing on this machine listens on), recording what arrives. Its own thread and loop,
    like FakeProvider, since litellm asks Ollama's /api/show synchronously."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.wanted = port

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)

        async def setup() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.wanted).start()
            self.port = self.wanted

        try:
            loop.run_until_complete(setup())
        finally:
            ready.set()
        loop.run_forever()
        loop.close()


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_key_listed_for_a_remote_ollama_is_not_sent_to_localhost_11434(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Severity: medium. keys.route gives a call with no api_base the provider's configured
    key, on the rule "no api_base = the provider's official endpoint". For providers whose
    litellm default is a port on this machine (ollama and ollama_chat: localhost:11434; also
    lm_studio, llamafile, xinference…) that "official endpoint" is whoever listens there. An
    install that configures `[providers.ollama] api_key` for the endpoint it lists (Ollama's
    cloud, or a remote box) sends that key to http://localhost:11434 as soon as any recipe
    (a stranger's, or `/recipe set agents.X.model ollama/x` in a room) names `ollama/…`
    without an api_base. The attacker gets: the Ollama key, by listening on 127.0.0.1:11434
    as any local user (nothing runs there when the install uses a remote Ollama).
    Smallest fix: for providers whose default base is loopback (a short list, like
    KEYLESS_OK), a call without api_base carries the key only when that default base is
    itself listed under [providers.X] endpoints; otherwise it goes keyless, with the note."""
    if not _free(11434):
        pytest.skip("something already listens on 127.0.0.1:11434 (a real Ollama?)")
    for name in ("OLLAMA_API_BASE", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    remote = FakeProvider()  # the Ollama the install's config names
    squatter = Squatter(11434)  # a local user, on Ollama's default port
    await remote.start()
    await squatter.start()
    try:
        listed = Endpoint(normalise_endpoint(remote.root))
        models = Models(
            providers={"ollama": Provider(api_key=OLLAMA_KEY, endpoints=(listed,))}, retries=0
        )
        # a recipe's agent: `model: ollama/llama3.2`, no api_base; scripted/echo after it
        await models.complete(["ollama/llama3.2", "scripted/echo"], MESSAGES, CallParams())
        got = [value for value in squatter.seen_credentials() if OLLAMA_KEY in value]
    finally:
        await squatter.stop()
        await remote.stop()
    assert squatter.requests, "the call never reached localhost:11434"
    assert got == [], f"the install's Ollama key reached 127.0.0.1:11434: {got}"
