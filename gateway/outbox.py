"""Getting agents' words into the room: streamed by edits, throttled, never lost.

Every outgoing message is an outbox row before it is sent, with its delivery state; a turn
is sent once and then edited as it grows, at most once per interval per room, and finished
with one last edit (more messages when it is too long). A platform's rate-limit answer
delays delivery and never drops the final text. After a crash, rows still streaming are
marked as cut off, and rows never sent are sent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from sqlalchemy import insert, select, update

from adapters.base import Adapter, Attachment, Outgoing, RateLimited

from .store.db import Store
from .store.models import Outbox, now
from .watch import Watch

log = logging.getLogger("potluck.outbox")
CUT_NOTE = "\n\n[cut off: the gateway restarted before this turn finished]"
KEEP_FILES_UP_TO = 1 << 20  # attachments larger than this are not kept for a resend


def to_payload(message: Outgoing) -> dict[str, Any]:
    """An outgoing message as the outbox keeps it, buttons and (small) files included. Pure."""
    payload: dict[str, Any] = {
        "room": message.room,
        "text": message.text,
        "agent": message.agent,
        "notice": message.notice,
    }
    if message.reply_to:
        payload["reply_to"] = message.reply_to
    if message.choices:
        payload["choices"] = [list(choice) for choice in message.choices]
    if message.attachments and sum(len(a.data) for a in message.attachments) <= KEEP_FILES_UP_TO:
        payload["attachments"] = [
            {"name": a.name, "mime": a.mime, "data": base64.b64encode(a.data).decode()}
            for a in message.attachments
        ]
    return payload


def from_payload(payload: dict[str, Any]) -> Outgoing:
    """The message a payload was made from (`to_payload`'s inverse). Pure."""
    return Outgoing(
        payload["room"],
        payload["text"],
        payload.get("agent"),
        payload.get("reply_to"),
        bool(payload.get("notice")),
        tuple(
            Attachment(a["name"], a["mime"], base64.b64decode(a["data"]))
            for a in payload.get("attachments", ())
        ),
        tuple((label, command) for label, command in payload.get("choices", ())),
    )


def split_paragraphs(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, split between paragraphs where possible. Pure."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while len(paragraph) > limit:  # one paragraph longer than a message: cut at a line
            cut = paragraph.rfind("\n", 0, limit)
            cut = cut if cut > limit // 2 else paragraph.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            pieces.append(paragraph[:cut].rstrip())
            paragraph = paragraph[cut:].lstrip()
        current = paragraph
    if current:
        pieces.append(current)
    return pieces


class Delivery:
    """Sends and edits through one adapter, waiting out rate limits."""

    def __init__(
        self, adapter: Adapter, store: Store, attempts: int = 8, watch: Watch | None = None
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.attempts = attempts
        self.watch = watch
        self.errors = 0  # failed or rate-limited attempts, for /metrics

    def show(
        self,
        room: str,
        line_id: str,
        message: Outgoing,
        edit: bool = False,
        model: str | None = None,
    ) -> None:
        """Tell spectators (and the web room, which shows the watch hub) what the room now
        shows; `line_id` is the platform's message id, `model` the one that wrote it."""
        if self.watch is None:
            return
        line: dict[str, object] = {"type": "edit" if edit else "message", "id": line_id}
        line["text"] = message.text
        if model:
            line["model"] = model
        if not edit:
            line["who"] = message.agent or "potluck"
            line["role"] = "agent" if message.agent else "notice"
            if message.choices:
                line["choices"] = [list(choice) for choice in message.choices]
        self.watch.publish(f"{self.adapter.name}:{room}", line)

    async def _retry(self, action) -> object:  # type: ignore[no-untyped-def]
        for attempt in range(self.attempts):
            try:
                return await action()
            except RateLimited as limited:
                self.errors += 1
                log.info(
                    "rate limited by %s; waiting %.1fs", self.adapter.name, limited.retry_after
                )
                await asyncio.sleep(min(limited.retry_after, 60.0))
            except (OSError, TimeoutError) as exc:
                self.errors += 1
                if attempt == self.attempts - 1:
                    raise
                await asyncio.sleep(min(2**attempt * 0.5, 10.0))
                log.warning("delivery to %s failed (%s); retrying", self.adapter.name, exc)
        raise RuntimeError(f"{self.adapter.name} kept rate-limiting; giving up")

    def _row(self, room_id: int, message: Outgoing, state: str) -> int:
        with self.store.write() as conn:
            return conn.execute(
                insert(Outbox).returning(Outbox.id),
                {"room_id": room_id, "payload": to_payload(message), "state": state},
            ).scalar_one()

    def _update(self, row_id: int, **fields: object) -> None:
        with self.store.write() as conn:
            conn.execute(
                update(Outbox).where(Outbox.id == row_id).values(**fields, updated_at=now())
            )

    async def send(self, room_id: int, message: Outgoing) -> str:
        """Record, then deliver, then mark delivered; long text goes as several messages."""
        first = ""
        pieces = split_paragraphs(message.text, self.adapter.capabilities.max_chars)
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1  # buttons and files go with the last piece
            part = Outgoing(
                message.room,
                piece,
                message.agent,
                message.reply_to,
                message.notice,
                message.attachments if last else (),
                message.choices if last else (),
            )
            row_id = self._row(room_id, part, "pending")
            message_id = await self._deliver(row_id, lambda p=part: self.adapter.send(p))
            self._update(row_id, state="sent", platform_message_id=message_id, attempts=1)
            self.show(part.room, message_id, part)
            first = first or message_id
        return first

    async def _deliver(self, row_id: int, action) -> str:  # type: ignore[no-untyped-def]
        """Send a recorded row; a platform that refuses it for good (the bot was removed from
        the room, the room deleted) marks it failed, so no later start tries it again."""
        try:
            return str(await self._retry(action))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._update(row_id, state="failed")
            log.warning("%s refused a message for good (%s); marked failed", self.adapter.name, exc)
            raise

    async def recover(self, room_ids: dict[int, str]) -> int:
        """After a restart: cut-off notes on streams left open, and unsent rows sent. A row
        the platform refuses is marked failed and the rest go on: one room that no longer
        takes messages must never keep the gateway from starting."""
        done = 0
        with self.store.session() as db:
            rows = db.scalars(
                select(Outbox).where(
                    Outbox.state.in_(("pending", "streaming")),
                    Outbox.room_id.in_(list(room_ids)),
                )
            ).all()
        for row in rows:
            try:
                await self._recover_row(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._update(row.id, state="failed")
                log.warning("could not recover outbox row %s (%s); marked failed", row.id, exc)
                continue
            done += 1
        return done

    async def _recover_row(self, row: Outbox) -> None:
        payload = dict(row.payload)
        message = from_payload(payload)
        if row.state == "streaming" and row.platform_message_id:
            cut = Outgoing(message.room, (message.text or "…") + CUT_NOTE, message.agent)
            await self._retry(lambda: self.adapter.edit(cut.room, row.platform_message_id, cut))
            self._update(row.id, state="cut", payload={**payload, "text": cut.text})
        elif row.state == "pending":
            message_id = str(await self._retry(lambda: self.adapter.send(message)))
            self._update(row.id, state="sent", platform_message_id=message_id)


class Stream:
    """One agent turn appearing in the room as it is generated."""

    def __init__(
        self, delivery: Delivery, room_id: int, room: str, agent: str, interval_s: float
    ) -> None:
        self.delivery = delivery
        self.room_id = room_id
        self.room = room
        self.agent = agent
        self.interval_s = interval_s
        self.text = ""
        self.message_id: str | None = None
        self.more_ids: list[str] = []  # the messages a long turn continued in
        self.row_id: int | None = None
        self._last_edit = 0.0
        self._shown = ""
        self._pending: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _message(self, text: str) -> Outgoing:
        return Outgoing(self.room, text, self.agent)

    async def open(self) -> None:
        placeholder = self._message("…")
        self.row_id = self.delivery._row(self.room_id, placeholder, "pending")
        self.message_id = await self.delivery._deliver(
            self.row_id, lambda: self.delivery.adapter.send(placeholder)
        )
        self.delivery._update(self.row_id, state="streaming", platform_message_id=self.message_id)
        self.delivery.show(self.room, self.message_id, placeholder)
        self._last_edit = time.monotonic()

    async def _edit(self, text: str) -> None:
        async with self._lock:
            if text == self._shown or self.message_id is None:
                return
            limit = self.delivery.adapter.capabilities.max_chars
            shown = text if len(text) <= limit else text[: limit - 1] + "…"
            try:
                await self.delivery.adapter.edit(self.room, self.message_id, self._message(shown))
            except RateLimited as limited:  # an interim edit can wait for the next one
                self._last_edit = time.monotonic() + limited.retry_after
                return
            self._shown = text
            self._last_edit = time.monotonic()
            if self.row_id is not None:
                self.delivery._update(self.row_id, payload=to_payload(self._message(text)))
                self.delivery.show(self.room, self.message_id, self._message(shown), True)

    async def update(self, text: str) -> None:
        """New text so far; edits at most once per interval, the latest text winning."""
        self.text = text
        wait = self._last_edit + self.interval_s - time.monotonic()
        if wait <= 0 and (self._pending is None or self._pending.done()):
            await self._edit(text)
        elif self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._later(max(wait, 0.05)))

    async def _later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._edit(self.text)

    async def finish(self, text: str, model: str | None = None) -> None:
        """The final text, delivered whatever rate limits say; split when too long. `model`:
        which model answered, for the watch line."""
        if self._pending is not None:
            self._pending.cancel()
        self.text = text
        pieces = split_paragraphs(text or "…", self.delivery.adapter.capabilities.max_chars)
        first = self._message(pieces[0])
        assert self.message_id is not None
        await self.delivery._retry(
            lambda: self.delivery.adapter.edit(self.room, self.message_id, first)
        )
        for piece in pieces[1:]:
            self.more_ids.append(await self.delivery.send(self.room_id, self._message(piece)))
        if self.row_id is not None:
            self.delivery._update(self.row_id, state="sent", payload=to_payload(first))
            self.delivery.show(self.room, self.message_id, first, True, model)

    async def cut(self, reason: str) -> None:
        if self._pending is not None:
            self._pending.cancel()
        note = f"{self.text or '…'}\n\n[{reason}]"
        if self.message_id is not None:
            await self.delivery._retry(
                lambda: self.delivery.adapter.edit(self.room, self.message_id, self._message(note))
            )
        if self.row_id is not None:
            self.delivery._update(self.row_id, state="cut")
            self.delivery.show(self.room, self.message_id, self._message(note), True)
