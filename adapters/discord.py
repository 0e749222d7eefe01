"""Discord (discord.py 2.x): slash commands, one webhook voice per agent, threads, edits.

Each agent speaks through the channel's webhook under its own name, so a conversation looks
like several participants; without Manage Webhooks the bot speaks for them with labels and
says so once. Threads are rooms of their own. Slash commands mirror the text commands (also
typed as `!potluck …`), with recipe names autocompleted. Events are handed over in the order
they arrived; the cursor is the last message id seen per channel, and at start the history
after it is read back, so messages sent while the gateway was down are answered (the
gateway's unique event key drops any seen twice). discord.py waits out 429s itself.

People's 👍/👎 arrive as reaction events (the non-privileged Guild Message Reactions intent).
A reaction on an agent's webhook message names the bare message id; it is given back in the
form `send` returned (`w<webhook>:<id>`), from the message's author where Discord says it
(reactions added) or from the messages this adapter sent (reactions removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.http import Route

from .base import Attachment, Capabilities, Incoming, OnCursor, OnIncoming, Outgoing, Reaction

log = logging.getLogger("potluck.discord")

INTENTS_HELP = (
    "Discord refused the Message Content intent. In the Developer Portal open your "
    "application → Bot → Privileged Gateway Intents, turn on MESSAGE CONTENT INTENT, save, "
    "and start Potluck again (without it the bot cannot read what people say)."
)
HELP_NOTE = (
    "On Discord: type / to see the commands (recipe names autocomplete), or write "
    "!potluck … . Agents answer when mentioned or replied to, as the recipe says. Each agent "
    "speaks as its own participant when I have Manage Webhooks; start a thread to give a "
    "conversation its own room."
)
NO_WEBHOOKS = (
    "(I lack the Manage Webhooks permission in this channel, so the agents speak through me "
    "with their names as labels. Give me Manage Webhooks to see each one as its own "
    "participant.)"
)
WEBHOOK_NAME = "Potluck"
SENT_KEPT = 10_000  # webhook messages remembered, to name a removed reaction's message
RECIPE_ARGUMENT = {"use", "show", "fork", "export", "history", "diff", "record"}


@dataclass(frozen=True)
class DiscordSettings:
    token: str
    api_base: str = "https://discord.com/api/v10"  # a local server in tests
    ready_timeout_s: float = 60.0


@dataclass
class _Voice:
    webhook: discord.Webhook | None  # None: no Manage Webhooks here, labels instead
    told: bool = False


class DiscordAdapter:
    name = "discord"
    capabilities = Capabilities(
        edit_interval_s=1.2,  # Discord allows about 5 edits per 5 s per channel
        max_chars=2000,
        files=True,
        max_file_bytes=1024 * 1024,
        buttons=True,
        threads=True,
        help_note=HELP_NOTE,
    )

    def __init__(
        self,
        settings: DiscordSettings,
        specs: dict[str, Any],
        recipe_names: Callable[[], list[str]] = list,
    ) -> None:
        self.settings = settings
        self.specs = specs  # gateway.commands.SPECS: the slash commands mirror them
        self.recipe_names = recipe_names
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.message_content = True  # privileged: checked at start
        intents.guild_reactions = True  # people's 👍/👎 on agents' messages
        # Sharded client: it asks REST (/gateway/bot) where the gateway is.
        self.client = discord.AutoShardedClient(
            intents=intents, allowed_mentions=discord.AllowedMentions.none()
        )
        self.tree = app_commands.CommandTree(self.client)
        self._voices: dict[int, _Voice] = {}
        self._members: dict[tuple[int, int], discord.Member] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._cursor: dict[str, str] = {}
        self._sent: dict[int, str] = {}  # webhook message id → the id `send` returned
        self._ready = asyncio.Event()
        self._build_commands()
        self.client.event(self.on_ready)
        self.client.event(self.on_message)
        self.client.event(self.on_interaction)
        self.client.event(self.on_raw_reaction_add)
        self.client.event(self.on_raw_reaction_remove)

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        Route.BASE = self.settings.api_base.rstrip("/")
        task = asyncio.create_task(self.client.start(self.settings.token), name="discord")
        self._tasks.append(task)
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {task, ready}, timeout=self.settings.ready_timeout_s, return_when="FIRST_COMPLETED"
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                error = task.exception()
                if isinstance(error, discord.PrivilegedIntentsRequired):
                    raise RuntimeError(INTENTS_HELP) from error
                if isinstance(error, discord.LoginFailure):
                    raise RuntimeError(
                        "Discord did not accept the bot token: copy it again from the "
                        "Developer Portal → Bot → Reset Token, into [discord] token"
                    ) from error
                log.error("discord: connection failed", exc_info=error)
                raise RuntimeError(f"Discord connection failed: {error!r}") from error
            await self.client.close()
            raise RuntimeError("Discord did not get ready in time; is the token right?")
        synced = await self.tree.sync()
        log.info("discord: %d slash commands registered", len(synced))

    async def on_ready(self) -> None:
        self._ready.set()

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        self._cursor = json.loads(cursor) if cursor else {}
        await self._catch_up()
        self._tasks.append(asyncio.create_task(self._deliver(on_incoming, on_cursor)))

    async def _catch_up(self) -> None:
        """Messages sent while the gateway was down, from each known channel's history."""
        for channel_id, last in list(self._cursor.items()):
            try:
                channel = await self._channel(int(channel_id))
                history = channel.history(
                    after=discord.Object(int(last)), limit=500, oldest_first=True
                )
                async for message in history:
                    self._queue.put_nowait(message)
            except discord.HTTPException as exc:
                log.warning("discord: cannot read back channel %s: %s", channel_id, exc)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.client.close()

    # -- events in ---------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        self._queue.put_nowait(message)  # one consumer keeps the arrival order

    async def _deliver(self, on_incoming: OnIncoming, on_cursor: OnCursor) -> None:
        while True:
            item = await self._queue.get()
            try:
                incoming = await self._incoming(item)
                if incoming is not None:
                    await on_incoming(incoming)
            except Exception:  # one bad event must not stop the rest
                log.exception("discord: could not handle an event")
            if isinstance(item, discord.Message):
                key = str(item.channel.id)
                if int(self._cursor.get(key, "0")) < item.id:
                    self._cursor[key] = str(item.id)
                    await on_cursor(json.dumps(self._cursor, sort_keys=True))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self._queue.put_nowait(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self._queue.put_nowait(payload)

    def _reaction(self, payload: discord.RawReactionActionEvent) -> Reaction | None:
        me = self.client.user
        if (me is not None and payload.user_id == me.id) or payload.guild_id is None:
            return None
        added = payload.event_type == "REACTION_ADD"
        if payload.member is not None and payload.member.bot:
            return None
        target = self._sent.get(payload.message_id, str(payload.message_id))
        author = payload.message_author_id
        if author is not None and any(
            v.webhook is not None and v.webhook.id == author for v in self._voices.values()
        ):
            target = f"w{author}:{payload.message_id}"
        emoji = payload.emoji.name or str(payload.emoji)
        name = payload.member.display_name if payload.member else str(payload.user_id)
        channel = self.client.get_channel(payload.channel_id)
        return Reaction(
            "discord",
            str(payload.channel_id),
            str(payload.user_id),
            name,
            target,
            emoji,
            f"r{payload.message_id}:{payload.user_id}:{'+' if added else '-'}{emoji}:"
            f"{discord.utils.utcnow().timestamp():.6f}",
            added=added,
            parent=_thread_parent(channel),
        )

    async def _incoming(self, item: Any) -> Incoming | Reaction | None:
        if isinstance(item, Incoming):
            return item
        if isinstance(item, discord.RawReactionActionEvent):
            return self._reaction(item)
        message: discord.Message = item
        me = self.client.user
        if message.webhook_id is not None or (me is not None and message.author.id == me.id):
            return None  # our agents and notices, echoed back
        if message.author.bot or message.guild is None:
            return None
        if isinstance(message.author, discord.Member):
            self._members[(message.guild.id, message.author.id)] = message.author
        text = message.content
        mentioned = me is not None and any(u.id == me.id for u in message.mentions)
        if me is not None:
            text = text.replace(f"<@{me.id}>", "").replace(f"<@!{me.id}>", "").strip()
        reply_to = message.reference.message_id if message.reference else None
        resolved = message.reference.resolved if message.reference else None
        reply_to_bot = isinstance(resolved, discord.Message) and (
            resolved.webhook_id is not None or (me is not None and resolved.author.id == me.id)
        )
        files = tuple(
            [
                Attachment(a.filename, a.content_type or "", await a.read())
                for a in message.attachments[:1]
                if a.size <= self.capabilities.max_file_bytes and text.lstrip().startswith("/")
            ]
        )
        return Incoming(
            platform="discord",
            room=str(message.channel.id),
            sender=str(message.author.id),
            sender_name=message.author.display_name,
            text=text,
            event_id=str(message.id),
            mentions_bot=mentioned,
            reply_to=str(reply_to) if reply_to else None,
            reply_to_bot=reply_to_bot,
            attachments=files,
            parent=_thread_parent(message.channel),
        )

    # -- slash commands and buttons ------------------------------------------------------------

    def _build_commands(self) -> None:
        groups: dict[str, app_commands.Group] = {}
        for name, spec in self.specs.items():
            words = name.split()
            summary = spec.summary[:100]
            command = self._slash_command(words[-1], name, spec, summary)
            if len(words) == 1:
                self.tree.add_command(command)
                continue
            group = groups.get(words[0])
            if group is None:
                group = groups[words[0]] = app_commands.Group(
                    name=words[0], description=f"/{words[0]} commands"
                )
                self.tree.add_command(group)
            group.add_command(command)

    def _slash_command(
        self, leaf: str, name: str, spec: Any, summary: str
    ) -> app_commands.Command[Any, Any, Any]:
        adapter = self

        if name == "recipe import":

            async def with_file(interaction: discord.Interaction, file: discord.Attachment) -> None:
                await adapter._slash(interaction, name, "", file)

            callback: Any = app_commands.describe(file="the recipe: .yaml, or a card .json/.png")(
                with_file
            )
        elif spec.max_args == 0:

            async def bare(interaction: discord.Interaction) -> None:
                await adapter._slash(interaction, name, "")

            callback = bare
        elif spec.min_args > 0:

            async def required(interaction: discord.Interaction, args: str) -> None:
                await adapter._slash(interaction, name, args)

            callback = app_commands.describe(args=spec.usage[:100])(required)
        else:

            async def optional(interaction: discord.Interaction, args: str | None = None) -> None:
                await adapter._slash(interaction, name, args or "")

            callback = app_commands.describe(args=spec.usage[:100])(optional)
        command = app_commands.Command(name=leaf, description=summary, callback=callback)
        if name.startswith("recipe ") and leaf in RECIPE_ARGUMENT:
            command.autocomplete("args")(self._complete_recipe)
        return command

    async def _complete_recipe(
        self, _interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        """Recipe names for the last word being typed (`fork` and `diff` take two)."""
        head, _, word = typed.rpartition(" ")
        prefix = f"{head} " if head else ""
        names = [n for n in self.recipe_names() if n.lower().startswith(word.lower())]
        return [app_commands.Choice(name=prefix + n, value=prefix + n) for n in names[:25]]

    async def _slash(
        self,
        interaction: discord.Interaction,
        name: str,
        args: str,
        file: discord.Attachment | None = None,
    ) -> None:
        text = f"/{name} {args}".strip()
        # Discord shows "X used /recipe use" above this: the room sees who asked for what.
        await interaction.response.send_message(discord.utils.escape_markdown(text))
        files: tuple[Attachment, ...] = ()
        if file is not None and file.size <= self.capabilities.max_file_bytes:
            files = (Attachment(file.filename, file.content_type or "", await file.read()),)
        self._queue.put_nowait(self._from_interaction(interaction, text, files))

    def _from_interaction(
        self, interaction: discord.Interaction, text: str, files: tuple[Attachment, ...] = ()
    ) -> Incoming:
        user = interaction.user
        if isinstance(user, discord.Member) and interaction.guild is not None:
            self._members[(interaction.guild.id, user.id)] = user
        return Incoming(
            platform="discord",
            room=str(interaction.channel_id),
            sender=str(user.id),
            sender_name=user.display_name,
            text=text,
            event_id=f"i{interaction.id}",
            mentions_bot=True,
            attachments=files,
            parent=_thread_parent(interaction.channel),
        )

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Buttons we sent carry the command they stand for in their custom id."""
        if interaction.type != discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        if not custom_id.startswith("potluck:"):
            return
        await interaction.response.defer()
        self._queue.put_nowait(self._from_interaction(interaction, custom_id[len("potluck:") :]))

    # -- messages out ----------------------------------------------------------------------------

    async def _channel(self, channel_id: int) -> Any:
        channel = self.client.get_channel(channel_id)
        if channel is None:
            channel = await self.client.fetch_channel(channel_id)
        return channel

    async def _voice(self, channel: Any) -> _Voice:
        """The webhook agents speak through: the channel's, or the parent's for a thread."""
        parent = channel.parent if isinstance(channel, discord.Thread) else channel
        voice = self._voices.get(parent.id)
        if voice is not None:
            return voice
        try:
            hooks = await parent.webhooks()
            webhook = next((h for h in hooks if h.name == WEBHOOK_NAME and h.token), None)
            if webhook is None:
                webhook = await parent.create_webhook(name=WEBHOOK_NAME, reason="Potluck agents")
            voice = _Voice(webhook)
        except discord.Forbidden:
            voice = _Voice(None)
        self._voices[parent.id] = voice
        return voice

    @staticmethod
    def _view(message: Outgoing) -> discord.ui.View | None:
        if not message.choices:
            return None
        view = discord.ui.View(timeout=None)
        for label, command in message.choices[:25]:
            view.add_item(discord.ui.Button(label=label[:80], custom_id=f"potluck:{command}"[:100]))
        return view

    async def send(self, message: Outgoing) -> str:
        channel = await self._channel(int(message.room))
        files = [discord.File(io.BytesIO(a.data), filename=a.name) for a in message.attachments]
        if message.agent:
            voice = await self._voice(channel)
            if voice.webhook is not None:
                thread = channel if isinstance(channel, discord.Thread) else discord.utils.MISSING
                sent = await voice.webhook.send(
                    message.text or "…",
                    username=message.agent[:80],
                    wait=True,
                    thread=thread,
                    files=files,
                )
                full = f"w{voice.webhook.id}:{sent.id}"
                self._sent[sent.id] = full
                if len(self._sent) > SENT_KEPT:  # the oldest go first
                    del self._sent[next(iter(self._sent))]
                return full
            if not voice.told:
                voice.told = True
                await channel.send(NO_WEBHOOKS)
            text = f"**{discord.utils.escape_markdown(message.agent)}**: {message.text}"
        else:
            text = message.text
        reference = (
            discord.MessageReference(
                message_id=int(message.reply_to), channel_id=channel.id, fail_if_not_exists=False
            )
            if message.reply_to and not message.reply_to.startswith("i")
            else None
        )
        kwargs: dict[str, Any] = {"files": files, "reference": reference}
        if (view := self._view(message)) is not None:
            kwargs["view"] = view
        sent = await channel.send(text[: self.capabilities.max_chars] or "…", **kwargs)
        return str(sent.id)

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        channel = await self._channel(int(room))
        if message_id.startswith("w"):
            webhook_id, _, sent_id = message_id[1:].partition(":")
            voice = await self._voice(channel)
            if voice.webhook is None or str(voice.webhook.id) != webhook_id:
                raise OSError(f"webhook {webhook_id} is gone; cannot edit message {sent_id}")
            thread = channel if isinstance(channel, discord.Thread) else discord.utils.MISSING
            await voice.webhook.edit_message(int(sent_id), content=message.text, thread=thread)
            return
        text = message.text
        if message.agent:
            text = f"**{discord.utils.escape_markdown(message.agent)}**: {text}"
        await channel.get_partial_message(int(message_id)).edit(
            content=text[: self.capabilities.max_chars]
        )

    async def is_admin(self, room: str, user: str) -> bool:
        """Server admins and those who may manage it (or this channel) may change recipes."""
        channel = await self._channel(int(room))
        guild = getattr(channel, "guild", None)
        if guild is None:
            return False
        member = self._members.get((guild.id, int(user))) or guild.get_member(int(user))
        if member is None:
            member = await guild.fetch_member(int(user))
        permissions = channel.permissions_for(member)
        return permissions.administrator or permissions.manage_guild or permissions.manage_channels


def _thread_parent(channel: object) -> str | None:
    """The channel a thread belongs to: an allowed channel covers its threads."""
    parent = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
    return str(parent) if parent else None
