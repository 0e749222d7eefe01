"""Run `potluck` in a child process under a hard memory cap, and learn its peak RSS.

Bombs are tested the way they would hurt: a real process that either ends with a clear
error or is stopped by the kernel's limit. RLIMIT_AS makes an unbounded allocation fail
fast with MemoryError instead of taking the machine's memory, so a regression shows as a
traceback in the test, not as a swapping host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI in-process, then reports the process's own peak RSS on stderr: VmHWM, the
# high-water mark of this process's memory since exec. (getrusage's ru_maxrss will not do:
# Linux carries it across fork and exec, so a child would report the test runner's size.)
HARNESS = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv = ["potluck", *sys.argv[2:]]
try:
    from gateway.cli import main
    main()
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\nPEAK_RSS_KIB={peak}\\n")
"""


@dataclass(frozen=True)
class Capped:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_capped(
    home: Path,
    *args: str,
    limit_mib: int = 512,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> Capped:
    """`potluck ARGS` with POTLUCK_HOME=home, its address space capped at `limit_mib`."""
    environment = {**os.environ, "POTLUCK_HOME": str(home), "PYTHONPATH": str(ROOT)}
    environment.pop("POTLUCK_DATABASE_URL", None)
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(limit_mib * 1024 * 1024), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    peak = 0
    stderr_lines = []
    for line in done.stderr.splitlines():
        if line.startswith("PEAK_RSS_KIB="):
            peak = int(line.removeprefix("PEAK_RSS_KIB=")) * 1024
        else:
            stderr_lines.append(line)
    return Capped(done.returncode, done.stdout, "\n".join(stderr_lines), peak)
