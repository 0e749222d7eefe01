"""Sandboxes on a real Docker engine: what agents can do, and every abuse contained.

Each test gets its own install label, so its containers and volumes are found and removed
by label afterwards, and nothing else on the host is touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.recipes.schema import SandboxPolicy
from runtime.sandbox import SandboxError, Sandboxes
from runtime.sandbox.policy import WORKSPACE, container_options, limits_for, workspace_path

from .conftest import ROOT, missing

WORKSPACE_BYTES = 64 * 1024 * 1024
TIGHT = SandboxPolicy(memory="128m", pids=64, cpus=0.5, exec_timeout_s=3)


def engine() -> object:
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception:
        missing("a Docker engine (deploy/engine.sh starts one)")
    try:
        client.images.get("potluck-sandbox:default")
    except Exception:
        missing("the sandbox image (`potluck sandbox build`)")
    return client


@pytest.fixture
async def sandboxes(tmp_path: Path) -> AsyncIterator[Sandboxes]:
    client = engine()
    install = "t" + uuid.uuid4().hex[:10]
    boxes = Sandboxes(tmp_path, install=install, client=client, workspace_bytes=WORKSPACE_BYTES)
    yield boxes
    await boxes.close()
    for container in boxes.ours():
        container.remove(force=True)
    for room in {v.attrs["Labels"].get("io.potluck.room", "") for v in boxes.ours("workspace")}:
        boxes.workspaces.remove(room)


# -- the pure policy -------------------------------------------------------------------------


def test_hardening_is_fixed_whatever_the_recipe_says() -> None:
    options = container_options(
        install="x",
        room="matrix:!r:hs",
        image="potluck-sandbox:default",
        volume="v",
        limits=limits_for(SandboxPolicy(memory="1g", cpus=2.0, pids=512)),
    )
    assert options["network_mode"] == "none" and options["read_only"] is True
    assert options["cap_drop"] == ["ALL"] and options["privileged"] is False
    assert "no-new-privileges:true" in options["security_opt"]
    assert options["user"] == "10001:10001"
    assert options["mem_limit"] == options["memswap_limit"] == 1024**3
    assert options["pids_limit"] == 512 and options["nano_cpus"] == 2_000_000_000
    assert list(options["volumes"]) == ["v"]  # a named volume, never a host path
    assert not any("/" in name for name in options["volumes"])
    assert set(options["environment"]) == {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE"}
    with pytest.raises(Exception, match="none"):
        SandboxPolicy(network="bridge")  # type: ignore[arg-type]


def test_workspace_paths_cannot_escape() -> None:
    assert workspace_path("src/a.py") == f"{WORKSPACE}/src/a.py"
    assert workspace_path("/workspace/x/../y") == f"{WORKSPACE}/y"
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../x", "/workspace/../etc"):
        with pytest.raises(ValueError):
            workspace_path(bad)


# -- what an agent can do --------------------------------------------------------------------


async def test_an_agent_writes_and_runs_a_program(sandboxes: Sandboxes) -> None:
    program = b"import sys\nprint(sum(int(a) for a in sys.argv[1:]))\n"
    await sandboxes.write_file("room", "calc/add.py", program)
    assert await sandboxes.read_file("room", "calc/add.py") == program
    listing = await sandboxes.list_files("room")
    assert f"f {len(program)} calc/add.py" in listing and "d 1024 calc" in listing[0]
    result = await sandboxes.exec("room", "python3 calc/add.py 2 3 37; echo oops >&2; exit 4")
    assert (result.stdout, result.stderr, result.exit_code) == ("42\n", "oops\n", 4)
    assert not result.timed_out and not result.oom_killed and result.wall_s < 10
    git = await sandboxes.exec("room", "git init -q r && cd r && git status --short; echo $?")
    assert git.stdout.strip().endswith("0")


async def test_big_output_is_capped_with_a_marker(sandboxes: Sandboxes) -> None:
    result = await sandboxes.exec("room", "head -c 5000000 /dev/zero | tr '\\0' a")
    assert result.truncated and result.exit_code == 0
    assert len(result.stdout) < 70_000 and "more bytes of output not shown" in result.stdout


async def test_binary_and_odd_file_names_round_trip(sandboxes: Sandboxes) -> None:
    data = bytes(range(256)) * 1000  # 256 kB: several chunks
    name = "odd dir/ünï 'q\" $x.bin"
    await sandboxes.write_file("room", name, data)
    assert await sandboxes.read_file("room", name, max_bytes=len(data)) == data
    with pytest.raises(SandboxError, match="no such file"):
        await sandboxes.read_file("room", "missing.txt")


# -- abuse -----------------------------------------------------------------------------------


async def test_an_endless_loop_is_killed_at_the_time_limit(sandboxes: Sandboxes) -> None:
    result = await sandboxes.exec("room", "while :; do :; done", TIGHT)
    assert result.timed_out and 2.5 < result.wall_s < 8
    assert "time limit" in result.summary()
    after = await sandboxes.exec("room", "echo still here", TIGHT)
    assert after.stdout == "still here\n"


async def test_a_fork_bomb_is_contained_and_other_rooms_keep_answering(
    sandboxes: Sandboxes,
) -> None:
    await sandboxes.exec("calm", "true", TIGHT)  # warm
    bomb = asyncio.create_task(sandboxes.exec("bomb", "b() { b | b & }; b; sleep 10", TIGHT))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    calm = await sandboxes.exec("calm", "echo fine", TIGHT)
    assert calm.stdout == "fine\n" and time.monotonic() - started < 5
    result = await bomb
    # stopped at the time limit, or, when the bomb left the wrapper no process slot to
    # report with, by the gateway's own deadline, which replaces the container
    assert result.timed_out or "overwhelmed" in result.stderr, result
    after = await sandboxes.exec("bomb", "ps -e -o args=", TIGHT)
    assert after.exit_code == 0 and "b | b" not in after.stdout
    # tini, its keeper, and this command's own wrapper, timeout, shell and ps
    assert len(after.stdout.splitlines()) <= 6, after.stdout


async def test_a_memory_bomb_is_killed_and_reported_as_such(sandboxes: Sandboxes) -> None:
    result = await sandboxes.exec(
        "room", "python3 -c 'x = bytearray(1024**3); print(len(x))'", TIGHT
    )
    assert result.oom_killed and result.exit_code == 137
    assert "out of memory" in result.summary()
    ok = await sandboxes.exec("room", "echo alive", TIGHT)
    assert ok.stdout == "alive\n" and not ok.oom_killed


async def test_filling_the_disk_fills_only_the_workspace_image(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    free_before = shutil.disk_usage(tmp_path).free
    policy = SandboxPolicy(exec_timeout_s=60)
    result = await sandboxes.exec("room", "dd if=/dev/zero of=fill bs=1M count=500", policy)
    assert result.exit_code != 0 and "No space left on device" in result.stderr
    used = free_before - shutil.disk_usage(tmp_path).free
    assert used <= WORKSPACE_BYTES + 8 * 1024 * 1024  # the host lost at most the cap
    tmp = await sandboxes.exec("room", "dd if=/dev/zero of=/tmp/f bs=1M count=200", policy)
    assert tmp.exit_code != 0  # /tmp is a small tmpfs, counted against memory
    await sandboxes.exec("room", "rm -f fill /tmp/f", policy)
    small = await sandboxes.exec("room", "echo ok > small && cat small", policy)
    assert small.stdout == "ok\n"


async def test_no_network_not_even_to_the_hosts_loopback(sandboxes: Sandboxes) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('CONNECTED')\n"
        "except OSError as e:\n    print('refused', e)\n"
    )
    await sandboxes.write_file("room", "net.py", probe.encode())
    result = await sandboxes.exec("room", "python3 net.py; ls /sys/class/net")
    assert "refused" in result.stdout and "CONNECTED" not in result.stdout
    assert result.stdout.split("\n", 1)[1].split() == ["lo"]
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


async def test_host_files_secrets_and_the_root_filesystem_are_out_of_reach(
    sandboxes: Sandboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = uuid.uuid4().hex
    (tmp_path / f"secret-{token}").write_text(token)
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-{token}")
    result = await sandboxes.exec(
        "room",
        f"env; cat /proc/mounts; find / -xdev -name 'secret-{token}' 2>/dev/null; "
        "touch /etc/x /usr/bin/x 2>&1; id -u; ls /var/run/docker.sock 2>&1; "
        "cat /etc/shadow 2>&1 | head -1",
    )
    out = result.stdout
    assert token not in out and "OPENAI_API_KEY" not in out
    assert "Read-only file system" in out and "\n10001\n" in out
    assert "No such file or directory" in out.split("docker.sock")[-1]
    assert "Permission denied" in out.split("shadow")[-1]
    mounts = [line.split()[1] for line in out.splitlines() if line.startswith(("/dev/", "overlay"))]
    assert "/workspace" in mounts
    assert all(
        m in ("/", "/workspace", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf") for m in mounts
    ), mounts


async def test_processes_left_running_are_killed_after_each_command(
    sandboxes: Sandboxes,
) -> None:
    result = await sandboxes.exec(
        "room", "setsid sleep 1000 & nohup sleep 999 >/dev/null 2>&1 & (sleep 998 &); echo go"
    )
    assert result.stdout == "go\n" and result.leftovers_killed >= 3  # and their shells
    left = await sandboxes.exec("room", "ps -e -o args= | grep -c '^sleep 99'")
    assert left.stdout.strip() == "0"


async def test_a_daemon_holding_the_output_open_cannot_hang_the_gateway(
    sandboxes: Sandboxes,
) -> None:
    policy = SandboxPolicy(exec_timeout_s=2)
    result = await sandboxes.exec("room", "setsid sleep 600 & sleep 600", policy)
    assert result.timed_out and result.wall_s < 8


# -- lifecycle ----------------------------------------------------------------------------


async def test_workspace_survives_reaping_and_a_gateway_restart_and_reset_clears_it(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.write_file("room", "notes.txt", b"keep me")
    assert await sandboxes.reap_idle(0) == ["room"]
    assert sandboxes.ours() == []
    assert await sandboxes.read_file("room", "notes.txt") == b"keep me"  # recreated
    # a new gateway process with the same state adopts the running container
    again = Sandboxes(
        tmp_path,
        install=sandboxes.install,
        client=sandboxes.client,
        workspace_bytes=WORKSPACE_BYTES,
    )
    adopted, removed = await again.adopt()
    assert adopted == ["room"] and removed == []
    assert await again.read_file("room", "notes.txt") == b"keep me"
    await again.reset("room")
    assert await again.list_files("room") == []
    await again.close()


async def test_foreign_containers_are_never_touched(sandboxes: Sandboxes) -> None:
    client = sandboxes.client
    foreign = client.containers.run(
        "potluck-sandbox:default", detach=True, network_mode="none", labels={"other": "1"}
    )
    try:
        await sandboxes.exec("room", "true")
        await sandboxes.adopt()
        await sandboxes.reap_idle(0)
        foreign.reload()
        assert foreign.status == "running"
        assert foreign.id not in {c.id for c in sandboxes.ours()}
    finally:
        foreign.remove(force=True)


async def test_the_probe_reports_what_is_enforced(sandboxes: Sandboxes) -> None:
    probe = await sandboxes.probe()
    for name in (
        "non-root user",
        "no capabilities",
        "no-new-privileges",
        "memory limit",
        "pids limit",
        "no network",
        "read-only root",
    ):
        assert name in probe.enforced, probe.lines()
    assert "storage_opt quota" in probe.missing
    assert any(line.startswith("NOT in force") for line in probe.lines())


async def test_a_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    boxes = Sandboxes(tmp_path, install="t" + uuid.uuid4().hex[:10], client=engine())
    with pytest.raises(SandboxError, match="potluck sandbox build"):
        await boxes.exec("room", "true", SandboxPolicy(image="potluck-sandbox:nope"))
    await boxes.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="restarting dockerd needs root")
async def test_rooms_get_working_sandboxes_back_after_dockerd_restarts(
    sandboxes: Sandboxes,
) -> None:
    await sandboxes.write_file("a", "a.txt", b"from a")
    await sandboxes.write_file("b", "b.txt", b"from b")
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if not pids:
        pytest.skip("dockerd is managed elsewhere (systemd?)")
    subprocess.run(["kill", "-TERM", *pids], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["pidof", "dockerd"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)
    subprocess.run(["bash", str(ROOT / "deploy" / "engine.sh")], check=True, timeout=120)
    assert await sandboxes.read_file("a", "a.txt") == b"from a"
    assert await sandboxes.read_file("b", "b.txt") == b"from b"
    result = await sandboxes.exec("a", "echo back")
    assert result.stdout == "back\n"


# -- agents using the sandbox ----------------------------------------------------------------


async def test_an_agent_without_function_calling_writes_and_runs_code_by_text_convention(
    sandboxes: Sandboxes,
) -> None:
    from runtime.conductor import Conductor
    from runtime.context import Line
    from runtime.models import scripted
    from runtime.models.client import Models
    from runtime.recipes import validate_data
    from runtime.tools import SandboxToolbox

    seen: list[list[dict]] = []

    def coder(messages: list[dict]) -> str:
        seen.append(messages)
        last = messages[-1]["content"]
        if "(tool output)" in last:
            answer = last.split("$ python3 primes.py", 1)[1].split("\n", 2)[2].split("\n")[0]
            return f"The program printed {answer}."
        return (
            "Let me check.\n```file primes.py\n"
            "print([n for n in range(2, 30) if all(n % d for d in range(2, n))])\n```\n"
            "```run\npython3 primes.py\n```"
        )

    scripted.SCRIPTS["coder"] = coder
    recipe = validate_data(
        {
            "potluck": 1,
            "name": "coder",
            "title": "Coder",
            "agents": [
                {
                    "name": "coder",
                    "model": "scripted/coder",
                    "persona": "You code.",
                    "tools": ["shell", "files"],
                }
            ],
            "protocol": {"max_rounds": 1},
        }
    )
    toolbox = SandboxToolbox(sandboxes, "room", recipe.sandbox)
    outcome = await Conductor(recipe, Models(), toolbox=toolbox).respond(
        [Line("alice", "person", "which primes are below 30?")]
    )
    turn = outcome.turns[0]
    assert "```run" in seen[0][0]["content"]  # the convention was explained to this model
    assert [t.command for t in turn.tools] == ["write_file primes.py", "python3 primes.py"]
    assert turn.tools[1].exit_code == 0
    assert turn.text.endswith("The program printed [2, 3, 5, 7, 11, 13, 17, 19, 23, 29].")
    assert await sandboxes.read_file("room", "primes.py")
