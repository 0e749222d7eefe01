"""A local server speaking Discord's REST API and Gateway WebSocket, for tests on loopback.

discord.py connects to it unchanged: its REST base is the one setting Potluck exposes
(`api_base`), and the gateway URL comes from `GET /gateway/bot`, as Discord serves it.
It implements what Potluck uses, in Discord's documented shapes: HELLO / IDENTIFY / READY /
GUILD_CREATE / heartbeats, close code 4014 for a privileged intent the application lacks,
MESSAGE_CREATE, THREAD_CREATE, INTERACTION_CREATE (slash commands, autocomplete, buttons)
and their callbacks, MESSAGE_REACTION_ADD / _REMOVE (sent only to a connection that asked
for the Guild Message Reactions intent, as Discord does), channel messages (send, edit,
history with `after`), channel webhooks (create, list, execute with `wait` and `thread_id`,
edit), command registration, members, files (multipart in, served back by URL), and 429
answers with `retry_after` on demand. Tests play the people by posting messages,
interactions and reactions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

VIEW_SEND_READ = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 38)  # view, send, history, threads
MANAGE_GUILD = 1 << 5
MANAGE_WEBHOOKS = 1 << 29
MESSAGE_CONTENT_INTENT = 1 << 15
GUILD_MESSAGE_REACTIONS_INTENT = 1 << 10
GATEWAY_MESSAGE_CONTENT = 1 << 19  # application flag: the intent is enabled


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it: `application/json` exactly (discord.py compares the header)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


@dataclass
class Posted:
    """A message in a channel as the fake keeps it (the people's and the bot's)."""

    data: dict[str, Any]
    edits: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.data["content"]


class FakeDiscord:
    def __init__(self, token: str = "bot-token", content_intent: bool = True) -> None:
        self.token = token
        self.ids = itertools.count(1_100_000_000_000_000_000)
        self.app_id = str(next(self.ids))
        self.app_flags = GATEWAY_MESSAGE_CONTENT if content_intent else 0
        self.guild_id = str(next(self.ids))
        self.channel_id = str(next(self.ids))
        self.admin_role = str(next(self.ids))
        self.bot_role = str(next(self.ids))
        self.bot = self._user("Potluck", bot=True)
        self.people: dict[str, dict[str, Any]] = {}
        self.roles_of: dict[str, list[str]] = {self.bot["id"]: [self.bot_role]}
        self.bot_permissions = VIEW_SEND_READ | MANAGE_WEBHOOKS
        self.channels: dict[str, dict[str, Any]] = {
            self.channel_id: {"id": self.channel_id, "type": 0, "name": "general", "position": 0}
        }
        self.messages: dict[str, list[Posted]] = {self.channel_id: []}
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.rate_limit: dict[str, int] = {}  # "METHOD kind" -> how many calls get 429
        self.limited: list[str] = []
        self.requests: list[str] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.intents: dict[int, int] = {}  # id(socket) → the intents it identified with
        self.identified = asyncio.Event()
        self.seq = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- the people's side ------------------------------------------------------------------

    def _user(self, name: str, bot: bool = False) -> dict[str, Any]:
        return {
            "id": str(next(self.ids)),
            "username": name,
            "global_name": name,
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
        }

    def person(self, name: str, admin: bool = False) -> dict[str, Any]:
        user = self._user(name)
        self.people[user["id"]] = user
        self.roles_of[user["id"]] = [self.admin_role] if admin else []
        return user

    def _member(self, user: dict[str, Any], with_user: bool = True) -> dict[str, Any]:
        member: dict[str, Any] = {
            "roles": self.roles_of.get(user["id"], []),
            "joined_at": "2026-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        if with_user:
            member["user"] = user
        return member

    def _message(
        self, channel: str, author: dict[str, Any], content: str, **extra: Any
    ) -> dict[str, Any]:
        data = {
            "id": str(next(self.ids)),
            "channel_id": channel,
            "guild_id": self.guild_id,
            "author": author,
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            **extra,
        }
        if not author.get("bot"):
            data["member"] = self._member(author, with_user=False)
        return data

    async def say(
        self,
        channel: str,
        author: dict[str, Any],
        content: str,
        mention_bot: bool = False,
        reply_to: str | None = None,
        file: tuple[str, bytes] | None = None,
        online: bool = True,
    ) -> str:
        """A person's message: kept in the channel's history, and sent to the bot if
        `online` (a message sent while the bot is down is only in the history)."""
        extra: dict[str, Any] = {}
        if mention_bot:
            extra["mentions"] = [{**self.bot, "member": self._member(self.bot, False)}]
            content = f"<@{self.bot['id']}> {content}"
        if reply_to:
            extra["message_reference"] = {"message_id": reply_to, "channel_id": channel}
            extra["referenced_message"] = self.find(reply_to).data
            extra["type"] = 19
        if file:
            extra["attachments"] = [self._attachment(*file)]
        data = self._message(channel, author, content, **extra)
        self.messages.setdefault(channel, []).append(Posted(data))
        if online:
            await self.dispatch("MESSAGE_CREATE", data)
        return data["id"]

    async def start_thread(self, name: str, author: dict[str, Any]) -> str:
        thread_id = str(next(self.ids))
        thread = {
            "id": thread_id,
            "type": 11,
            "guild_id": self.guild_id,
            "parent_id": self.channel_id,
            "owner_id": author["id"],
            "name": name,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": datetime.now(UTC).isoformat(),
                "locked": False,
            },
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self.channels[thread_id] = thread
        self.messages[thread_id] = []
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread_id

    async def react(
        self, message_id: str, user: dict[str, Any], emoji: str = "👍", remove: bool = False
    ) -> None:
        """A person adds (or removes) a reaction on a message, in Discord's event shapes."""
        posted = self.find(message_id)
        data: dict[str, Any] = {
            "user_id": user["id"],
            "channel_id": posted.data["channel_id"],
            "message_id": message_id,
            "guild_id": self.guild_id,
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if not remove:  # only additions carry the member and the message's author
            data["member"] = self._member(user)
            data["message_author_id"] = posted.data["author"]["id"]
        event = "MESSAGE_REACTION_REMOVE" if remove else "MESSAGE_REACTION_ADD"
        await self.dispatch(event, data, intent=GUILD_MESSAGE_REACTIONS_INTENT)

    def _interaction(
        self, kind: int, channel: str, user: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        admin = self.admin_role in self.roles_of.get(user["id"], [])
        permissions = VIEW_SEND_READ | (MANAGE_GUILD if admin else 0)
        return {
            "id": str(next(self.ids)),
            "application_id": self.app_id,
            "type": kind,
            "data": data,
            "guild_id": self.guild_id,
            "channel_id": channel,
            "channel": {**self.channels[channel], "guild_id": self.guild_id},
            "member": {**self._member(user), "permissions": str(permissions)},
            "token": f"itoken-{next(self.ids)}",
            "version": 1,
            "app_permissions": str(self.bot_permissions),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }

    def _command_data(self, group: str, sub: str | None, options: dict[str, Any]) -> dict:
        command = next(c for c in self.commands if c["name"] == group)
        leaf = [
            {"name": k, "type": 11 if k == "file" else 3, "value": v, **extra}
            for k, (v, extra) in options.items()
        ]
        if sub:
            return {
                "id": command["id"],
                "name": group,
                "type": 1,
                "options": [{"name": sub, "type": 1, "options": leaf}],
            }
        return {"id": command["id"], "name": group, "type": 1, "options": leaf}

    async def slash(
        self,
        channel: str,
        user: dict[str, Any],
        group: str,
        sub: str | None = None,
        file: tuple[str, bytes] | None = None,
        **options: str,
    ) -> dict[str, Any]:
        """A person runs a slash command; returns the interaction (its callback arrives in
        `callbacks`)."""
        values: dict[str, Any] = {k: (v, {}) for k, v in options.items()}
        resolved: dict[str, Any] = {}
        if file:
            attachment = self._attachment(*file)
            values["file"] = (attachment["id"], {})
            resolved = {"attachments": {attachment["id"]: attachment}}
        data = self._command_data(group, sub, values)
        if resolved:
            data["resolved"] = resolved
        interaction = self._interaction(2, channel, user, data)
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    async def autocomplete(
        self, channel: str, user: dict[str, Any], group: str, sub: str, typed: str
    ) -> list[str]:
        """What the bot suggests while a person types the `args` option."""
        data = self._command_data(group, sub, {"args": (typed, {"focused": True})})
        interaction = self._interaction(4, channel, user, data)
        await self.dispatch("INTERACTION_CREATE", interaction)
        callback = await self.callback_for(interaction["id"])
        return [choice["value"] for choice in callback["data"]["choices"]]

    async def press(self, message_id: str, custom_id: str, user: dict[str, Any]) -> None:
        posted = self.find(message_id)
        data = {"custom_id": custom_id, "component_type": 2}
        interaction = self._interaction(3, posted.data["channel_id"], user, data)
        interaction["message"] = posted.data
        await self.dispatch("INTERACTION_CREATE", interaction)

    async def callback_for(self, interaction_id: str, timeout: float = 10.0) -> dict[str, Any]:
        for _ in range(int(timeout / 0.02)):
            for callback in self.callbacks:
                if callback["interaction_id"] == interaction_id:
                    return callback
            await asyncio.sleep(0.02)
        raise AssertionError(f"no callback for interaction {interaction_id}")

    def find(self, message_id: str) -> Posted:
        for posted in itertools.chain.from_iterable(self.messages.values()):
            if posted.data["id"] == message_id:
                return posted
        raise KeyError(message_id)

    def from_bot(self, channel: str) -> list[Posted]:
        """The bot's messages in a channel, its own and its webhooks'."""
        return [
            p
            for p in self.messages.get(channel, [])
            if p.data["author"]["id"] == self.bot["id"] or p.data.get("webhook_id")
        ]

    def _attachment(self, name: str, data: bytes) -> dict[str, Any]:
        file_id = str(next(self.ids))
        self.files[file_id] = data
        return {
            "id": file_id,
            "filename": name,
            "size": len(data),
            "url": f"{self.url}/attachments/{file_id}/{name}",
            "proxy_url": f"{self.url}/attachments/{file_id}/{name}",
        }

    # -- the gateway WebSocket --------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any], intent: int = 0) -> None:
        """Send an event to every connection (that identified with `intent`, if given)."""
        self.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self.seq, "d": data})
        for socket in list(self.sockets):
            if intent and not self.intents.get(id(socket), 0) & intent:
                continue
            if not socket.closed:
                await socket.send_str(frame)

    def _guild(self) -> dict[str, Any]:
        everyone = {
            "id": self.guild_id,
            "name": "@everyone",
            "permissions": str(VIEW_SEND_READ),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        return {
            "id": self.guild_id,
            "name": "kitchen",
            "owner_id": next(iter(self.people), self.bot["id"]),
            "roles": [
                everyone,
                {
                    **everyone,
                    "id": self.admin_role,
                    "name": "admins",
                    "position": 2,
                    "permissions": str(VIEW_SEND_READ | MANAGE_GUILD),
                },
                {
                    **everyone,
                    "id": self.bot_role,
                    "name": "potluck",
                    "position": 1,
                    "permissions": str(self.bot_permissions),
                },
            ],
            "channels": [c for c in self.channels.values() if c["type"] == 0],
            "threads": [c for c in self.channels.values() if c["type"] == 11],
            "members": [self._member(self.bot)],
            "member_count": 1 + len(self.people),
            "large": False,
            "unavailable": False,
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": "2026-01-01T00:00:00+00:00",
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
        }

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        async for frame in socket:
            if frame.type != WSMsgType.TEXT:
                break
            payload = json.loads(frame.data)
            if payload["op"] == 1:
                await socket.send_json({"op": 11})
            elif payload["op"] == 2:
                identify = payload["d"]
                if identify["token"] != self.token:
                    await socket.close(code=4004, message=b"Authentication failed.")
                    break
                wants_content = identify["intents"] & MESSAGE_CONTENT_INTENT
                if wants_content and not self.app_flags & GATEWAY_MESSAGE_CONTENT:
                    await socket.close(code=4014, message=b"Disallowed intent(s).")
                    break
                self.sockets.append(socket)
                self.intents[id(socket)] = identify["intents"]
                self.seq += 1
                await socket.send_json(
                    {
                        "op": 0,
                        "t": "READY",
                        "s": self.seq,
                        "d": {
                            "v": 10,
                            "user": self.bot,
                            "guilds": [{"id": self.guild_id, "unavailable": True}],
                            "session_id": "session-1",
                            "resume_gateway_url": self.url.replace("http", "ws") + "/gateway",
                            "application": {"id": self.app_id, "flags": self.app_flags},
                            **({"shard": identify["shard"]} if "shard" in identify else {}),
                        },
                    }
                )
                await self.dispatch("GUILD_CREATE", self._guild())
                self.identified.set()
        if socket in self.sockets:
            self.sockets.remove(socket)
        return socket

    # -- REST --------------------------------------------------------------------------------

    def _limited(self, key: str) -> web.Response | None:
        if self.rate_limit.get(key, 0) > 0:
            self.rate_limit[key] -= 1
            self.limited.append(key)
            return _json(
                {"message": "You are being rate limited.", "retry_after": 0.4, "global": False},
                status=429,
                headers={
                    "Retry-After": "1",
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": "0.4",
                    "X-RateLimit-Bucket": "fake",
                    "X-RateLimit-Scope": "user",
                },
            )
        return None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        open_paths = ("/gateway", "/attachments/", "/api/v10/webhooks/", "/api/v10/interactions/")
        if (
            not request.path.startswith(open_paths)
            and request.headers.get("Authorization") != f"Bot {self.token}"
        ):
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        return await handler(request)

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """JSON, or multipart with `payload_json` and `files[n]` (how files are sent)."""
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            files = []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    payload = json.loads(data)
                else:
                    files.append(self._attachment(part.filename or "file", bytes(data)))  # type: ignore[union-attr]
            return payload, files
        return await request.json(), []

    async def _me(self, _request: web.Request) -> web.Response:
        return _json(self.bot)

    async def _application(self, _request: web.Request) -> web.Response:
        owner = next(iter(self.people.values()), self.bot)
        return _json(
            {
                "id": self.app_id,
                "name": "Potluck",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "0" * 64,
                "flags": self.app_flags,
                "team": None,
            }
        )

    async def _gateway_bot(self, _request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.url.replace("http", "ws") + "/gateway",
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _put_commands(self, request: web.Request) -> web.Response:
        commands = await request.json()
        self.commands = [
            {**c, "id": str(next(self.ids)), "application_id": self.app_id, "version": "1"}
            for c in commands
        ]
        return _json(self.commands)

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.match_info["channel"])
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, status=404)
        return _json({**channel, "guild_id": self.guild_id})

    async def _member_of(self, request: web.Request) -> web.Response:
        user = self.people.get(request.match_info["user"])
        if user is None:
            return _json({"message": "Unknown Member", "code": 10007}, status=404)
        return _json(self._member(user))

    async def _post_message(self, request: web.Request) -> web.Response:
        if limited := self._limited("POST message"):
            return limited
        payload, files = await self._body(request)
        channel = request.match_info["channel"]
        extra: dict[str, Any] = {"components": payload.get("components", [])}
        if files:
            extra["attachments"] = files
        if ref := payload.get("message_reference"):
            extra["message_reference"] = ref
        data = self._message(channel, self.bot, payload.get("content", ""), **extra)
        self.messages.setdefault(channel, []).append(Posted(data))
        return _json(data)

    async def _edit_message(self, request: web.Request) -> web.Response:
        if limited := self._limited("PATCH message"):
            return limited
        payload, _ = await self._body(request)
        posted = self.find(request.match_info["message"])
        if "content" in payload:
            posted.edits.append(payload["content"])
            posted.data["content"] = payload["content"]
        posted.data["edited_timestamp"] = datetime.now(UTC).isoformat()
        return _json(posted.data)

    async def _history(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "50"))
        newer = [p.data for p in self.messages.get(channel, []) if int(p.data["id"]) > after]
        newer = newer[:limit]  # oldest first past `after`; Discord returns newest first
        return _json(list(reversed(newer)))

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        if not self.bot_permissions & MANAGE_WEBHOOKS:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        channel = request.match_info["channel"]
        return _json([w for w in self.webhooks.values() if w["channel_id"] == channel])

    async def _create_webhook(self, request: web.Request) -> web.Response:
        if not self.bot_permissions & MANAGE_WEBHOOKS:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        payload = await request.json()
        webhook_id = str(next(self.ids))
        webhook = {
            "id": webhook_id,
            "type": 1,
            "guild_id": self.guild_id,
            "channel_id": request.match_info["channel"],
            "name": payload["name"],
            "avatar": None,
            "token": f"whtoken-{webhook_id}",
            "application_id": None,
            "user": self.bot,
        }
        self.webhooks[webhook_id] = webhook
        return _json(webhook)

    def _webhook(self, request: web.Request) -> dict[str, Any] | None:
        webhook = self.webhooks.get(request.match_info["webhook"])
        if webhook is None or webhook["token"] != request.match_info["token"]:
            return None
        return webhook

    async def _execute_webhook(self, request: web.Request) -> web.Response:
        if limited := self._limited("POST webhook"):
            return limited
        webhook = self._webhook(request)
        if webhook is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        payload, files = await self._body(request)
        channel = request.query.get("thread_id") or webhook["channel_id"]
        author = {
            "id": webhook["id"],
            "username": payload.get("username") or webhook["name"],
            "avatar": None,
            "discriminator": "0000",
            "bot": True,
        }
        data = self._message(
            channel,
            author,
            payload.get("content", ""),
            webhook_id=webhook["id"],
            attachments=files,
        )
        self.messages.setdefault(channel, []).append(Posted(data))
        await self.dispatch("MESSAGE_CREATE", data)  # Discord echoes webhook messages too
        if request.query.get("wait") in ("true", "1", "True"):
            return _json(data)
        return web.Response(status=204)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        if limited := self._limited("PATCH webhook"):
            return limited
        if self._webhook(request) is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        payload, _ = await self._body(request)
        posted = self.find(request.match_info["message"])
        posted.edits.append(payload.get("content", ""))
        posted.data["content"] = payload.get("content", posted.data["content"])
        return _json(posted.data)

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        payload, _ = await self._body(request)
        interaction_id = request.match_info["interaction"]
        self.callbacks.append({"interaction_id": interaction_id, **payload})
        body: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_loading": payload["type"] == 5,
                "response_message_ephemeral": False,
            }
        }
        if payload["type"] == 4:
            channel = self.channel_id
            data = self._message(channel, self.bot, payload["data"].get("content", ""))
            body["interaction"]["response_message_id"] = data["id"]
            body["resource"] = {"type": 4, "message": data}
        return _json(body)

    async def _download(self, request: web.Request) -> web.Response:
        return web.Response(body=self.files[request.match_info["file"]])

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._auth], handler_args={"max_field_size": 65536})
        api = "/api/v10"
        app.add_routes(
            [
                web.get("/gateway", self._gateway),
                web.get(f"{api}/users/@me", self._me),
                web.get(f"{api}/gateway/bot", self._gateway_bot),
                web.get(f"{api}/oauth2/applications/@me", self._application),
                web.put(f"{api}/applications/{{app}}/commands", self._put_commands),
                web.get(f"{api}/channels/{{channel}}", self._get_channel),
                web.get(f"{api}/guilds/{{guild}}/members/{{user}}", self._member_of),
                web.post(f"{api}/channels/{{channel}}/messages", self._post_message),
                web.get(f"{api}/channels/{{channel}}/messages", self._history),
                web.patch(f"{api}/channels/{{channel}}/messages/{{message}}", self._edit_message),
                web.get(f"{api}/channels/{{channel}}/webhooks", self._list_webhooks),
                web.post(f"{api}/channels/{{channel}}/webhooks", self._create_webhook),
                web.post(f"{api}/webhooks/{{webhook}}/{{token}}", self._execute_webhook),
                web.patch(
                    f"{api}/webhooks/{{webhook}}/{{token}}/messages/{{message}}",
                    self._edit_webhook_message,
                ),
                web.post(
                    f"{api}/interactions/{{interaction}}/{{token}}/callback",
                    self._interaction_callback,
                ),
                web.get("/attachments/{file}/{name}", self._download),
            ]
        )
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    async def drop_connections(self) -> None:
        for socket in list(self.sockets):
            await socket.close()
        self.sockets.clear()

    async def stop(self) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
