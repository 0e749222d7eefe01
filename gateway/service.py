"""The gateway: incoming events in, commands and conversations out, for every room at once.

Each event is stored (with the adapter's cursor) before anything acts on it, and the unique
(room, event id) key makes a redelivered event a no-op. Rooms are handled in order by one
worker each and run side by side; `/stop` skips the queue and cancels the room's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from adapters.base import Adapter, Attachment, Incoming, Outgoing
from runtime.conductor import Budget, Conductor, Listener, Turn
from runtime.context import Line
from runtime.models.client import Models
from runtime.recipes import Agent, Recipe, RecipeError, diff, short_ref, to_yaml
from runtime.recipes.files import recipe_from_bytes
from runtime.tools import SandboxToolbox, ToolOutcome

from .budgets import Budgets, RoomBudget
from .commands import Command, CommandError, help_text, is_command, parse
from .config import Config
from .library import Library, Saved
from .outbox import Delivery, Stream
from .receipts.ledger import Ledger
from .receipts.nostr import Event
from .rooms import attach, end_session, ensure_room, start_session, update_settings
from .schedules import WhenError, split_when
from .store.db import Store
from .store.models import AdapterCursor, Message, Room, Session, Spend, now
from .watch import Watch

log = logging.getLogger("potluck.gateway")
TRANSCRIPT_LINES = 500  # kept in memory per room; the context trims further by tokens
SCHEDULE_EVENT = "schedule:"  # event ids of scheduled runs: schedule:ID:RECIPE:TIME


@dataclass
class RoomState:
    room_id: int
    key: str  # platform:room
    platform: str
    platform_room: str
    queue: asyncio.Queue[tuple[int, Incoming]] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    running: asyncio.Task[Any] | None = None  # the conversation in progress
    session_id: str | None = None
    saved: Saved | None = None
    transcript: list[Line] = field(default_factory=list)
    budget: Budget | None = None
    cut_reason: str = "stopped by /stop"  # what a cancelled turn says in the room
    asker: str = ""  # platform:user whose message the agents are answering (for budgets)


def _mentions_agent(text: str, agents: list[Agent]) -> bool:
    lowered = text.lower()
    return any(f"@{a.name}" in lowered or lowered.startswith(f"{a.name}") for a in agents)


class Gateway:
    def __init__(
        self,
        config: Config,
        store: Store,
        library: Library,
        ledger: Ledger,
        models: Models,
        sandboxes: Any = None,
        default_recipe: str = "solo",
    ) -> None:
        self.config = config
        self.store = store
        self.library = library
        self.ledger = ledger
        self.models = models
        self.sandboxes = sandboxes
        self.default_recipe = default_recipe
        self.adapters: dict[str, Adapter] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.rooms: dict[str, RoomState] = {}
        self.counters = {"incoming": 0, "turns": 0, "commands": 0, "refused": 0}
        self.watch = Watch()
        self.draining = False  # shutting down: store what arrives, answer it after restart
        self.budgets = Budgets(store, config.budgets)
        self.schedules: Any = None  # set by the scheduler when `potluck serve` runs one

    # -- wiring ----------------------------------------------------------------------------

    def cursor(self, adapter: str) -> str | None:
        with self.store.session() as db:
            row = db.get(AdapterCursor, adapter)
            return row.cursor if row else None

    def save_cursor(self, adapter: str, cursor: str) -> None:
        with self.store.session.begin() as db:
            row = db.get(AdapterCursor, adapter)
            if row is None:
                db.add(AdapterCursor(adapter=adapter, cursor=cursor))
            else:
                row.cursor, row.updated_at = cursor, now()

    async def add_adapter(self, adapter: Adapter) -> None:
        self.adapters[adapter.name] = adapter
        self.deliveries[adapter.name] = Delivery(adapter, self.store, watch=self.watch)
        await adapter.connect()
        await self._recover(adapter.name)

        async def on_cursor(cursor: str, name: str = adapter.name) -> None:
            self.save_cursor(name, cursor)

        await adapter.start(self.on_incoming, on_cursor, self.cursor(adapter.name))

    async def _recover(self, platform: str) -> None:
        """After a crash: finish what was interrupted, in the open."""
        with self.store.session() as db:
            rooms = {
                r.id: r.platform_room_id
                for r in db.scalars(select(Room).where(Room.platform == platform))
            }
            unfinished = db.scalars(
                select(Message)
                .where(
                    Message.room_id.in_(list(rooms)),
                    Message.direction == "in",
                    Message.state.in_(("received", "processing")),
                )
                .order_by(Message.id)
            ).all()
        await self.deliveries[platform].recover(rooms)
        for message in unfinished:
            room = self._room(platform, rooms[message.room_id], message.room_id)
            if message.state == "processing":
                self._set_state(message.id, "cut")
                await self.notice(
                    room,
                    f"(the answer to {message.sender}'s message was cut "
                    "off by a restart; send it again to continue)",
                )
                continue
            incoming = Incoming(
                platform,
                room.platform_room,
                message.sender_id or "",
                message.sender,
                message.text,
                message.platform_event_id or "",
                mentions_bot=message.addressed is not False,  # unknown (before 0003): answer
            )
            self._ensure_worker(room)
            room.queue.put_nowait((message.id, incoming))

    def _room(self, platform: str, platform_room: str, room_id: int | None = None) -> RoomState:
        key = f"{platform}:{platform_room}"
        if key not in self.rooms:
            if room_id is None:
                room_id = ensure_room(self.store, platform, platform_room)
            self.rooms[key] = RoomState(room_id, key, platform, platform_room)
        return self.rooms[key]

    def _ensure_worker(self, room: RoomState) -> None:
        if room.worker is None or room.worker.done():
            room.worker = asyncio.create_task(self._work(room), name=f"room {room.key}")

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """SIGTERM: take no new work, give running turns `grace_s` to finish, cut off the rest
        in the open, then close. Whatever is still queued stays stored and is answered after
        the next start; nothing is dropped."""
        self.draining = True
        running = [r.running for r in self.rooms.values() if r.running and not r.running.done()]
        if running:
            log.info("shutdown: waiting up to %.0fs for %d turns", grace_s, len(running))
            await asyncio.wait(running, timeout=grace_s)
        busy = []
        for room in self.rooms.values():
            if room.running is not None and not room.running.done():
                room.cut_reason = "stopped: the gateway is shutting down; ask again once it is back"
                room.running.cancel()
                if room.worker is not None:
                    busy.append(room.worker)
        if busy:  # each worker delivers its cut-off note, then stops (draining)
            await asyncio.wait(busy, timeout=15.0)
        if self.sandboxes is not None:
            with contextlib.suppress(Exception):
                await self.sandboxes.close()
        await self.close()

    async def close(self) -> None:
        for room in self.rooms.values():
            for task in (room.running, room.worker):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        for adapter in self.adapters.values():
            await adapter.stop()

    # -- permissions -----------------------------------------------------------------------

    def allowed(self, incoming: Incoming) -> bool:
        """Closed by default: a room or a user must be listed (or `*` given)."""
        user = f"{incoming.platform}:{incoming.sender}"
        rooms = self.config.allowed_rooms
        adapter = self.adapters.get(incoming.platform)
        parent = getattr(adapter, "parent_room", lambda room: room)(incoming.room)
        users = [*self.config.allowed_users, *self.config.admins]
        return (
            incoming.platform in ("web", "terminal")
            or "*" in rooms
            or incoming.key in rooms
            or f"{incoming.platform}:{parent}" in rooms  # a thread or topic of an allowed room
            or f"{incoming.platform}:*" in rooms
            or "*" in users
            or user in users
        )

    async def is_admin(self, incoming: Incoming) -> bool:
        if f"{incoming.platform}:{incoming.sender}" in self.config.admins:
            return True
        adapter = self.adapters.get(incoming.platform)
        if adapter is None:
            return incoming.platform in ("web", "terminal")
        try:
            return await adapter.is_admin(incoming.room, incoming.sender)
        except Exception as exc:  # the platform could not say: refuse rather than guess
            log.warning("could not read admins of %s: %s", incoming.key, exc)
            return False

    # -- incoming --------------------------------------------------------------------------

    def _store_incoming(self, room: RoomState, incoming: Incoming) -> int | None:
        try:
            with self.store.write() as conn:
                return conn.execute(
                    insert(Message).returning(Message.id),
                    {
                        "room_id": room.room_id,
                        "session_id": room.session_id,
                        "platform_event_id": incoming.event_id,
                        "direction": "in",
                        "sender": incoming.sender_name[:255],
                        "sender_id": incoming.sender[:255],
                        "addressed": incoming.mentions_bot or incoming.reply_to_bot,
                        "text": incoming.text,
                        "state": "received",
                    },
                ).scalar_one()
        except IntegrityError:
            return None  # seen before: redelivered after a restart

    def _set_state(self, message_id: int, state: str) -> None:
        with self.store.write() as conn:
            conn.execute(update(Message).where(Message.id == message_id).values(state=state))

    async def on_incoming(self, incoming: Incoming) -> None:
        if not self.allowed(incoming):
            self.counters["refused"] += 1
            log.info(
                "ignored %s from %s: not in the allowed rooms or users",
                incoming.key,
                incoming.sender,
            )
            return
        room = self._room(incoming.platform, incoming.room)
        message_id = self._store_incoming(room, incoming)
        if message_id is None:
            return
        self.counters["incoming"] += 1
        self.watch.publish(
            incoming.key,
            {
                "type": "message",
                "id": f"in{message_id}",
                "who": incoming.sender_name,
                "role": "person",
                "text": incoming.text,
            },
        )
        command = parse(incoming.text)
        if isinstance(command, Command) and command.name == "stop":
            self._set_state(message_id, "handled")
            await self._stop(room)
            return
        if self.draining:
            return  # stored as received: answered after the restart
        self._ensure_worker(room)
        await room.queue.put((message_id, incoming))

    async def _work(self, room: RoomState) -> None:
        while not self.draining:
            message_id, incoming = await room.queue.get()
            self._set_state(message_id, "processing")
            try:
                await self._process(room, message_id, incoming)
                self._set_state(message_id, "handled")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad message must not stop the room
                log.exception("room %s: failed on message %s", room.key, message_id)
                self._set_state(message_id, "failed")
                await self.notice(room, f"something went wrong: {exc}")

    async def _process(self, room: RoomState, message_id: int, incoming: Incoming) -> None:
        if incoming.event_id.startswith(SCHEDULE_EVENT) and incoming.sender == "potluck":
            await self._scheduled_run(room, incoming)
            return
        if is_command(incoming.text):
            parsed = parse(incoming.text)
            if parsed is None:
                return
            if isinstance(parsed, CommandError):
                await self.notice(room, parsed.message, reply_to=incoming.event_id)
                return
            self.counters["commands"] += 1
            if parsed.spec.admin and not await self.is_admin(incoming):
                await self.notice(
                    room,
                    f"only room admins may use {parsed.spec.usage.split()[0]}"
                    f" {parsed.name.split()[-1]}; you can talk and read here",
                    reply_to=incoming.event_id,
                )
                return
            await self._command(room, parsed, incoming)
            return
        await self._converse(room, incoming)

    # -- sessions --------------------------------------------------------------------------

    def _load(self, room: RoomState) -> Saved:
        """The room's attached recipe and live session, attaching the default if none."""
        if room.saved is not None and room.session_id is not None:
            return room.saved
        with self.store.session() as db:
            row = db.get(Room, room.room_id)
            version = row.recipe_version_id
            live = db.scalar(
                select(Session).where(Session.room_id == room.room_id, Session.status == "live")
            )
        saved = self.library.get(version) if version else None
        if saved is None:
            saved = self.library.get(self.default_recipe)
            attach(self.store, room.room_id, saved.id)
        room.saved = saved
        if live is not None and live.recipe_version_id == saved.id:
            room.session_id = live.id
            room.transcript = self._transcript(live.id)
        else:
            self._new_session(room, saved)
        return saved

    def _new_session(self, room: RoomState, saved: Saved) -> None:
        room.session_id = start_session(self.store, room.room_id, saved.id)
        self.ledger.open(room.session_id, saved.recipe.name)
        room.saved = saved
        room.transcript = []
        room.budget = None

    def _transcript(self, session_id: str) -> list[Line]:
        with self.store.session() as db:
            rows = db.scalars(
                select(Message).where(Message.session_id == session_id).order_by(Message.id)
            ).all()
        lines = []
        for row in rows:
            if row.direction == "out":
                lines.append(Line(row.sender, "agent", row.text))
            elif not is_command(row.text):
                lines.append(Line(row.sender, "person", row.text))
        return lines[-TRANSCRIPT_LINES:]

    # -- conversation ----------------------------------------------------------------------

    async def _converse(self, room: RoomState, incoming: Incoming, force: bool = False) -> None:
        saved = self._load(room)
        recipe = saved.recipe
        addressed = force or (
            recipe.trigger == "every_message"
            or (
                recipe.trigger == "mention"
                and (
                    incoming.mentions_bot
                    or incoming.reply_to_bot
                    or _mentions_agent(incoming.text, recipe.agents)
                )
            )
        )
        await self._sign_person(room, room, incoming)
        room.transcript.append(
            Line(incoming.sender_name, "person" if addressed else "observed", incoming.text)
        )
        del room.transcript[:-TRANSCRIPT_LINES]  # months of chat: the store keeps it all
        if not addressed:
            return
        room.asker = f"{incoming.platform}:{incoming.sender}"
        await self._respond(room, room, recipe)

    async def _sign_person(self, room: RoomState, state: RoomState, incoming: Incoming) -> None:
        """The person's message joins `state`'s session, in one commit with its receipt."""
        assert state.session_id is not None
        with self.ledger.batch() as conn:
            conn.execute(
                update(Message)
                .where(
                    Message.platform_event_id == incoming.event_id, Message.room_id == room.room_id
                )
                .values(session_id=state.session_id)
            )
            signed = self.ledger.person(
                state.session_id, f"{incoming.platform}:{incoming.sender}", incoming.text
            )
        await self.show_receipt(room, incoming.event_id, signed)

    async def _respond(self, room: RoomState, state: RoomState, recipe: Recipe) -> None:
        """The agents answer `state`'s transcript (the room's, or a scheduled run's own
        session) in `room`, as a task `/stop` can cancel."""
        if state.budget is None:
            state.budget = RoomBudget(
                recipe.limits.max_tokens,
                recipe.limits.max_cost_usd,
                period=lambda: self.budgets.check(state.room_id, state.asker, now()),
            )
        toolbox = None
        if self.sandboxes is not None and any(a.tools for a in recipe.agents):
            toolbox = SandboxToolbox(self.sandboxes, room.key, recipe.sandbox)
        conductor = Conductor(recipe, self.models, state.budget, toolbox)
        listener = ChatListener(self, state)
        room.running = asyncio.create_task(conductor.respond(state.transcript, listener))
        try:
            await room.running
        except asyncio.CancelledError:
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():
                raise
            await listener.cut(room.cut_reason)
        finally:
            room.running = None

    # -- schedules ---------------------------------------------------------------------------

    async def _schedule_command(self, room: RoomState, command: Command, say: Any) -> None:
        if self.schedules is None:
            await say("schedules run only under `potluck serve` (its scheduler is not running).")
            return
        if command.name == "schedule list":
            found = self.schedules.of_room(room.key)
            lines = [
                f"  {s.id}: {s.when} → {s.recipe}"
                + (f" “{s.text}”" if s.text else "")
                + (f", next {s.next_run:%a %Y-%m-%d %H:%M %Z}" if s.next_run else "")
                for s in found
            ]
            await say("\n".join(["schedules here:", *lines]) if lines else "no schedules here.")
        elif command.name == "schedule cancel":
            gone = self.schedules.cancel(room.key, command.args[0])
            await say(
                f"cancelled schedule {command.args[0]}."
                if gone
                else f"no schedule {command.args[0]} here; see /schedule list"
            )
        else:
            try:
                when, rest = split_when(command.raw_args)
                if not rest:
                    raise WhenError("name the recipe to run after WHEN")
                saved = self.library.get(rest[0])
                added = self.schedules.add(room.key, when, saved.recipe.name, " ".join(rest[1:]))
            except WhenError as exc:
                await say(f"{exc}. Usage: {command.spec.usage}")
                return
            next_run = f"{added.next_run:%a %Y-%m-%d %H:%M %Z}" if added.next_run else "never"
            await say(
                f"scheduled {added.id}: {saved.ref} {when}; next run {next_run}. "
                f"Cancel with /schedule cancel {added.id}"
            )

    async def scheduled(
        self, room_key: str, recipe: str, text: str, schedule_id: str, fired_at: datetime
    ) -> None:
        """A schedule fired: queue its run in the room like a message, keyed by the fire time,
        so a run is made once even if the gateway restarts around it."""
        platform, _, platform_room = room_key.partition(":")
        if platform not in self.adapters:
            log.warning("schedule %s: %s is not connected; run skipped", schedule_id, platform)
            return
        event = f"{SCHEDULE_EVENT}{schedule_id}:{recipe}:{fired_at:%Y%m%dT%H%M}"
        incoming = Incoming(
            platform, platform_room, "potluck", "schedule", text, event, mentions_bot=True
        )
        room = self._room(platform, platform_room)
        message_id = self._store_incoming(room, incoming)
        if message_id is None or self.draining:
            return
        self._ensure_worker(room)
        await room.queue.put((message_id, incoming))

    def missed(self, room_key: str, when: str, recipe: str, next_run: datetime | None) -> None:
        room = self.rooms.get(room_key)
        if room is None:
            return
        after = f"; next run {next_run:%Y-%m-%d %H:%M %Z}" if next_run else ""
        text = f"(missed the scheduled run of {recipe} ({when}) while the gateway was down{after})"
        asyncio.get_running_loop().create_task(self.notice(room, text))

    async def _scheduled_run(self, room: RoomState, incoming: Incoming) -> None:
        """One scheduled conversation: the recipe in a session of its own, then done."""
        recipe_ref = incoming.event_id.removeprefix(SCHEDULE_EVENT).split(":")[1]
        saved = self.library.get(recipe_ref)
        state = RoomState(room.room_id, room.key, room.platform, room.platform_room)
        state.saved, state.asker = saved, "potluck:schedule"
        state.session_id = start_session(self.store, room.room_id, saved.id, live=False)
        self.ledger.open(state.session_id, saved.recipe.name)
        await self.notice(room, f"scheduled run of {saved.ref}: {incoming.text}")
        await self._sign_person(room, state, incoming)
        state.transcript = [Line("schedule", "person", incoming.text)]
        try:
            await self._respond(room, state, saved.recipe)
        finally:
            self.ledger.close(state.session_id, "scheduled run done")
            end_session(self.store, state.session_id)
            if room.saved is not None:  # the ledger's room setting names the room's recipe
                update_settings(self.store, room.room_id, recipe_name=room.saved.recipe.name)

    async def _stop(self, room: RoomState) -> None:
        if room.running is not None and not room.running.done():
            room.running.cancel()
            await self.notice(room, "stopped.")
        else:
            await self.notice(room, "nothing is running.")

    # -- output ----------------------------------------------------------------------------

    async def notice(
        self,
        room: RoomState,
        text: str,
        reply_to: str | None = None,
        choices: tuple[tuple[str, str], ...] = (),
        attachments: tuple[Attachment, ...] = (),
    ) -> None:
        delivery = self.deliveries.get(room.platform)
        if delivery is None:
            log.info("[%s] %s", room.key, text)
            return
        message = Outgoing(room.platform_room, text, None, reply_to, True, attachments, choices)
        await delivery.send(room.room_id, message)

    async def show_receipt(self, room: RoomState, message_id: str | None, event: Event) -> None:
        """Platforms that can show a message's receipt (the web room) are given it."""
        adapter = self.adapters.get(room.platform)
        show = getattr(adapter, "receipt", None)
        if show is not None and message_id:
            with contextlib.suppress(Exception):  # a badge must never break a conversation
                await show(room.platform_room, message_id, event.to_json())

    def record_turn(self, room: RoomState, turn: Turn) -> Event:
        """An agent's finished turn: the message and its signed receipt in one commit."""
        assert room.session_id is not None
        with self.ledger.batch() as conn:
            conn.execute(
                insert(Message),
                {
                    "room_id": room.room_id,
                    "session_id": room.session_id,
                    "direction": "out",
                    "sender": turn.agent,
                    "text": turn.text,
                    "state": "sent",
                },
            )
            conn.execute(
                insert(Spend),
                {
                    "room_id": room.room_id,
                    "session_id": room.session_id,
                    "user": room.asker,
                    "agent": turn.agent,
                    "model": turn.model,
                    "tokens": turn.tokens_in + turn.tokens_out,
                    "cost_usd": turn.cost_usd,
                },
            )
            return self.ledger.record_turn(room.session_id, turn)

    # -- commands --------------------------------------------------------------------------

    async def _command(self, room: RoomState, command: Command, incoming: Incoming) -> None:
        say = lambda text: self.notice(room, text, reply_to=incoming.event_id)  # noqa: E731
        name, args = command.name, command.args
        try:
            if name == "help":
                adapter = self.adapters.get(room.platform)
                note = getattr(adapter, "help_note", "")
                await say(
                    help_text(await self.is_admin(incoming)) + (f"\n\n{note}" if note else "")
                )
            elif name == "recipe list":
                lines = [
                    f"{s.ref} — {s.recipe.title} [{', '.join(a.name for a in s.recipe.agents)}]"
                    for s in self.library.heads()
                ]
                await say("\n".join(lines))
            elif name == "recipe show":
                saved = self.library.get(args[0]) if args else self._load(room)
                agents = "\n".join(f"  {a.name}: {a.model}" for a in saved.recipe.agents)
                await say(
                    f"{saved.ref} — {saved.recipe.title}\n{saved.recipe.description}\n"
                    f"protocol: {saved.recipe.protocol.kind}\nagents:\n{agents}"
                )
            elif name == "recipe use" and not args:
                heads = self.library.heads()
                await self.notice(
                    room,
                    "Pick a recipe (or type /recipe use NAME):\n"
                    + "\n".join(f"  {s.recipe.name} — {s.recipe.title}" for s in heads),
                    incoming.event_id,
                    choices=tuple((s.recipe.title, f"/recipe use {s.recipe.name}") for s in heads),
                )
            elif name == "recipe use":
                saved = self.library.get(args[0])
                attach(self.store, room.room_id, saved.id)
                if room.session_id:
                    self.ledger.close(room.session_id, "recipe changed")
                    end_session(self.store, room.session_id)
                self._new_session(room, saved)
                names = ", ".join(a.name for a in saved.recipe.agents)
                await say(f"this room now runs {saved.ref} ({saved.recipe.title}): {names}")
            elif name == "recipe fork":
                saved = self.library.fork(args[0], args[1])
                attach(self.store, room.room_id, saved.id)
                self._new_session(room, saved)
                await say(
                    f"forked {args[0]} as {saved.ref}; this room now runs the fork. "
                    "Edit it with /recipe set PATH VALUE"
                )
            elif name == "recipe set":
                current = self._load(room)
                path, _, value = command.raw_args.partition(" ")
                saved = self.library.set(current.id, path, value.strip())
                attach(self.store, room.room_id, saved.id)
                self._new_session(room, saved)
                changes = "\n".join(f"  {c.render()}" for c in diff(current.recipe, saved.recipe))
                await say(f"{saved.ref}:\n{changes}")
            elif name == "recipe diff":
                a, b = self.library.get(args[0]), self.library.get(args[1])
                changes = diff(a.recipe, b.recipe)
                await say("\n".join(c.render() for c in changes) or "no differences")
            elif name == "recipe history":
                ref = args[0] if args else self._load(room).recipe.name
                chain = self.library.lineage(ref)
                await say(
                    "\n".join(
                        f"{'  ' * i}← {s.ref if isinstance(s, Saved) else s}"
                        for i, s in enumerate(chain)
                    )
                )
            elif name == "recipe export":
                saved = self.library.get(args[0]) if args else self._load(room)
                document = to_yaml(saved.recipe)
                adapter = self.adapters.get(room.platform)
                if getattr(adapter, "supports_files", False):
                    file = Attachment(
                        f"{saved.recipe.name}.yaml", "application/yaml", document.encode()
                    )
                    await self.notice(
                        room,
                        f"{saved.ref}: {saved.recipe.title}",
                        incoming.event_id,
                        attachments=(file,),
                    )
                else:
                    await say(f"{short_ref(saved.recipe)}.yaml:\n{document}")
            elif name == "recipe import":
                if not incoming.attachments:
                    await say(
                        "attach the recipe file to the /recipe import message "
                        "(.yaml, or a SillyTavern card .json/.png)"
                    )
                    return
                file = incoming.attachments[0]
                saved = self.library.save(recipe_from_bytes(file.data, file.name), "import")
                await say(
                    f"imported {saved.ref} ({saved.recipe.title}); "
                    f"attach it with /recipe use {saved.recipe.name}"
                )
            elif name == "run":
                run = Incoming(
                    incoming.platform,
                    incoming.room,
                    incoming.sender,
                    incoming.sender_name,
                    command.raw_args,
                    incoming.event_id,
                )
                await self._converse(room, run, force=True)
            elif name == "budget":
                budget = room.budget
                period = self.budgets.report(
                    room.room_id, f"{incoming.platform}:{incoming.sender}", now()
                )
                if budget is None:
                    await say(f"nothing spent in this session yet.\n{period}")
                else:
                    rows = "\n".join(
                        f"  {agent}: {tokens} tokens, ${cost:.4f}"
                        for agent, (tokens, cost) in budget.by_agent.items()
                    )
                    await say(
                        f"this session: {budget.tokens}/{budget.max_tokens} tokens, "
                        f"${budget.cost_usd:.4f}/${budget.max_cost_usd:.2f}\n{rows}\n{period}"
                    )
            elif name == "receipts":
                self._load(room)
                assert room.session_id is not None
                report = self.ledger.verify_session(room.session_id)
                status = "chain verified" if report.ok else "; ".join(report.problems[:5])
                await say(
                    f"session {room.session_id}: {report.checked} signed events, {status}."
                    f" Gateway key {self.ledger.keys.npub}"
                )
            elif name.startswith("schedule "):
                await self._schedule_command(room, command, say)
            elif name == "sandbox reset" and args != ("confirm",):
                await self.notice(
                    room,
                    "Reset this room's sandbox? Its workspace and every file in it are deleted. "
                    "Confirm with /sandbox reset confirm",
                    incoming.event_id,
                    choices=(("Yes, reset it", "/sandbox reset confirm"),),
                )
            elif name == "sandbox reset":
                if self.sandboxes is None:
                    await say("no sandbox engine is configured on this gateway.")
                else:
                    await self.sandboxes.reset(room.key)
                    await say("sandbox reset: a fresh container and an empty workspace.")
        except RecipeError as exc:
            await say(str(exc))


