"""Telegram, through python-telegram-bot's Bot: long polling with our own offset, or a
webhook when `webhook_url` is set.

The update offset is the cursor: it is reported only after an update has been handed to the
gateway, so a restart resumes exactly there (and Telegram redelivers what was never
confirmed, which the gateway's store turns into a no-op). Forum topics are rooms of their
own (`chat:topic`). Group flood limits are about 20 messages a minute, so edits are slower
here than elsewhere, and `RetryAfter` is passed on for the outbox to wait out.

People's 👍/👎 arrive as `message_reaction` updates, which Telegram sends only when asked for
in `allowed_updates` and only to a bot that is an administrator of the group. An update
gives a person's reactions on a message before and after; each one added or taken away
becomes a `Reaction`. It names the chat, not the topic, so the gateway looks for the
message in the chat's topics too (`whole_chat`).

Webhook mode: Telegram posts each update to `webhook_url` (a public HTTPS address that a
reverse proxy forwards to `webhook_listen`, loopback by default), one at a time, with a
secret header checked here; an update is acknowledged only once the gateway has stored it,
so Telegram redelivers anything not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import os
import secrets
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from aiohttp import web

# PTB 22 reports retry_after as seconds unless this opts in to timedelta (its future
# default); `_seconds` reads either, so opt in and skip the deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "1")

from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from .base import (
    Attachment,
    Capabilities,
    Incoming,
    OnCursor,
    OnIncoming,
    Outgoing,
    RateLimited,
    Reaction,
)

log = logging.getLogger("potluck.telegram")

PRIVACY_HELP = (
    "In groups with privacy mode on, I see commands, messages that mention me and replies "
    "to me. To let agents follow the whole conversation, make me an admin or turn privacy "
    "mode off with @BotFather (/setprivacy). 👍/👎 on an agent's message count as your "
    "verdict on the recipe when I am an admin here (Telegram tells only admins of reactions)."
)
# What the bot asks Telegram for: message_reaction is not sent unless asked for.
UPDATES = ["message", "callback_query", "message_reaction"]


@dataclass(frozen=True)
class TelegramSettings:
    token: str
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    poll_timeout: int = 30
    webhook_url: str = ""  # set to receive updates by webhook instead of long polling
    webhook_listen: str = "127.0.0.1:8738"


def room_of(chat_id: int, thread_id: int | None, is_forum: bool) -> str:
    """A forum topic is its own room; elsewhere the chat is the room."""
    return f"{chat_id}:{thread_id}" if is_forum and thread_id else str(chat_id)


def chat_and_thread(room: str) -> tuple[int, int | None]:
    chat, _, thread = room.partition(":")
    return int(chat), int(thread) if thread else None


class TelegramAdapter:
    name = "telegram"
    capabilities = Capabilities(
        edit_interval_s=3.0,
        max_chars=4096,
        files=True,
        max_file_bytes=1024 * 1024,  # recipes and cards are small; refuse anything bigger
        buttons=True,
        threads=True,  # forum topics
        help_note=PRIVACY_HELP,
    )

    def __init__(self, settings: TelegramSettings, commands: list[tuple[str, str, bool]]) -> None:
        self.settings = settings
        self.commands = commands  # (command, description, admin only)
        self.bot = Bot(
            settings.token, base_url=settings.base_url, base_file_url=settings.base_file_url
        )
        self.username = ""
        self.bot_id = 0
        self._task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    async def connect(self) -> None:
        await self.bot.initialize()  # getMe: a wrong token fails here, clearly
        self.username = self.bot.username or ""
        if self.username:  # /command@this_bot is ours; /command@another_bot is not
            self.capabilities = replace(self.capabilities, bot_names=(self.username.lower(),))
        self.bot_id = self.bot.id
        everyone = [BotCommand(c, d) for c, d, admin in self.commands if not admin]
        admins = [BotCommand(c, d) for c, d, _admin in self.commands]
        await self.bot.set_my_commands(everyone, scope=BotCommandScopeAllGroupChats())
        await self.bot.set_my_commands(admins, scope=BotCommandScopeAllChatAdministrators())

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        if self.settings.webhook_url:
            await self._start_webhook(on_incoming, on_cursor)
            return
        await self.bot.delete_webhook()  # a webhook left set would make getUpdates fail (409)
        offset = int(cursor) + 1 if cursor else None
        self._task = asyncio.create_task(self._poll(offset, on_incoming, on_cursor))

    async def _start_webhook(self, on_incoming: OnIncoming, on_cursor: OnCursor) -> None:
        secret = secrets.token_urlsafe(32)  # new at every start: only this process accepts
        lock = asyncio.Lock()

        async def receive(request: web.Request) -> web.Response:
            given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            if not hmac.compare_digest(given, secret):
                return web.Response(status=403)
            update = Update.de_json(await request.json(), self.bot)
            async with lock:  # in order, even if Telegram opened more than one connection
                for event in await self._events(update) if update else []:
                    await on_incoming(event)  # stored before we acknowledge
                if update is not None:
                    await on_cursor(str(update.update_id))
            return web.Response(text="ok")

        app = web.Application(client_max_size=1 << 20)
        path = urlsplit(self.settings.webhook_url).path or "/"
        app.router.add_post(path, receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        host, _, port = self.settings.webhook_listen.rpartition(":")
        await web.TCPSite(self._runner, host or "127.0.0.1", int(port)).start()
        await self.bot.set_webhook(
            self.settings.webhook_url,
            secret_token=secret,
            max_connections=1,
            allowed_updates=UPDATES,
        )
        log.info("telegram: webhook at %s, listening on %s", path, self.settings.webhook_listen)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            await self.bot.shutdown()

    async def _poll(self, offset: int | None, on_incoming: OnIncoming, on_cursor: OnCursor) -> None:
        delay = 1.0
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=self.settings.poll_timeout,
                    allowed_updates=UPDATES,
                    read_timeout=self.settings.poll_timeout + 10,
                )
                delay = 1.0
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
                continue
            except (NetworkError, TimedOut) as exc:  # includes 409: another poller
                log.warning("Telegram getUpdates failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            for update in updates:
                for event in await self._events(update):
                    await on_incoming(event)
                offset = update.update_id + 1
                await on_cursor(str(update.update_id))

    async def _events(self, update) -> list[Incoming | Reaction]:  # type: ignore[no-untyped-def]
        if update.message_reaction is not None:
            return self._reactions(update.update_id, update.message_reaction)
        incoming = await self._incoming(update)
        return [] if incoming is None else [incoming]

    def _reactions(self, update_id: int, changed) -> list[Incoming | Reaction]:  # type: ignore[no-untyped-def]
        """A person's reactions on a message, before and after: one Reaction for each
        emoji added or taken away (an anonymous admin's, which names no person, is not a
        person's verdict)."""
        user = changed.user
        if user is None or user.id == self.bot_id:
            return []

        def emojis(reactions) -> set[str]:  # type: ignore[no-untyped-def]
            return {r.emoji for r in reactions if getattr(r, "type", "") == "emoji"}

        before, after = emojis(changed.old_reaction), emojis(changed.new_reaction)
        name = user.username or user.first_name or str(user.id)
        out: list[Incoming | Reaction] = []
        for added, emoji in [(False, e) for e in sorted(before - after)] + [
            (True, e) for e in sorted(after - before)
        ]:
            out.append(
                Reaction(
                    "telegram",
                    str(changed.chat.id),
                    str(user.id),
                    name,
                    str(changed.message_id),
                    emoji,
                    f"r{update_id}:{'+' if added else '-'}{emoji}",
                    added=added,
                    whole_chat=True,
                )
            )
        return out

    async def _incoming(self, update) -> Incoming | None:  # type: ignore[no-untyped-def]
        if update.callback_query is not None:
            return await self._pressed(update.callback_query)
        message = update.message
        if message is None or message.from_user is None:
            return None
        if message.text is None and message.document is None:
            return None
        if message.from_user.id == self.bot_id:
            return None
        chat = message.chat
        room = room_of(chat.id, message.message_thread_id, bool(getattr(chat, "is_forum", False)))
        text = message.text or message.caption or ""
        # A file is fetched only for a command that takes one (/recipe import): nothing is
        # downloaded for chatter, nor before the gateway has decided whether the room counts.
        wants_file = message.document is not None and text.lstrip().startswith("/")
        attachments = await self._document(message.document) if wants_file else ()
        mentions_bot = bool(self.username) and f"@{self.username.lower()}" in text.lower()
        replied = message.reply_to_message
        reply_to_bot = bool(replied and replied.from_user and replied.from_user.id == self.bot_id)
        user = message.from_user
        return Incoming(
            platform="telegram",
            room=room,
            sender=str(user.id),
            sender_name=user.username or user.first_name or str(user.id),
            text=text,
            event_id=str(message.message_id),
            mentions_bot=mentions_bot or chat.type == "private",
            reply_to=str(replied.message_id) if replied else None,
            reply_to_bot=reply_to_bot,
            attachments=attachments,
            parent=str(chat.id) if room != str(chat.id) else None,
        )

    async def _document(self, document) -> tuple[Attachment, ...]:  # type: ignore[no-untyped-def]
        if (document.file_size or 0) > self.capabilities.max_file_bytes:
            return ()
        file = await self.bot.get_file(document.file_id)
        data = bytes(await file.download_as_bytearray())
        name = document.file_name or "recipe.yaml"
        return (Attachment(name, document.mime_type or "application/octet-stream", data),)

    async def _pressed(self, query) -> Incoming | None:  # type: ignore[no-untyped-def]
        """A button press is the command it carries, said by whoever pressed it."""
        await self.bot.answer_callback_query(query.id)
        message = query.message
        if message is None or not query.data:
            return None
        chat = message.chat
        room = room_of(
            chat.id,
            getattr(message, "message_thread_id", None),
            bool(getattr(chat, "is_forum", False)),
        )
        user = query.from_user
        return Incoming(
            "telegram",
            room,
            str(user.id),
            user.username or user.first_name,
            query.data,
            f"cb{query.id}",
            mentions_bot=True,
            parent=str(chat.id) if room != str(chat.id) else None,
        )

    @staticmethod
    def _html(message: Outgoing) -> str:
        body = html.escape(message.text)
        return f"<b>{html.escape(message.agent)}</b>: {body}" if message.agent else body

    @staticmethod
    def _buttons(message: Outgoing) -> InlineKeyboardMarkup | None:
        usable = [(label, data) for label, data in message.choices if len(data.encode()) <= 64]
        if not usable:
            return None
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton(label[:60], callback_data=data)] for label, data in usable]
        )

    async def send(self, message: Outgoing) -> str:
        chat, thread = chat_and_thread(message.room)
        reply = int(message.reply_to) if message.reply_to and message.reply_to.isdigit() else None
        try:
            if message.attachments:
                file = message.attachments[0]
                sent = await self.bot.send_document(
                    chat,
                    InputFile(file.data, filename=file.name),
                    caption=self._html(message)[:1024],
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread,
                    reply_to_message_id=reply,
                )
            else:
                sent = await self.bot.send_message(
                    chat,
                    self._html(message),
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread,
                    reply_to_message_id=reply,
                    reply_markup=self._buttons(message),
                )
        except RetryAfter as exc:
            raise RateLimited(_seconds(exc.retry_after)) from None
        return str(sent.message_id)

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        chat, _thread = chat_and_thread(room)
        try:
            await self.bot.edit_message_text(
                self._html(message),
                chat_id=chat,
                message_id=int(message_id),
                parse_mode=ParseMode.HTML,
            )
        except RetryAfter as exc:
            raise RateLimited(_seconds(exc.retry_after)) from None
        except BadRequest as exc:
            if "message is not modified" not in str(exc).lower():
                raise

    async def is_admin(self, room: str, user: str) -> bool:
        chat, _thread = chat_and_thread(room)
        member = await self.bot.get_chat_member(chat, int(user))
        return member.status in ("creator", "administrator")


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
