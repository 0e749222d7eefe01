"""A local server speaking the Telegram Bot API's HTTP contract, for tests on loopback.

It implements what Potluck uses, with Telegram's own shapes: `getMe`, long-polling
`getUpdates` with offsets (updates below the offset are confirmed and dropped), a second
concurrent poller gets 409, `sendMessage`, `editMessageText` (400 "message is not
modified"), `deleteMessage`, `setMyCommands` per scope, `getChatMember`, and 429 with
`retry_after` on demand; `setWebhook` / `deleteWebhook`, after which updates are POSTed to
the webhook one at a time with the secret header, and kept (redelivered) until one is
answered with 2xx. `message_reaction` updates (a person's reactions on a message, old and
new) are delivered only to a bot that asked for them in `allowed_updates`, as Telegram
does; the rest of an unwanted kind are dropped. Tests play the people by queuing updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

BOT = {
    "id": 7000,
    "is_bot": True,
    "first_name": "Potluck",
    "username": "potluck_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Sent:
    chat_id: int
    message_id: int
    text: str
    thread: int | None
    edits: list[str] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    document: tuple[str, bytes] | None = None


class FakeTelegram:
    def __init__(self, token: str = "123456:TEST") -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.next_update = 1
        self.next_message = 1000
        self.sent: dict[int, Sent] = {}
        self.commands: dict[str, list[str]] = {}
        self.admins: set[int] = set()
        self.rate_limit: dict[str, int] = {}  # method -> how many calls get 429
        self.calls: list[str] = []
        self.polling = False
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (name, bytes)
        self.fetched: list[str] = []  # file ids the bot downloaded
        self.answered: list[str] = []
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.webhook: dict[str, Any] = {}
        self.pushed: list[int] = []  # update ids the webhook acknowledged
        # Telegram's default when a bot never said: everything but these
        self.allowed_updates: set[str] | None = None
        self.dropped: list[int] = []  # update ids not delivered: a kind the bot did not ask for
        self._pusher: asyncio.Task[None] | None = None
        self.url = ""

    # -- the people's side ------------------------------------------------------------------

    def say(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        name: str = "someone",
        reply_to: int | None = None,
        thread: int | None = None,
        forum: bool = False,
    ) -> int:
        message_id = self.next_message
        self.next_message += 1
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup", "title": "kitchen", "is_forum": forum},
            "from": {"id": user_id, "is_bot": False, "first_name": name, "username": name},
            "text": text,
        }
        if thread:
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
        if reply_to is not None:
            original = self.sent.get(reply_to)
            message["reply_to_message"] = {
                "message_id": reply_to,
                "date": int(time.time()),
                "chat": message["chat"],
                "from": BOT if original else message["from"],
                "text": original.text if original else "",
            }
        self.updates.append({"update_id": self.next_update, "message": message})
        self.next_update += 1
        self._arrived.set()
        return message_id

    def post_file(
        self,
        chat_id: int,
        user_id: int,
        name: str,
        data: bytes,
        caption: str,
        *,
        user: str = "someone",
    ) -> int:
        """A person sends a document with a caption."""
        file_id = f"file{len(self.files) + 1}"
        self.files[file_id] = (name, data)
        message_id = self.say(chat_id, user_id, caption, name=user)
        message = self.updates[-1]["message"]
        message.pop("text")
        message["caption"] = caption
        message["document"] = {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_name": name,
            "mime_type": "application/yaml",
            "file_size": len(data),
        }
        return message_id

    def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> None:
        """A person presses an inline button under one of the bot's messages."""
        sent = self.sent[message_id]
        self.updates.append(
            {
                "update_id": self.next_update,
                "callback_query": {
                    "id": f"q{self.next_update}",
                    "chat_instance": "ci",
                    "data": data,
                    "from": {"id": user_id, "is_bot": False, "first_name": str(user_id)},
                    "message": self._message(sent),
                },
            }
        )
        self.next_update += 1
        self._arrived.set()

    def react(
        self,
        chat_id: int,
        user_id: int,
        message_id: int,
        new: list[str],
        old: list[str] | None = None,
        *,
        name: str = "someone",
    ) -> None:
        """A person changes their reactions on a message (`old` → `new` emoji)."""
        self.updates.append(
            {
                "update_id": self.next_update,
                "message_reaction": {
                    "chat": {"id": chat_id, "type": "supergroup", "title": "kitchen"},
                    "message_id": message_id,
                    "user": {"id": user_id, "is_bot": False, "first_name": name, "username": name},
                    "date": int(time.time()),
                    "old_reaction": [{"type": "emoji", "emoji": e} for e in old or []],
                    "new_reaction": [{"type": "emoji", "emoji": e} for e in new],
                },
            }
        )
        self.next_update += 1
        self._arrived.set()

    def _wanted(self, update: dict[str, Any]) -> bool:
        kind = next(k for k in update if k != "update_id")
        if self.allowed_updates is None:
            return kind not in ("chat_member", "message_reaction", "message_reaction_count")
        return kind in self.allowed_updates

    def _drop_unwanted(self) -> None:
        self.dropped += [u["update_id"] for u in self.updates if not self._wanted(u)]
        self.updates = [u for u in self.updates if self._wanted(u)]

    def _ask(self, params: dict[str, Any]) -> None:
        """`allowed_updates` as a bot sends it (a JSON list); absent keeps the last one."""
        wanted = params.get("allowed_updates")
        if isinstance(wanted, str):
            wanted = json.loads(wanted)
        if isinstance(wanted, list):
            self.allowed_updates = set(wanted) or None

    def from_bot(self, chat_id: int) -> list[Sent]:
        return [s for s in self.sent.values() if s.chat_id == chat_id]

    # -- the Bot API ------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return await request.json()
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = (value.filename, value.file.read())
                continue
            text = str(value)
            try:
                params[key] = json.loads(text)
            except json.JSONDecodeError:
                params[key] = text
        return params

    @staticmethod
    def ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def error(code: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=code)

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self.error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append(method)
        if self.rate_limit.get(method, 0) > 0:
            self.rate_limit[method] -= 1
            return self.error(429, "Too Many Requests: retry after 1", retry_after=1)
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            return self.error(404, "Not Found: method not found")
        return await handler(params)

    async def api_getMe(self, params: dict[str, Any]) -> web.Response:
        return self.ok(BOT)

    async def api_setMyCommands(self, params: dict[str, Any]) -> web.Response:
        scope = (params.get("scope") or {"type": "default"})["type"]
        self.commands[scope] = [c["command"] for c in params["commands"]]
        return self.ok(True)

    async def api_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = {"url": params["url"], "secret": params.get("secret_token", "")}
        self._ask(params)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push())
        self._arrived.set()
        return self.ok(True)

    async def api_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = {}
        return self.ok(True)

    async def _push(self) -> None:
        """Deliver to the webhook in order; an update stays queued until acknowledged."""
        async with aiohttp.ClientSession() as session:
            while self.webhook:
                self._drop_unwanted()
                if not self.updates:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), 0.5)
                    continue
                update = self.updates[0]
                headers = {"X-Telegram-Bot-Api-Secret-Token": self.webhook["secret"]}
                try:
                    async with session.post(
                        self.webhook["url"], json=update, headers=headers
                    ) as response:
                        if response.status < 300:
                            self.updates.pop(0)
                            self.pushed.append(update["update_id"])
                            continue
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)  # Telegram retries later

    async def api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook:
            return self.error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        if self.polling:
            return self.error(409, "Conflict: terminated by other getUpdates request")
        self.polling = True
        self._ask(params)
        try:
            offset = int(params.get("offset") or 0)
            if offset:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            self._drop_unwanted()
            deadline = time.monotonic() + float(params.get("timeout") or 0)
            while not self.updates and time.monotonic() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
                self._drop_unwanted()
            return self.ok(self.updates[: int(params.get("limit") or 100)])
        finally:
            self.polling = False

    def _message(self, sent: Sent) -> dict[str, Any]:
        message = {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": {"id": sent.chat_id, "type": "supergroup"},
            "from": BOT,
            "text": sent.text,
        }
        if sent.thread:
            message["message_thread_id"] = sent.thread
        return message

    async def api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        text = str(params["text"])
        if not text.strip():
            return self.error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self.error(400, "Bad Request: message is too long")
        sent = Sent(
            int(params["chat_id"]), self.next_message, text, params.get("message_thread_id")
        )
        markup = params.get("reply_markup") or {}
        if isinstance(markup, str):
            markup = json.loads(markup)
        sent.buttons = [
            (b["text"], b["callback_data"])
            for row in markup.get("inline_keyboard", [])
            for b in row
        ]
        self.next_message += 1
        self.sent[sent.message_id] = sent
        return self.ok(self._message(sent))

    async def api_editMessageText(self, params: dict[str, Any]) -> web.Response:
        sent = self.sent.get(int(params["message_id"]))
        if sent is None:
            return self.error(400, "Bad Request: message to edit not found")
        text = str(params["text"])
        if text == sent.text:
            return self.error(
                400,
                "Bad Request: message is not modified: specified new "
                "message content and reply markup are exactly the same",
            )
        if len(text) > 4096:
            return self.error(400, "Bad Request: MESSAGE_TOO_LONG")
        sent.edits.append(text)
        sent.text = text
        return self.ok(self._message(sent))

    async def api_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        self.answered.append(str(params["callback_query_id"]))
        return self.ok(True)

    async def api_sendDocument(self, params: dict[str, Any]) -> web.Response:
        document = params.get("document")
        if not isinstance(document, tuple):
            return self.error(400, "Bad Request: there is no document in the request")
        sent = Sent(
            int(params["chat_id"]),
            self.next_message,
            str(params.get("caption", "")),
            params.get("message_thread_id"),
            document=document,
        )
        self.next_message += 1
        self.sent[sent.message_id] = sent
        message = self._message(sent)
        message["document"] = {
            "file_id": "out",
            "file_unique_id": "out",
            "file_name": document[0],
            "file_size": len(document[1]),
        }
        return self.ok(message)

    async def api_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            return self.error(400, "Bad Request: invalid file_id")
        return self.ok(
            {
                "file_id": file_id,
                "file_unique_id": file_id,
                "file_size": len(self.files[file_id][1]),
                "file_path": f"docs/{file_id}",
            }
        )

    async def download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        if request.match_info["token"] != self.token or file_id not in self.files:
            return web.Response(status=404)
        self.fetched.append(file_id)
        return web.Response(body=self.files[file_id][1])

    async def api_deleteMessage(self, params: dict[str, Any]) -> web.Response:
        return self.ok(self.sent.pop(int(params["message_id"]), None) is not None)

    async def api_getChatMember(self, params: dict[str, Any]) -> web.Response:
        user = int(params["user_id"])
        status = "administrator" if user in self.admins else "member"
        return self.ok(
            {
                "status": status,
                "user": {"id": user, "is_bot": False, "first_name": str(user)},
                **(
                    {
                        "can_be_edited": False,
                        "is_anonymous": False,
                        "can_manage_chat": True,
                        "can_delete_messages": True,
                        "can_manage_video_chats": True,
                        "can_restrict_members": True,
                        "can_promote_members": False,
                        "can_change_info": True,
                        "can_invite_users": True,
                        "can_post_stories": False,
                        "can_edit_stories": False,
                        "can_delete_stories": False,
                    }
                    if status == "administrator"
                    else {}
                ),
            }
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self.handle)
        app.router.add_get("/bot{token}/{method}", self.handle)
        app.router.add_get("/file/bot{token}/{path:.*}", self.download)
        # A poller that hangs up ends its long poll, as on Telegram's side.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.webhook = {}
        if self._pusher is not None:
            self._pusher.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
