"""Matrix, through matrix-nio: a bot account you invite to rooms.

Sync is driven by hand rather than by callbacks, so each batch's events are handed over in
order and only then is `next_batch` reported as the cursor. On a first start (no cursor)
old history is skipped: the bot answers what is said after it arrives. Encrypted rooms are
refused in the open (a plain notice, then the bot leaves) — never silently ignored.

People's 👍/👎 are `m.reaction` annotations on the agent's message; taking one back redacts
the reaction event, which arrives as a redaction naming it (`undoes`). Neither says which
thread the message is in, so the gateway looks in the room's threads too (`whole_chat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nio

from .base import Capabilities, Incoming, OnCursor, OnIncoming, Outgoing, RateLimited, Reaction

log = logging.getLogger("potluck.matrix")

ENCRYPTED_REFUSAL = (
    "This room is end-to-end encrypted, and Potluck does not read encrypted rooms yet. "
    "Invite me to an unencrypted room instead. I am leaving this one."
)


@dataclass(frozen=True)
class MatrixSettings:
    homeserver: str
    user_id: str
    password: str | None = None
    access_token: str | None = None
    device_id: str | None = None
    device_name: str = "potluck"
    sync_timeout_ms: int = 30_000


def thread_room(room_id: str, thread_root: str | None) -> str:
    """A thread is a room of its own (its own recipe and session), named `!room|$root`."""
    return f"{room_id}|{thread_root}" if thread_root else room_id


def split_thread_room(room: str) -> tuple[str, str | None]:
    room_id, _, thread = room.partition("|")
    return room_id, thread or None


def strip_reply_fallback(body: str) -> str:
    """Matrix replies quote the original as '> ' lines first; the new text follows."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


