"""Tools an agent may use, all executed in its room's sandbox.

Two ways to ask for them: function calling, for models that litellm says support it, and a
text convention (fenced blocks) for models that do not — the tiny local model among them.
Which one an agent gets is decided from its model chain, not assumed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from .sandbox.results import ExecResult, SandboxError

MAX_TOOL_ROUNDS = 4
# Calls run from one reply; the rest are answered "not run". A reply is untrusted text: forty
# ```run blocks must not hold a room's sandbox for forty time limits.
MAX_CALLS_PER_REPLY = 8
MAX_RESULT_CHARS = 6000

SPECS: dict[str, list[dict[str, Any]]] = {
    "shell": [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Run a bash command in this room's sandbox (Debian with python3, "
                "git, make, jq; no network). The working directory is the room's workspace.",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            },
        }
    ],
    "files": [
        {
            "type": "function",
            "function": {
                "name": "write_file",
                "description": "Create or replace a text file in the workspace.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                    "required": ["path", "content"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Read a text file from the workspace.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "list_files",
                "description": "List the files in a folder of the workspace.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                },
            },
        },
    ],
}

TEXT_CONVENTION = {
    "shell": "To run a command in your sandbox (no network), write it in a block:\n"
    "```run\n<command>\n```",
    "files": "To write a file in your workspace, write:\n```file <path>\n<content>\n```",
}
_BLOCK = re.compile(r"```(run|file)[ \t]*([^\n`]*)\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None  # the provider's call id, for function calling


@dataclass(frozen=True)
class ToolOutcome:
    call: ToolCall
    text: str  # what the model is shown
    command: str  # what a receipt records
    exit_code: int
    output: str
    wall_ms: int
    killed: str | None = None


def specs_for(tools: list[str]) -> list[dict[str, Any]]:
    return [spec for tool in tools for spec in SPECS.get(tool, [])]


def instructions_for(tools: list[str]) -> str:
    return "\n".join(TEXT_CONVENTION[t] for t in tools if t in TEXT_CONVENTION)


def parse_text_calls(text: str, allowed: list[str]) -> list[ToolCall]:
    """Fenced blocks in a reply, as tool calls. Pure."""
    calls = []
    for kind, header, body in _BLOCK.findall(text):
        if kind == "run" and "shell" in allowed and body.strip():
            calls.append(ToolCall("shell", {"command": body.strip()}))
        elif kind == "file" and "files" in allowed and header.strip():
            calls.append(ToolCall("write_file", {"path": header.strip(), "content": body}))
    return calls


def parse_native_calls(raw: list[dict[str, Any]]) -> list[ToolCall]:
    calls = []
    for part in raw:
        try:
            arguments = json.loads(part.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = {"_malformed": part.get("arguments", "")}
        if not isinstance(arguments, dict):
            arguments = {"_malformed": part.get("arguments", "")}
        calls.append(ToolCall(part.get("name", ""), arguments, part.get("id")))
    return calls


class Toolbox(Protocol):
    async def run(self, call: ToolCall) -> ToolOutcome: ...


class SandboxService(Protocol):
    """What tools need of sandboxes: the gateway's BrokerClient (runtime/sandbox/client.py)."""

    async def exec(self, room: str, command: str, request: Any = None) -> ExecResult: ...

    async def write_file(
        self, room: str, path: str, data: bytes, request: Any = None
    ) -> ExecResult: ...

    async def read_file(
        self, room: str, path: str, max_bytes: int = ..., request: Any = None
    ) -> bytes: ...

    async def list_files(self, room: str, path: str = ".", request: Any = None) -> list[str]: ...


def _clip(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return text[:MAX_RESULT_CHARS] + f"\n[… {len(text) - MAX_RESULT_CHARS} more characters]"


class SandboxToolbox:
    """The tools of one room, bound to its sandbox and the recipe's sandbox policy."""

    def __init__(self, sandboxes: SandboxService, room: str, policy: Any = None) -> None:
        self.sandboxes = sandboxes
        self.room = room
        self.policy = policy

    async def run(self, call: ToolCall) -> ToolOutcome:
        args = call.arguments
        try:
            if "_malformed" in args:
                return _refused(call, "the arguments were not a JSON object")
            if call.name == "shell":
                command = str(args.get("command", ""))
                if not command.strip():
                    return _refused(call, "shell needs a command")
                return _from_exec(
                    call, command, await self.sandboxes.exec(self.room, command, self.policy)
                )
            if call.name == "write_file":
                path, content = str(args.get("path", "")), str(args.get("content", ""))
                result = await self.sandboxes.write_file(
                    self.room, path, content.encode(), self.policy
                )
                return ToolOutcome(
                    call,
                    f"wrote {len(content.encode())} bytes to {path}",
                    f"write_file {path}",
                    0,
                    "",
                    int(result.wall_s * 1000),
                )
            if call.name == "read_file":
                path = str(args.get("path", ""))
                data = await self.sandboxes.read_file(self.room, path, request=self.policy)
                text = data.decode("utf-8", errors="replace")
                return ToolOutcome(call, _clip(text), f"read_file {path}", 0, text, 0)
            if call.name == "list_files":
                path = str(args.get("path") or ".")
                entries = await self.sandboxes.list_files(self.room, path, self.policy)
                text = "\n".join(entries) or "(empty)"
                return ToolOutcome(call, text, f"list_files {path}", 0, text, 0)
        except (SandboxError, ValueError) as exc:
            return _refused(call, str(exc))
        return _refused(call, f"there is no tool called {call.name!r}")


def not_run(call: ToolCall, why: str) -> ToolOutcome:
    """A call answered without running it (the model is told why)."""
    return _refused(call, why)


def _refused(call: ToolCall, why: str) -> ToolOutcome:
    return ToolOutcome(call, f"error: {why}", f"{call.name} (refused)", -1, why, 0)


def _from_exec(call: ToolCall, command: str, result: ExecResult) -> ToolOutcome:
    killed = "timeout" if result.timed_out else "oom" if result.oom_killed else None
    shown = f"[{result.summary()}]\n"
    if result.stdout:
        shown += result.stdout
    if result.stderr:
        shown += ("\n" if result.stdout else "") + "stderr:\n" + result.stderr
    return ToolOutcome(
        call,
        _clip(shown),
        command,
        result.exit_code,
        result.stdout + result.stderr,
        int(result.wall_s * 1000),
        killed,
    )
