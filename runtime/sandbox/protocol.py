"""The sandbox broker's protocol: what the gateway may ask, as types, and how it travels.

The gateway asks by intent (run this argument vector in this room, put this file there) and
never sends anything of Docker's: no image, user, mount, option or container id. Rooms are
the only names it uses; the broker maps them to containers it created itself.

A connection carries one request. Every message is a frame: a 4-byte big-endian length,
then that many bytes of UTF-8 JSON holding one object. Parsing is strict by construction:
frames over MAX_FRAME are refused before they are read, JSON deeper than MAX_DEPTH before it
is parsed, duplicate keys (in any case), NaN and Infinity, unknown fields and wrong types are
all refused with a message saying what was wrong. Pure: no I/O here (see wire.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_FRAME = 256 * 1024
MAX_DEPTH = 8
HEADER = struct.Struct(">I")
DATA_CHUNK = 64 * 1024  # raw bytes per data frame (base64 keeps it far under MAX_FRAME)
MAX_FILE = 8 * 1024 * 1024
MAX_ARG = 128 * 1024  # one argument (Linux refuses longer ones anyway)
MAX_ARGS = 1024
MAX_ROOM = 200
MAX_PATH = 4096
MEMORY = r"^[1-9][0-9]{0,6}[kmg]$"


class ProtocolError(ValueError):
    """A message the broker will not act on; `code` says which kind, the text what to fix."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


# -- framing -----------------------------------------------------------------------------------


def frame(message: dict[str, Any]) -> bytes:
    """One message as a frame. Refuses to produce what the other side would refuse."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = body.encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a {len(data)}-byte message is over the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(data)) + data


def frame_length(header: bytes) -> int:
    """The body length a 4-byte header announces, refused when over the limit."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(
            f"a frame of {length} bytes is over the {MAX_FRAME}-byte limit", "too_large"
        )
    return length


def _depth(text: str) -> int:
    """How deeply arrays and objects nest, counted outside strings, without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        folded = key.casefold()
        if folded in seen:
            raise ProtocolError(f"the key {key!r} appears twice (keys are compared ignoring case)")
        seen.add(folded)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a number this protocol accepts")


def parse(body: bytes) -> dict[str, Any]:
    """A frame's body as a JSON object, strictly."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"the frame is not UTF-8 (byte {exc.start})") from None
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH and _depth(text) > MAX_DEPTH:  # scanned only when it could be
        raise ProtocolError(f"the message nests deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"the frame is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(value).__name__}")
    return value


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str, limit: int = DATA_CHUNK) -> bytes:
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError("data is not valid base64") from None
    if len(data) > limit:
        raise ProtocolError(f"a data frame carries at most {limit} bytes, not {len(data)}")
    return data


# -- requests ----------------------------------------------------------------------------------


def _room(value: str) -> str:
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise ValueError("a room name cannot contain control or format characters")
    if value.startswith("__"):
        raise ValueError("room names starting with '__' are the broker's own")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("cannot contain NUL")
    return value


Room = Annotated[str, Field(min_length=1, max_length=MAX_ROOM), AfterValidator(_room)]
FilePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(_no_nul)]
Arg = Annotated[str, Field(max_length=MAX_ARG), AfterValidator(_no_nul)]


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Ask(Message):
    """What the recipe asks for (its `sandbox:` section, less the image). A request: the
    broker caps each number at the install's ceiling and says so."""

    memory: Annotated[str, Field(pattern=MEMORY)] = "512m"
    cpus: Annotated[float, Field(gt=0.0, le=1024.0)] = 1.0
    pids: Annotated[int, Field(ge=1, le=1_000_000)] = 128
    exec_timeout_s: Annotated[int, Field(ge=1, le=86_400)] = 30


class Ensure(Message):
    """Make the room's sandbox warm (created or started), with these limits."""

    op: Literal["ensure"]
    room: Room
    ask: Ask = Ask()


class Exec(Message):
    """Run `argv` in the room's workspace as the sandbox user. `stdin` bytes follow in data
    frames; then the broker streams `out`/`err` frames and one `exit` frame."""

    op: Literal["exec"]
    room: Room
    argv: Annotated[list[Arg], Field(min_length=1, max_length=MAX_ARGS)]
    stdin: Annotated[int, Field(ge=0, le=MAX_FILE)] = 0
    ask: Ask = Ask()


