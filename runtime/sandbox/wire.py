"""Frames on an asyncio stream: the only I/O of the broker's protocol (see protocol.py).

Callers put their own deadlines around these; a frame is never read past MAX_FRAME.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .protocol import HEADER, frame, frame_length, parse


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the other side closed between messages."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    body = await reader.readexactly(frame_length(header))
    return parse(body)


async def write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(frame(message))
    await writer.drain()
