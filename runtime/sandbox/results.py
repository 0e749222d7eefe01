"""What a sandboxed command produced, as both sides of the broker see it. Pure.

Every field that says how a command ended (exit code, time-out, memory kill, leftovers)
comes from the engine and the broker's own clock, never from the command's output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


class SandboxError(RuntimeError):
    """The sandbox could not be used; the message says what to do."""

    code = "sandbox"


class NotMine(SandboxError):
    """A container or volume in the way that this broker did not create: left alone."""

    code = "not_mine"


class EngineDown(SandboxError):
    """The Docker engine does not answer."""

    code = "unavailable"


@dataclass
class ExecResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    leftovers_killed: int = 0

    @property
    def digest(self) -> str:
        """What a receipt records of the output: its hash, not its text."""
        return hashlib.sha256((self.stdout + "\x00" + self.stderr).encode()).hexdigest()

    def summary(self) -> str:
        """One line for the room: how it ended."""
        if self.timed_out:
            how = "stopped: it ran past the time limit"
        elif self.oom_killed and self.exit_code == 137:
            how = "killed: it ran out of memory"
        else:
            how = f"exit {self.exit_code}"
        extra = []
        if self.oom_killed and not self.timed_out and self.exit_code != 137:
            extra.append("a process ran out of memory and was killed")
        if self.truncated:
            extra.append("output truncated")
        if self.leftovers_killed:
            extra.append(f"{self.leftovers_killed} leftover processes killed")
        return f"{how} in {self.wall_s:.2f}s" + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Ended:
    """How one exec ended, from the engine: the broker's `exit` frame."""

    exit_code: int
    wall_s: float
    timed_out: bool = False
    oom_killed: bool = False
    leftovers_killed: int = 0
    out_total: int = 0
    err_total: int = 0
    replaced: bool = False  # the container was discarded afterwards (the workspace stays)
    notes: tuple[str, ...] = ()  # requests capped by the install's ceilings

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ended:
        def number(key: str, kind: type) -> Any:
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"exit.{key} is not a number")
            return kind(value)

        notes = data.get("notes") or []
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError("exit.notes is not a list of text")
        return cls(
            exit_code=number("exit_code", int),
            wall_s=number("wall_s", float),
            timed_out=data.get("timed_out") is True,
            oom_killed=data.get("oom_killed") is True,
            leftovers_killed=number("leftovers_killed", int),
            out_total=number("out_total", int),
            err_total=number("err_total", int),
            replaced=data.get("replaced") is True,
            notes=tuple(notes),
        )


@dataclass
class Collected:
    """An exec's output as it arrives: the first `cap` bytes of each stream, and counts."""

    cap: int
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)

    def add(self, stream: int, data: bytes) -> None:
        target = self.out if stream == 1 else self.err
        target += data[: max(0, self.cap - len(target))]


REPLACED = "\n[the sandbox was overwhelmed and has been replaced; files are kept]"


def exec_result(command: str, collected: Collected, ended: Ended) -> ExecResult:
    """The result a caller sees: output decoded, with a marker where it was cut."""
    stdout = collected.out.decode("utf-8", errors="replace")
    stderr = collected.err.decode("utf-8", errors="replace")
    cap = collected.cap
    if ended.out_total > cap:
        stdout += f"\n[… {ended.out_total - cap} more bytes of output not shown]"
    if ended.err_total > cap:
        stderr += f"\n[… {ended.err_total - cap} more bytes of errors not shown]"
    if ended.replaced and not ended.timed_out:
        stderr += REPLACED
    return ExecResult(
        command,
        ended.exit_code,
        stdout,
        stderr,
        ended.wall_s,
        truncated=ended.out_total > cap or ended.err_total > cap,
        timed_out=ended.timed_out,
        oom_killed=ended.oom_killed,
        leftovers_killed=ended.leftovers_killed,
    )


@dataclass(frozen=True)
class ProbeResult:
    enforced: dict[str, str]
    missing: dict[str, str]

    def lines(self) -> list[str]:
        return [f"in force: {k} ({v})" for k, v in self.enforced.items()] + [
            f"NOT in force: {k} ({v})" for k, v in self.missing.items()
        ]