class Put(Message):
    """Write a file of `size` bytes (which follow in data frames) at `path` in the
    workspace; the file appears whole or not at all."""

    op: Literal["put"]
    room: Room
    path: FilePath
    size: Annotated[int, Field(ge=0, le=MAX_FILE)]
    ask: Ask = Ask()


class Get(Message):
    """Read up to `max_bytes` of a file in the workspace: data frames, then `ok`."""

    op: Literal["get"]
    room: Room
    path: FilePath
    max_bytes: Annotated[int, Field(ge=1, le=MAX_FILE)] = 256 * 1024
    ask: Ask = Ask()


class ListFiles(Message):
    op: Literal["list_files"]
    room: Room
    path: FilePath = "."
    ask: Ask = Ask()


class Reset(Message):
    """Remove the room's container and its workspace."""

    op: Literal["reset"]
    room: Room


class Remove(Message):
    """Remove the room's container; its workspace stays."""

    op: Literal["remove"]
    room: Room


class ListSandboxes(Message):
    """This install's sandboxes, and only those."""

    op: Literal["list_sandboxes"]


class Health(Message):
    op: Literal["health"]


class Probe(Message):
    op: Literal["probe"]


class Data(Message):
    """A piece of stdin or of a file being put, base64."""

    op: Literal["data"]
    data: Annotated[str, Field(max_length=(DATA_CHUNK * 4) // 3 + 4)]


Request = Ensure | Exec | Put | Get | ListFiles | Reset | Remove | ListSandboxes | Health | Probe
REQUEST = TypeAdapter(Annotated[Request, Field(discriminator="op")])
OPS = ("ensure", "exec", "put", "get", "list_files", "reset", "remove", "list_sandboxes")
OPS += ("health", "probe")


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "message"
        kind = error["type"]
        if kind == "union_tag_not_found":
            lines.append(f'the message has no "op"; use one of {", ".join(OPS)}')
        elif kind == "union_tag_invalid":
            lines.append(f"unknown op {error['input'].get('op')!r}; use one of {', '.join(OPS)}")
        elif kind == "extra_forbidden":
            lines.append(f"{where}: unknown field (fields are case-sensitive)")
        else:
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}")
    return "; ".join(lines)


def request(message: dict[str, Any]) -> Request:
    """The first frame of a connection, as a typed request."""
    try:
        return REQUEST.validate_python(message)
    except ValidationError as exc:
        raise ProtocolError(_explain(exc)) from None


def data(message: dict[str, Any], limit: int = DATA_CHUNK) -> bytes:
    """A data frame's bytes."""
    try:
        chunk = Data.model_validate(message)
    except ValidationError as exc:
        raise ProtocolError(f"expected a data frame: {_explain(exc)}") from None
    return decode_bytes(chunk.data, limit)


def data_frames(payload: bytes) -> list[dict[str, Any]]:
    return [
        {"op": "data", "data": encode_bytes(payload[offset : offset + DATA_CHUNK])}
        for offset in range(0, len(payload), DATA_CHUNK)
    ]


# -- replies -----------------------------------------------------------------------------------
# The broker's side is built here too, so both ends agree on one spelling.

REPLY_KINDS = ("out", "err", "data", "exit", "ok", "error")


def out(chunk: bytes) -> dict[str, Any]:
    return {"out": encode_bytes(chunk)}


def err(chunk: bytes) -> dict[str, Any]:
    return {"err": encode_bytes(chunk)}


def chunk(payload: bytes) -> dict[str, Any]:
    return {"data": encode_bytes(payload)}


def ok(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"ok": payload or {}}


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def reply(message: dict[str, Any]) -> tuple[str, Any]:
    """A broker's frame as (kind, value); bytes already decoded for out/err/data."""
    if len(message) != 1 or next(iter(message)) not in REPLY_KINDS:
        raise ProtocolError(f"not a broker reply: keys {sorted(message)}")
    kind, value = next(iter(message.items()))
    if kind in ("out", "err", "data"):
        if not isinstance(value, str):
            raise ProtocolError(f"{kind} carries base64 text")
        return kind, decode_bytes(value, MAX_FRAME)
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind} carries an object")
    if kind == "error" and not (
        isinstance(value.get("code"), str) and isinstance(value.get("message"), str)
    ):
        raise ProtocolError("an error carries a code and a message")
    return kind, value