class MatrixAdapter:
    name = "matrix"
    capabilities = Capabilities(edit_interval_s=1.0, max_chars=16_000, threads=True)

    def __init__(
        self,
        settings: MatrixSettings,
        may_invite: Callable[[str], bool] = lambda _u: True,
        session_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.may_invite = may_invite
        self.session_file = session_file
        config = nio.AsyncClientConfig(
            encryption_enabled=False, store_sync_tokens=False, max_timeouts=None
        )
        self.client = nio.AsyncClient(settings.homeserver, settings.user_id, config=config)
        self._task: asyncio.Task[None] | None = None
        self._refused: set[str] = set()
        self._creators: dict[str, set[str]] = {}  # room → creators (room version 12 powers)
        self._display_name = settings.user_id.split(":")[0].lstrip("@")

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        s = self.settings
        if s.access_token:
            self.client.access_token = s.access_token
            self.client.user_id = s.user_id
            self.client.device_id = s.device_id or "POTLUCK"
        elif not await self._resume_session():
            response = await self.client.login(s.password, device_name=s.device_name)
            if isinstance(response, nio.LoginError):
                raise RuntimeError(f"Matrix login as {s.user_id} failed: {response.message}")
            self._save_session()

    async def _resume_session(self) -> bool:
        """Reuse the device a password login made last time, so restarts do not pile up
        devices on the account; a token the server no longer accepts means a new login."""
        if self.session_file is None or not self.session_file.exists():
            return False
        try:
            saved = json.loads(self.session_file.read_text())
        except (OSError, ValueError):
            return False
        if (
            saved.get("user_id") != self.settings.user_id
            or saved.get("homeserver") != self.settings.homeserver
        ):
            return False
        self.client.access_token = saved["access_token"]
        self.client.user_id = saved["user_id"]
        self.client.device_id = saved["device_id"]
        whoami = await self.client.whoami()
        if isinstance(whoami, nio.WhoamiResponse) and whoami.user_id == self.settings.user_id:
            return True
        log.info("Matrix: the saved session was not accepted (%s); logging in again", whoami)
        self.client.access_token = ""
        return False

    def _save_session(self) -> None:
        if self.session_file is None:
            return
        data = {
            "homeserver": self.settings.homeserver,
            "user_id": self.client.user_id,
            "device_id": self.client.device_id,
            "access_token": self.client.access_token,
        }
        partial = self.session_file.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(partial, self.session_file)

    async def start(self, on_incoming: OnIncoming, on_cursor: OnCursor, cursor: str | None) -> None:
        first = await self._sync(cursor, timeout=0)
        if cursor is None:
            # A new bot does not answer history: accept pending invites, then start from now.
            await self._invites(first)
        else:
            await self._deliver(first, on_incoming)
        await on_cursor(first.next_batch)
        self._task = asyncio.create_task(self._loop(first.next_batch, on_incoming, on_cursor))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.client.close()

    async def _sync(self, since: str | None, timeout: int) -> nio.SyncResponse:
        for attempt in range(1000):
            response = await self.client.sync(
                timeout=timeout, since=since, full_state=since is None
            )
            if isinstance(response, nio.SyncResponse):
                return response
            delay = min(30.0, 0.5 * 2**attempt)
            log.warning("Matrix sync failed (%s); retrying in %.1fs", response, delay)
            await asyncio.sleep(delay)
        raise RuntimeError("Matrix sync kept failing")

    async def _loop(self, since: str, on_incoming: OnIncoming, on_cursor: OnCursor) -> None:
        while True:
            try:
                response = await self._sync(since, self.settings.sync_timeout_ms)
                await self._invites(response)
                await self._deliver(response, on_incoming)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep syncing; the same batch is fetched again
                log.exception("Matrix: handling a sync batch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            since = response.next_batch
            await on_cursor(since)

    # -- events in -------------------------------------------------------------------------

    async def _invites(self, response: nio.SyncResponse) -> None:
        for room_id, info in response.rooms.invite.items():
            inviter = next(
                (
                    e.sender
                    for e in info.invite_state
                    if isinstance(e, nio.InviteMemberEvent)
                    and e.state_key == self.client.user_id
                    and e.membership == "invite"
                ),
                None,
            )
            if inviter is None or not self.may_invite(inviter):
                log.info("declining invite to %s from %s (not allowed)", room_id, inviter)
                await self.client.room_leave(room_id)
                continue
            joined = await self.client.join(room_id)
            log.info("joined %s on %s's invite: %s", room_id, inviter, type(joined).__name__)
            encrypted = any(
                getattr(e, "source", {}).get("type") == "m.room.encryption"
                for e in info.invite_state
            )
            if encrypted:
                await self._refuse_encrypted(room_id)

    async def _refuse_encrypted(self, room_id: str) -> None:
        if room_id in self._refused:
            return
        self._refused.add(room_id)
        # Without olm, nio sends this in the clear, which an encrypted room still shows.
        await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.notice", "body": ENCRYPTED_REFUSAL}
        )
        await self.client.room_leave(room_id)

    async def _deliver(self, response: nio.SyncResponse, on_incoming: OnIncoming) -> None:
        for room_id, info in response.rooms.join.items():
            log.debug("sync: %s: %d events", room_id, len(info.timeline.events))
            for event in [*info.state, *info.timeline.events]:
                if isinstance(event, nio.RoomCreateEvent):
                    content = event.source.get("content", {})
                    self._creators[room_id] = {
                        event.sender,
                        *content.get("additional_creators", []),
                    }
            for event in info.timeline.events:
                if isinstance(event, nio.MegolmEvent) or (
                    getattr(event, "source", {}).get("type") == "m.room.encryption"
                ):
                    await self._refuse_encrypted(room_id)
                    continue
                if getattr(event, "sender", None) == self.client.user_id:
                    continue
                if isinstance(event, nio.ReactionEvent | nio.RedactionEvent):
                    await on_incoming(self._reaction(room_id, event))
                    continue
                if not isinstance(event, nio.RoomMessageText):
                    continue
                incoming = self._incoming(room_id, event)
                await on_incoming(incoming)

    def _reaction(self, room_id: str, event: nio.ReactionEvent | nio.RedactionEvent) -> Reaction:
        room = self.client.rooms.get(room_id)
        name = (room.user_name(event.sender) if room else None) or event.sender
        if isinstance(event, nio.RedactionEvent):  # a reaction (or anything) taken back
            undoes = event.redacts or event.source.get("content", {}).get("redacts", "")
            return Reaction(
                "matrix",
                room_id,
                event.sender,
                name,
                "",
                "",
                event.event_id,
                added=False,
                undoes=str(undoes),
                whole_chat=True,
            )
        return Reaction(
            "matrix",
            room_id,
            event.sender,
            name,
            event.reacts_to,
            event.key,
            event.event_id,
            whole_chat=True,
        )

    def _incoming(self, room_id: str, event: nio.RoomMessageText) -> Incoming:
        content = event.source.get("content", {})
        relates = content.get("m.relates_to", {}) or {}
        reply_to = (relates.get("m.in_reply_to") or {}).get("event_id")
        thread = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
        if thread and relates.get("is_falling_back"):
            reply_to = None  # a thread's fallback reply is not a reply to anyone
        body = strip_reply_fallback(event.body)
        me = self.client.user_id
        mentioned = me in (content.get("m.mentions", {}) or {}).get("user_ids", [])
        lowered = body.lower()
        mentions_bot = (
            mentioned or me.lower() in lowered or (f"{self._display_name.lower()}" in lowered)
        )
        reply_to_bot = bool(reply_to) and event.body.startswith(f"> <{me}>")
        room = self.client.rooms.get(room_id)
        name = room.user_name(event.sender) if room else None
        return Incoming(
            platform="matrix",
            room=thread_room(room_id, thread),
            sender=event.sender,
            sender_name=name or event.sender,
            text=body,
            event_id=event.event_id,
            mentions_bot=mentions_bot,
            reply_to=reply_to,
            reply_to_bot=reply_to_bot,
            parent=room_id if thread else None,
        )

    # -- messages out ----------------------------------------------------------------------

    @staticmethod
    def _content(message: Outgoing) -> dict[str, Any]:
        if message.agent:
            body = f"{message.agent}: {message.text}"
            formatted = f"<strong>{html.escape(message.agent)}</strong>: " + html.escape(
                message.text
            ).replace("\n", "<br>")
            content = {
                "msgtype": "m.text",
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": formatted,
                # MSC4144 per-message profiles: clients that know them show the agent as
                # its own sender; the rest show the label in the body.
                "com.beeper.per_message_profile": {
                    "id": message.agent,
                    "displayname": message.agent,
                    "has_fallback": True,
                },
            }
        else:
            content = {"msgtype": "m.notice", "body": message.text}
        return content

    async def _send(self, room: str, content: dict[str, Any]) -> str:
        response = await self.client.room_send(room, "m.room.message", content)
        if isinstance(response, nio.RoomSendError):
            if response.status_code == "M_LIMIT_EXCEEDED":
                raise RateLimited((response.retry_after_ms or 1000) / 1000)
            raise OSError(f"Matrix refused the message: {response.status_code} {response.message}")
        return response.event_id

    async def send(self, message: Outgoing) -> str:
        content = self._content(message)
        room, thread = split_thread_room(message.room)
        if thread:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread,
                "is_falling_back": not message.reply_to,
                "m.in_reply_to": {"event_id": message.reply_to or thread},
            }
        elif message.reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": message.reply_to}}
        return await self._send(room, content)

    async def edit(self, room: str, message_id: str, message: Outgoing) -> None:
        room = split_thread_room(room)[0]
        new = self._content(message)
        content = {
            **new,
            "body": "* " + new["body"],
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": message_id},
        }
        if "formatted_body" in new:
            content["formatted_body"] = "* " + new["formatted_body"]
        await self._send(room, content)

    async def is_admin(self, room: str, user: str) -> bool:
        """Room admins and moderators (power level 50 or more) may change the recipe. From
        room version 12 on, creators outrank every power level and are not listed in it."""
        room = split_thread_room(room)[0]
        matrix_room = self.client.rooms.get(room)
        if matrix_room is None:
            return False
        version = str(matrix_room.room_version or "1")
        if version.isdigit() and int(version) >= 12 and user in self._creators.get(room, ()):
            return True
        return matrix_room.power_levels.get_user_level(user) >= 50
