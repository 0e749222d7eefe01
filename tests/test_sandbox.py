"""Sandboxes on a real Docker engine, through a real broker process: what agents can do,
and every abuse contained, with how each command ended told by the engine, not by text the
command can print.

Each test's broker has its own home, hence its own install label; afterwards whatever that
install left on the engine (containers, volumes, loop devices) is removed by label, and
nothing else on the host is touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.recipes.schema import SandboxPolicy
from runtime.sandbox import SandboxError
from runtime.sandbox.client import BrokerClient
from runtime.sandbox.policy import (
    KEEPER_USER,
    USER,
    WORKSPACE,
    Ceilings,
    container_options,
    effective,
    exec_options,
    leftovers,
    workspace_path,
)

from .support import ROOT, WORKSPACE_BYTES, BrokerProcess, until

TIGHT = SandboxPolicy(memory="128m", pids=64, cpus=0.5, exec_timeout_s=3)
# Prints a forged copy of the old wrapper's result line, tries to kill its parent (the old
# wrapper), leaves a `setsid` daemon behind and exits 3.
FORGE = (
    "setsid sleep 1000 >/dev/null 2>&1 </dev/null & "
    "printf '\\n\\036potluck-exec 0 0 0\\n' >&2; "
    "kill -9 $(ps -o ppid= -p $PPID) 2>/dev/null; exit 3"
)


# -- the pure policy -------------------------------------------------------------------------


def test_hardening_is_fixed_whatever_the_recipe_says() -> None:
    limits, _ = effective(SandboxPolicy(memory="1g", cpus=2.0, pids=512), Ceilings(pids=512))
    options = container_options(
        install="x", room="matrix:!r:hs", image="potluck-sandbox:default", volume="v",
        limits=limits,
    )  # fmt: skip
    assert options["network_mode"] == "none" and options["read_only"] is True
    assert options["cap_drop"] == ["ALL"] and options["privileged"] is False
    assert "no-new-privileges:true" in options["security_opt"]
    assert options["user"] == KEEPER_USER != USER  # init and keeper: out of the user's reach
    assert options["mem_limit"] == options["memswap_limit"] == 1024**3
    assert options["pids_limit"] == 512 and options["nano_cpus"] == 2_000_000_000
    assert list(options["volumes"]) == ["v"]  # a named volume, never a host path
    assert not any("/" in name for name in options["volumes"])
    assert set(options["environment"]) == {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE"}
    command = exec_options(["id"], stdin=False)
    assert command["user"] == USER and command["privileged"] is False
    assert command["workdir"] == WORKSPACE and set(command["environment"]) == set(
        options["environment"]
    )
    with pytest.raises(Exception, match="none"):
        SandboxPolicy(network="bridge")  # type: ignore[arg-type]


def test_a_recipe_may_only_ask_for_less_and_is_told_what_was_capped() -> None:
    ceilings = Ceilings(memory_bytes=1024**3, cpus=2.0, pids=256, exec_timeout_s=120)
    greedy = SandboxPolicy(memory="999999g", pids=4096, cpus=8.0, exec_timeout_s=3600)
    limits, notes = effective(greedy, ceilings)
    assert (limits.memory_bytes, limits.nano_cpus, limits.pids, limits.exec_timeout_s) == (
        1024**3, 2_000_000_000, 256, 120,
    )  # fmt: skip
    assert notes == [
        "memory 999999g asked, 1g allowed by this install",
        "cpus 8 asked, 2 allowed by this install",
        "pids 4096 asked, 256 allowed by this install",
        "exec_timeout_s 3600 asked, 120 allowed by this install",
    ]
    modest, none = effective(TIGHT, ceilings)
    assert none == [] and modest.memory_bytes == 128 * 1024**2 and modest.exec_timeout_s == 3
    tiny, notes = effective(SandboxPolicy(memory="1k"), ceilings)
    assert tiny.memory_bytes == 16 * 1024**2 and "least a sandbox gets" in notes[0]
    # more CPUs than the engine has is capped, never a raw Docker error
    assert Ceilings(cpus=64.0).within_host(2).cpus == 2.0


def test_a_recipe_cannot_name_an_image() -> None:
    from runtime.recipes import RecipeError, validate_data

    recipe = {
        "potluck": 1,
        "name": "x",
        "title": "X",
        "agents": [{"name": "a", "persona": "p"}],
    }
    assert validate_data({**recipe, "sandbox": {"image": "potluck-sandbox:default"}})
    with pytest.raises(RecipeError, match="cannot choose the sandbox image"):
        validate_data({**recipe, "sandbox": {"image": "debian:bookworm"}})


def test_leftovers_are_anything_but_init_and_its_keeper() -> None:
    keeper = KEEPER_USER.split(":")[0]
    listing = [
        {"PID": "10", "PPID": "1", "UID": keeper, "STAT": "Ss"},  # init
        {"PID": "11", "PPID": "10", "UID": keeper, "STAT": "S"},  # keeper
        {"PID": "12", "PPID": "10", "UID": "10001", "STAT": "Z"},  # dead, being reaped
    ]
    assert leftovers(listing, 10) == []
    daemon = {"PID": "13", "PPID": "10", "UID": "10001", "STAT": "Ss"}
    assert leftovers([*listing, daemon], 10) == [daemon]
    impostor = {"PID": "14", "PPID": "99", "UID": keeper, "STAT": "S"}  # not init's child
    assert leftovers([*listing, impostor], 10) == [impostor]


def test_workspace_paths_cannot_escape() -> None:
    assert workspace_path("src/a.py") == f"{WORKSPACE}/src/a.py"
    assert workspace_path("/workspace/x/../y") == f"{WORKSPACE}/y"
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../x", "/workspace/../etc"):
        with pytest.raises(ValueError):
            workspace_path(bad)


# -- what an agent can do --------------------------------------------------------------------


async def test_an_agent_writes_and_runs_a_program(sandboxes: BrokerClient) -> None:
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
    piped = await sandboxes.run("room", ["wc", "-c"], stdin=b"x" * 200_000)
    assert piped.stdout.strip() == "200000"


async def test_big_output_is_capped_with_a_marker(sandboxes: BrokerClient) -> None:
    result = await sandboxes.exec("room", "head -c 5000000 /dev/zero | tr '\\0' a")
    assert result.truncated and result.exit_code == 0
    assert len(result.stdout) < 70_000 and "more bytes of output not shown" in result.stdout


async def test_binary_and_odd_file_names_round_trip(sandboxes: BrokerClient) -> None:
    data = bytes(range(256)) * 1000  # 256 kB: several frames
    name = "odd dir/ünï 'q\" $x.bin"
    await sandboxes.write_file("room", name, data)
    assert await sandboxes.read_file("room", name, max_bytes=len(data)) == data
    assert await sandboxes.read_file("room", name, max_bytes=10) == data[:10]
    with pytest.raises(SandboxError, match="no such file"):
        await sandboxes.read_file("room", "missing.txt")
    with pytest.raises(SandboxError, match="not a regular file"):
        await sandboxes.read_file("room", "odd dir")


# -- results come from the engine, not from what the command prints --------------------------


async def test_a_forged_result_line_gets_the_real_exit_code_and_no_daemon_survives(
    sandboxes: BrokerClient,
) -> None:
    result = await sandboxes.exec("room", FORGE)
    assert result.exit_code == 3, result  # the old wrapper reported the forged 0
    assert "potluck-exec 0 0 0" in result.stderr  # shown as the text it is
    assert result.leftovers_killed >= 1
    left = await sandboxes.exec("room", "ps -e -o args= | grep -c '^sleep 1000'")
    assert left.stdout.strip() == "0", left  # the old wrapper's sweep was skipped


async def test_a_process_ignoring_sigterm_past_the_limit_is_a_time_out(
    sandboxes: BrokerClient,
) -> None:
    result = await sandboxes.exec(
        "room", "trap '' TERM; while :; do :; done", SandboxPolicy(exec_timeout_s=2)
    )
    assert result.timed_out and "time limit" in result.summary(), result  # was "exit 137"
    assert 1.5 < result.wall_s < 8
    assert (await sandboxes.health()).counters["timeouts"] == 1


async def test_an_oom_before_a_broker_restart_is_not_this_commands(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers()
    client = broker.client()
    tight = SandboxPolicy(memory="128m")
    bomb = await client.exec("room", "python3 -c 'x = bytearray(1024**3)'", tight)
    assert bomb.oom_killed and bomb.exit_code == 137
    broker.stop(signal.SIGKILL)  # a crash: the container stays and is adopted
    broker.start()
    assert [s["state"] for s in await client.list()] == ["running"]
    result = await client.exec("room", "kill -9 $$", tight)
    assert result.exit_code == 137 and not result.oom_killed, result
    assert "out of memory" not in result.summary()


async def test_an_unreadable_file_is_an_error_not_empty_content(sandboxes: BrokerClient) -> None:
    await sandboxes.exec("room", "ln -s /etc/shadow shadow; echo secret > mine; chmod 000 mine")
    with pytest.raises(SandboxError, match=r"shadow: could not be read.*Permission denied"):
        await sandboxes.read_file("room", "shadow")  # was b"" with exit 0
    with pytest.raises(SandboxError, match="mine: could not be read"):
        await sandboxes.read_file("room", "mine")


# -- abuse -----------------------------------------------------------------------------------


async def test_an_endless_loop_is_killed_at_the_time_limit(sandboxes: BrokerClient) -> None:
    result = await sandboxes.exec("room", "while :; do :; done", TIGHT)
    assert result.timed_out and 2.5 < result.wall_s < 8
    assert "time limit" in result.summary()
    after = await sandboxes.exec("room", "echo still here", TIGHT)
    assert after.stdout == "still here\n"


async def test_a_fork_bomb_is_contained_and_other_rooms_keep_answering(
    sandboxes: BrokerClient,
) -> None:
    await sandboxes.exec("calm", "true", TIGHT)  # warm
    bomb = asyncio.create_task(sandboxes.exec("bomb", "b() { b | b & }; b; sleep 10", TIGHT))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    calm = await sandboxes.exec("calm", "echo fine", TIGHT)
    assert calm.stdout == "fine\n" and time.monotonic() - started < 5
    result = await bomb
    assert result.timed_out, result
    after = await sandboxes.exec("bomb", "ps -e -o args=", TIGHT)
    assert after.exit_code == 0 and "b | b" not in after.stdout
    # tini, its keeper, and this command's own shell and ps
    assert len(after.stdout.splitlines()) <= 4, after.stdout


async def test_a_memory_bomb_is_killed_and_reported_as_such(sandboxes: BrokerClient) -> None:
    result = await sandboxes.exec(
        "room", "python3 -c 'x = bytearray(1024**3); print(len(x))'", TIGHT
    )
    assert result.oom_killed and result.exit_code == 137
    assert "out of memory" in result.summary()
    ok = await sandboxes.exec("room", "echo alive", TIGHT)
    assert ok.stdout == "alive\n" and not ok.oom_killed


async def test_filling_the_disk_fills_only_the_workspace_image(
    brokers: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    sandboxes = brokers().client()
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


async def test_no_network_not_even_to_the_hosts_loopback(sandboxes: BrokerClient) -> None:
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


async def test_host_files_secrets_the_engine_and_the_broker_are_out_of_reach(
    brokers: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    (tmp_path / f"secret-{token}").write_text(token)
    # even a broker started with a key in its environment passes none of it on
    sandboxes = brokers(env={"OPENAI_API_KEY": f"sk-{token}"}).client()
    result = await sandboxes.exec(
        "room",
        f"env; cat /proc/mounts; find / -xdev -name 'secret-{token}' 2>/dev/null; "
        "touch /etc/x /usr/bin/x 2>&1; id -u; ls /var/run/docker.sock 2>&1; "
        "cat /etc/shadow 2>&1 | head -1; echo sockets:; find / -xdev -type s 2>/dev/null",
    )
    out = result.stdout
    assert token not in out and "OPENAI_API_KEY" not in out
    assert "Read-only file system" in out and "\n10001\n" in out
    assert "No such file or directory" in out.split("docker.sock")[-1]
    assert "Permission denied" in out.split("shadow")[-1]
    assert out.split("sockets:\n", 1)[1].strip() == ""  # neither the engine's nor the broker's
    mounts = [line.split()[1] for line in out.splitlines() if line.startswith(("/dev/", "overlay"))]
    assert "/workspace" in mounts
    assert all(
        m in ("/", "/workspace", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf") for m in mounts
    ), mounts


async def test_processes_left_running_are_killed_after_each_command(
    sandboxes: BrokerClient,
) -> None:
    result = await sandboxes.exec(
        "room", "setsid sleep 1000 & nohup sleep 999 >/dev/null 2>&1 & (sleep 998 &); echo go"
    )
    assert result.stdout == "go\n" and result.leftovers_killed >= 3
    assert not result.timed_out and result.wall_s < 5
    left = await sandboxes.exec("room", "ps -e -o args= | grep -c '^sleep 99'")
    assert left.stdout.strip() == "0"


async def test_a_daemon_holding_the_output_open_cannot_hang_the_gateway(
    sandboxes: BrokerClient,
) -> None:
    policy = SandboxPolicy(exec_timeout_s=2)
    result = await sandboxes.exec("room", "setsid sleep 600 & sleep 600", policy)
    assert result.timed_out and result.wall_s < 8
    # a finished command whose daemon keeps the output open is over, not timed out
    quick = await sandboxes.exec("room", "(sleep 600; echo late) & echo early", policy)
    assert quick.stdout == "early\n" and not quick.timed_out and quick.leftovers_killed >= 1


# -- lifecycle ----------------------------------------------------------------------------


async def test_workspace_survives_reaping_and_broker_restarts_and_reset_clears_it(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers(idle_s="10")
    client = broker.client()
    await client.write_file("room", "notes.txt", b"keep me")
    assert len(broker.containers()) == 1
    # the broker reaps idle containers by itself, on its own timer
    await until(lambda: not broker.containers(), 40, "the idle container to be reaped")
    assert await client.read_file("room", "notes.txt") == b"keep me"  # recreated
    # a clean stop removes the containers; the workspace stays for the next broker
    assert broker.stop() == 0 and broker.containers() == []
    broker.start()
    assert await client.read_file("room", "notes.txt") == b"keep me"
    # after a crash the next broker adopts the running container, warm
    [before] = await client.list()
    broker.stop(signal.SIGKILL)
    broker.start()
    [after] = await client.list()
    assert (after["container"], after["state"]) == (before["container"], "running")
    assert await client.read_file("room", "notes.txt") == b"keep me"
    await client.reset("room")
    assert await client.list_files("room") == []


async def test_rooms_cannot_start_more_containers_than_the_install_runs_at_once(
    brokers: Callable[..., BrokerProcess],
) -> None:
    """An open allow-list lets anyone add the bot to rooms: each room's first command may
    not start one more container without end. At the ceiling the least recently used stops
    (its files stay); when every running one is busy, the room is told to wait."""
    broker = brokers(running="2")
    client = broker.client()
    await client.write_file("a", "notes.txt", b"a's")
    await client.write_file("b", "notes.txt", b"b's")
    await client.write_file("c", "notes.txt", b"c's")  # a, the least recently used, stops
    rooms = sorted(c.labels.get("io.potluck.room", "") for c in broker.containers())
    assert len(rooms) == 2 and "a" not in rooms, rooms
    assert await client.read_file("a", "notes.txt") == b"a's"  # back, its files kept
    slow = [
        asyncio.create_task(client.exec(room, "sleep 8", SandboxPolicy(exec_timeout_s=30)))
        for room in ("a", "c")
    ]

    def sleeping() -> int:
        return sum(
            any("sleep 8" in " ".join(p) for p in c.top()["Processes"] or [])
            for c in broker.containers()
            if c.status == "running"
        )

    await until(lambda: sleeping() == 2, 30, "both rooms' commands to be running")
    with pytest.raises(SandboxError, match="at most 2 sandboxes at once"):
        await client.exec("d", "true")
    done = await asyncio.gather(*slow)
    assert all(r.exit_code == 0 for r in done)
    assert (await client.exec("d", "echo ok")).stdout == "ok\n"  # free again: d runs


async def test_a_container_stopped_or_removed_by_hand_is_replaced(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers()
    client = broker.client()
    await client.write_file("room", "kept.txt", b"still here")
    [container] = broker.containers()
    container.stop(timeout=1)
    assert (await client.exec("room", "cat kept.txt")).stdout == "still here"
    [container] = broker.containers()
    container.remove(force=True)
    assert (await client.exec("room", "cat kept.txt")).stdout == "still here"
    assert [c.status for c in broker.containers()] == ["running"]


async def test_foreign_containers_are_never_touched(
    brokers: Callable[..., BrokerProcess],
) -> None:
    import docker

    broker = brokers()
    client = broker.client()
    foreign = docker.from_env().containers.run(
        "potluck-sandbox:default",
        ["sleep", "600"],
        detach=True,
        network_mode="none",
        labels={"other": "1", "io.potluck.install": broker.install, "io.potluck.kind": "sandbox"},
    )
    try:
        await client.exec("room", "true")
        broker.stop(signal.SIGKILL)
        broker.start()  # adoption: our own container is taken back, the foreign one ignored
        await client.remove("room")
        foreign.reload()
        assert foreign.status == "running" and not foreign.attrs.get("ExecIDs")
        assert foreign.id[:12] not in {s["container"] for s in await client.list()}
        assert "did not create" in broker.log.read_text()
    finally:
        foreign.remove(force=True)


async def test_the_probe_reports_what_is_enforced(sandboxes: BrokerClient) -> None:
    probe = await sandboxes.probe()
    for name in (
        "non-root user",
        "no capabilities",
        "no-new-privileges",
        "memory limit",
        "pids limit",
        "no network",
        "read-only root",
        "init out of the sandbox user's reach",
    ):
        assert name in probe.enforced, probe.lines()
    assert "storage_opt quota" in probe.missing
    assert any(line.startswith("NOT in force") for line in probe.lines())


async def test_a_missing_image_is_a_clear_error(brokers: Callable[..., BrokerProcess]) -> None:
    client = brokers(image="potluck-sandbox:nope").client()
    health = await client.health()
    assert health.engine_ok and not health.image_present
    with pytest.raises(SandboxError, match="potluck sandbox build"):
        await client.exec("room", "true")


@pytest.mark.skipif(os.geteuid() != 0, reason="restarting dockerd needs root")
async def test_rooms_get_working_sandboxes_back_after_dockerd_restarts(
    sandboxes: BrokerClient,
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
    # the broker follows the engine's events again: a memory kill is still seen
    bomb = await sandboxes.exec("a", "python3 -c 'x = bytearray(1024**3)'", TIGHT)
    assert bomb.oom_killed


# -- agents using the sandbox ----------------------------------------------------------------


async def test_an_agent_without_function_calling_writes_and_runs_code_by_text_convention(
    sandboxes: BrokerClient,
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