class ChatListener(Listener):
    """Streams each agent's turn into the room and signs it."""

    def __init__(self, gateway: Gateway, room: RoomState) -> None:
        self.gateway = gateway
        self.room = room
        self.stream: Stream | None = None
        adapter = gateway.adapters.get(room.platform)
        self.interval = adapter.edit_interval_s if adapter else 1.0

    async def turn_started(self, agent: Agent) -> None:
        delivery = self.gateway.deliveries.get(self.room.platform)
        if delivery is None:
            self.stream = None
            return
        self.stream = Stream(
            delivery, self.room.room_id, self.room.platform_room, agent.name, self.interval
        )
        await self.stream.open()

    async def turn_text(self, agent: Agent, text: str) -> None:
        if self.stream is not None:
            await self.stream.update(text)

    async def turn_finished(self, agent: Agent, turn: Turn) -> None:
        text = turn.text if turn.finish != "error" else f"(could not answer: {turn.notes[-1]})"
        if turn.finish == "pass":
            text = "(passes)"
        message_id = None
        if self.stream is not None:
            message_id = self.stream.message_id
            await self.stream.finish(text)
            self.stream = None
        self.gateway.counters["turns"] += 1
        if turn.finish != "error":
            event = self.gateway.record_turn(self.room, turn)
            await self.gateway.show_receipt(self.room, message_id, event)

    async def tool_result(self, agent: Agent, outcome: ToolOutcome) -> None:
        assert self.room.session_id is not None
        self.gateway.ledger.record_tool(self.room.session_id, agent.name, outcome)

    async def note(self, text: str) -> None:
        if not text.startswith("stopped: reached max_turns"):
            await self.gateway.notice(self.room, f"({text})")

    async def cut(self, reason: str) -> None:
        if self.stream is not None:
            await self.stream.cut(reason)
            self.stream = None
