"""The sandbox broker as an attacker meets it: a real broker process on a real engine, spoken
to byte by byte. Nothing outside its operations can be reached: malformed, oversized, slow,
smuggled or impersonating requests get a reason and a closed connection; containers and
volumes it did not create are never used or removed; a recipe cannot widen the install's
ceilings; floods stay bounded; it stops cleanly on SIGTERM with a command in flight.

The replaced Docker API proxy failed the same kind of attacks (issue 13: case-variant and
duplicate JSON keys, `Upgrade: tcp` smuggling, old-API start bodies, exec users "00"/"+0",
volume DriverConfig binds); here no Docker request exists to smuggle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.recipes.schema import SandboxPolicy
from runtime.sandbox import NotMine, SandboxError, protocol
from runtime.sandbox.wire import read_message

from .support import ROOT, BrokerProcess, engine, until

EXEC = {"op": "exec", "room": "room", "argv": ["true"]}


async def exchange(path: Path, *sends: bytes | dict[str, Any], wait: float = 30) -> list[dict]:
    """Send frames (dicts) or raw bytes on one connection; the broker's replies until it
    closes the connection."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        for item in sends:
            writer.write(item if isinstance(item, bytes) else protocol.frame(item))
        await writer.drain()
        replies = []
        async with asyncio.timeout(wait):
            while (message := await read_message(reader)) is not None:
                replies.append(message)
        return replies
    finally:
        writer.close()


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def refusal(path: Path, *sends: bytes | dict[str, Any], wait: float = 30) -> dict:
    """The one error the broker answers with (and nothing else)."""
    replies = await exchange(path, *sends, wait=wait)
    assert len(replies) == 1 and "error" in replies[0], replies
    return replies[0]["error"]


@pytest.fixture
def broker(brokers: Callable[..., BrokerProcess]) -> BrokerProcess:
    return brokers()


# -- the protocol ------------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes, str]] = [
    ("unknown field", json.dumps({**EXEC, "user": "0"}).encode(), "exec.user: unknown field"),
    ("a Docker option", json.dumps({**EXEC, "privileged": True}).encode(), "unknown field"),
    ("a container id", json.dumps({**EXEC, "container": "abc"}).encode(), "unknown field"),
    ("an image", json.dumps({**EXEC, "ask": {"image": "debian"}}).encode(), "unknown field"),
    ("case-variant key", b'{"op":"exec","Room":"r","argv":["true"]}', "exec.Room: unknown"),
    ("duplicate key", b'{"op":"exec","room":"a","room":"b","argv":["x"]}', "appears twice"),
    ("case duplicate", b'{"op":"exec","room":"a","ROOM":"b","argv":["x"]}', "appears twice"),
    ("argv as text", json.dumps({**EXEC, "argv": "rm -rf /"}).encode(), "exec.argv"),
    ("empty argv", json.dumps({**EXEC, "argv": []}).encode(), "exec.argv"),
    ("NUL in argv", json.dumps({**EXEC, "argv": ["a\x00b"]}).encode(), "NUL"),
    ("stdin as text", json.dumps({**EXEC, "stdin": "5"}).encode(), "exec.stdin"),
    ("bool as int", json.dumps({**EXEC, "ask": {"pids": True}}).encode(), "exec.ask.pids"),
    ("NaN", b'{"op":"exec","room":"r","argv":["x"],"ask":{"cpus":NaN}}', "NaN"),
    ("negative cpus", json.dumps({**EXEC, "ask": {"cpus": -1.0}}).encode(), "exec.ask.cpus"),
    ("broker's own room", json.dumps({**EXEC, "room": "__probe__"}).encode(), "broker's own"),
    ("control in room", json.dumps({**EXEC, "room": "a\nb"}).encode(), "control"),
    ("empty room", json.dumps({**EXEC, "room": ""}).encode(), "exec.room"),
    ("long room", json.dumps({**EXEC, "room": "r" * 300}).encode(), "exec.room"),
    ("unknown op", b'{"op":"containers/create","Image":"debian"}', "unknown op"),
    ("no op", b'{"room":"r"}', 'no "op"'),
    ("not an object", b"[1, 2, 3]", "JSON object"),
    ("invalid JSON", b'{"op": "exec", ', "not JSON"),
    ("invalid UTF-8", b'{"op": "\xff\xfe"}', "not UTF-8"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
    ("data first", b'{"op":"data","data":"AAAA"}', "unknown op"),
]


@pytest.mark.parametrize("body,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_requests_are_refused_with_a_reason(
    broker: BrokerProcess, body: bytes, expected: str
) -> None:
    error = await refusal(broker.socket, raw_frame(body))
    assert error["code"] == "bad_request" and expected in error["message"], error
    assert broker.containers() == []  # nothing was started for it
    assert (await broker.client().health()).engine_ok  # and the broker is fine


async def test_huge_frames_are_refused_before_they_are_read(broker: BrokerProcess) -> None:
    started = time.monotonic()
    error = await refusal(broker.socket, struct.pack(">I", 0x7FFFFFFF))  # no body follows
    assert error["code"] == "too_large" and "over the 262144-byte limit" in error["message"]
    assert time.monotonic() - started < 5  # answered at once, nothing waited for
    # a reply larger than a frame is refused by the sender, too
    with pytest.raises(protocol.ProtocolError):
        protocol.frame({"op": "exec", "room": "r", "argv": ["x" * protocol.MAX_FRAME]})


async def test_raw_docker_requests_reach_nothing_of_dockers(broker: BrokerProcess) -> None:
    """What worked on the proxy is only bytes here: no HTTP, no upgrade, no second request."""
    smuggled = (
        b"POST /v1.41/containers/abc/exec HTTP/1.1\r\nHost: docker\r\nUpgrade: tcp\r\n"
        b"Connection: Upgrade\r\nContent-Length: 2\r\n\r\n{}"
        b"POST /v1.23/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 60\r\n\r\n"
        b'{"Image":"debian","HostConfig":{"Binds":["/:/host"]},"user":"0"}'
    )
    for attempt in (b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n", smuggled):
        replies = await exchange(broker.socket, attempt)
        assert [r.get("error", {}).get("code") for r in replies] == ["too_large"], replies
    assert broker.containers() == []


async def test_a_request_that_never_ends_is_dropped(broker: BrokerProcess) -> None:
    started = time.monotonic()
    partial = struct.pack(">I", 100) + b'{"op": "exec"'  # 13 of 100 bytes, then silence
    error = await refusal(broker.socket, partial, wait=30)
    assert error["code"] == "timeout" and "no complete request within 10 s" in error["message"]
    assert 9 < time.monotonic() - started < 25
    # a put whose data never comes is dropped too, and writes nothing
    client = broker.client()
    await client.exec("room", "true")
    put = {"op": "put", "room": "room", "path": "half.txt", "size": 1000}
    some = {"op": "data", "data": protocol.encode_bytes(b"x" * 10)}
    error = await refusal(broker.socket, put, some, wait=90)
    assert "only 10 of 1000 bytes arrived" in error["message"], error
    assert await client.list_files("room") == []  # no partial file, no temporary left


async def test_idle_connections_are_bounded_then_dropped(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers(args=("--max-connections", "8"))
    assert (await broker.client().health()).engine_ok  # served: no slot is taken now
    idle = [await asyncio.open_unix_connection(str(broker.socket)) for _ in range(8)]
    try:
        busy = await refusal(broker.socket, {"op": "health"})  # accepted after the 8
        assert busy["code"] == "busy", busy
        # each idle one is dropped at its deadline, with a reason; then service resumes
        for reader, _ in idle:
            async with asyncio.timeout(30):
                answer = await read_message(reader)
            assert answer is not None and answer["error"]["code"] == "timeout"
        assert (await broker.client().health()).engine_ok
    finally:
        for _, writer in idle:
            writer.close()


async def test_floods_of_connections_and_commands_stay_bounded_and_correct(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers(args=("--max-connections", "32"))
    client = broker.client()
    pid = broker.process.pid  # type: ignore[union-attr]
    await client.exec("warm", "true")

    def descriptors() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    def threads() -> int:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return int(next(line.split()[1] for line in status if line.startswith("Threads:")))

    async def one(n: int) -> str:
        result = await client.exec(f"room-{n % 6}", f"echo {n}; sleep 0.2")
        return result.stdout.strip()

    async def health() -> bool | str:
        try:
            return (await client.health()).engine_ok
        except SandboxError as exc:
            return str(exc)

    async def flood() -> None:
        commands = [asyncio.create_task(one(n)) for n in range(24)]
        checks = [asyncio.create_task(health()) for _ in range(150)]
        answers = await asyncio.gather(*checks)
        # every connection was served or told the broker was busy; none hung or crashed it
        assert all(a is True or "busy" in str(a) for a in answers), [
            a for a in answers if a is not True and "busy" not in str(a)
        ]
        assert any(a is True for a in answers)
        done = await asyncio.gather(*commands, return_exceptions=True)
        assert all(d == str(n) for n, d in enumerate(done) if isinstance(d, str)), done
        assert all("busy" in str(d) for d in done if not isinstance(d, str)), done
        assert sum(isinstance(d, str) for d in done) >= 8
        async with asyncio.timeout(10):  # responsive right after
            assert (await client.health()).engine_ok

    # The engine client's connection pool keeps at most 10 connections and the event
    # stream one; a leak would grow with the ~170 requests of each flood.
    fds_before = descriptors()
    for _ in range(2):
        await flood()
        await until(
            lambda: descriptors() <= fds_before + 16,
            10,
            lambda: f"the broker's descriptors to settle ({descriptors()} vs {fds_before})",
        )
    assert threads() <= 20, threads()  # the engine pool (16), the event follower, the loop


async def test_a_client_leaving_mid_command_stops_it(broker: BrokerProcess) -> None:
    import docker

    client = broker.client()
    await client.exec("room", "true")
    [entry] = await client.list()
    container = docker.from_env().containers.get(entry["container"])

    def sleeping() -> bool:
        return any("sleep 300" in " ".join(p) for p in container.top()["Processes"])

    _, writer = await asyncio.open_unix_connection(str(broker.socket))
    writer.write(protocol.frame({"op": "exec", "room": "room", "argv": ["sleep", "300"]}))
    await writer.drain()
    await until(sleeping, 20, "the command to run")
    writer.close()  # the client goes away
    await until(lambda: not sleeping(), 20, "the abandoned command to be stopped")
    started = time.monotonic()
    after = await client.exec("room", "ps -e -o args=")
    assert "sleep 300" not in after.stdout and time.monotonic() - started < 10


async def test_paths_cannot_leave_the_workspace(broker: BrokerProcess, tmp_path: Path) -> None:
    client = broker.client()
    await client.exec("room", "ln -s / root; ln -s /etc etc")
    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../x", "/workspace/../etc/shadow"):
        for request in (
            {"op": "get", "room": "room", "path": bad},
            {"op": "put", "room": "room", "path": bad, "size": 0},
            {"op": "list_files", "room": "room", "path": bad},
        ):
            error = await refusal(broker.socket, request)
            assert error["code"] == "bad_request" and "workspace" in error["message"], error
    # through a symlink: only the sandbox's own read-only view, as the sandbox user
    with pytest.raises(SandboxError, match=r"could not write.*Read-only file system"):
        await client.write_file("room", "etc/potluck-was-here", b"x")
    with pytest.raises(SandboxError, match="could not be read"):
        await client.read_file("room", "root/etc/shadow")
    assert not Path("/etc/potluck-was-here").exists()
    # replacing a symlink replaces the link, never what it points to
    await client.write_file("room", "root", b"now a file")
    assert await client.read_file("room", "root") == b"now a file"


async def test_containers_and_volumes_it_did_not_create_are_not_mine(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    import docker

    from runtime.sandbox.policy import container_name, labels, volume_name

    engine_ = docker.from_env()
    install = broker.install
    # a container with exactly our name and labels for room "victim"
    impostor = engine_.containers.run(
        "potluck-sandbox:default",
        ["sleep", "600"],
        name=container_name(install, "victim"),
        labels={**labels(install, "victim", "sandbox"), "io.potluck.limits": "x"},
        detach=True,
        network_mode="none",
    )
    # a volume with our workspace name and labels, binding a host folder (the proxy's
    # DriverConfig attack, as a trap for the broker)
    target = tmp_path / "host-folder"
    target.mkdir()
    trap = engine_.volumes.create(
        volume_name(install, "trapped"),
        driver="local",
        driver_opts={"type": "none", "o": "bind", "device": str(target)},
        labels=labels(install, "trapped", "workspace"),
    )
    client = broker.client()
    try:
        with pytest.raises(NotMine, match="did not create"):
            await client.exec("victim", "touch /workspace/owned")
        await client.reset("victim")
        await client.remove("victim")
        with pytest.raises(NotMine, match="left alone"):
            await client.exec("trapped", "touch /workspace/owned")
        with pytest.raises(NotMine):
            await client.write_file("trapped", "x", b"x")
        await client.reset("trapped")
        assert await client.list() == []
        impostor.reload()
        assert impostor.status == "running" and not impostor.attrs.get("ExecIDs")
        assert engine_.volumes.get(trap.name).attrs["Options"]["device"] == str(target)
        assert list(target.iterdir()) == []
        # and after a restart, adoption leaves the impostor alone too
        broker.stop()
        broker.start()
        impostor.reload()
        assert impostor.status == "running"
    finally:
        impostor.remove(force=True)
        with contextlib.suppress(Exception):
            engine_.volumes.get(trap.name).remove(force=True)


async def test_a_greedy_recipe_is_capped_and_told(
    brokers: Callable[..., BrokerProcess],
) -> None:
    import docker

    broker = brokers(memory="256m", pids="64", exec_timeout_s="3", cpus="1")
    client = broker.client()
    greedy = SandboxPolicy(memory="999999g", pids=4096, cpus=8.0, exec_timeout_s=3600)
    notes = await client.ensure("room", greedy)
    assert notes == [
        "memory 999999g asked, 256m allowed by this install",
        "cpus 8 asked, 1 allowed by this install",
        "pids 4096 asked, 64 allowed by this install",
        "exec_timeout_s 3600 asked, 3 allowed by this install",
    ]
    assert await client.capped(greedy) == notes  # the gateway can tell the room the same
    script = (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; sleep 3600"
    )
    result = await client.exec("room", script, greedy)
    assert result.stdout.split() == [str(256 * 1024**2), "64"] and result.timed_out
    assert result.wall_s < 10
    [entry] = await client.list()
    host = docker.from_env().containers.get(entry["container"]).attrs["HostConfig"]
    assert (host["Memory"], host["PidsLimit"], host["NanoCpus"]) == (256 * 1024**2, 64, 10**9)
    # another image cannot even be asked for
    error = await refusal(broker.socket, {**EXEC, "ask": {"image": "alpine:latest"}})
    assert "exec.ask.image: unknown field" in error["message"]


async def test_more_cpus_than_the_engine_has_are_capped_not_a_docker_error(
    brokers: Callable[..., BrokerProcess],
) -> None:
    import docker

    broker = brokers(cpus="1024")
    client = broker.client()
    cores = docker.from_env().info()["NCPU"]
    health = await client.health()
    assert health.ceilings.cpus == cores
    result = await client.exec("room", "nproc", SandboxPolicy(cpus=8.0))
    assert result.exit_code == 0, result
    [entry] = await client.list()
    nano = docker.from_env().containers.get(entry["container"]).attrs["HostConfig"]["NanoCpus"]
    assert nano == min(8, cores) * 10**9


async def test_sigterm_stops_the_broker_cleanly_with_a_command_in_flight(
    brokers: Callable[..., BrokerProcess],
) -> None:
    broker = brokers(grace_s=2)
    client = broker.client()
    await client.write_file("room", "kept.txt", b"files survive a stop")
    running = asyncio.create_task(client.exec("room", "sleep 300"))
    await until(lambda: broker.containers() and "sleep 300" in str(broker.containers()[0].top()))
    started = time.monotonic()
    assert broker.process is not None
    broker.process.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(broker.process.wait, 60)
    stopped_in = time.monotonic() - started
    assert status == 0 and stopped_in < 2 + 20, stopped_in  # grace, then cancel and sweep
    with pytest.raises(SandboxError, match="stopping"):
        await running
    assert broker.containers() == [] and not broker.socket.exists()
    broker.start()
    assert await client.read_file("room", "kept.txt") == b"files survive a stop"


# -- the gateway's side ------------------------------------------------------------------------


async def test_the_gateway_starts_its_own_broker_without_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.config import load_config
    from gateway.sandboxes import local_socket, open_sandboxes

    engine()
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("POTLUCK_TELEGRAM_TOKEN", secret)
    monkeypatch.setenv("POTLUCK_SANDBOX_WORKSPACE", "64m")
    config = load_config(env={**os.environ, "POTLUCK_HOME": str(tmp_path / "home")})
    client = await open_sandboxes(config)
    assert client is not None and client.process is not None
    child = client.process
    try:
        environ = Path(f"/proc/{child.pid}/environ").read_bytes()
        assert secret.encode() not in environ and b"OPENAI_API_KEY" not in environ
        assert b"POTLUCK_SANDBOX_WORKSPACE=64m" in environ
        assert oct(local_socket(config).stat().st_mode & 0o777) == "0o600"
        result = await client.exec("web:kitchen", "echo through the broker; id -u")
        assert result.stdout.split() == ["through", "the", "broker", "10001"]
        await client.reset("web:kitchen")
    finally:
        await client.close()
    assert child.returncode == 0 and not local_socket(config).exists()


async def test_without_a_broker_or_an_engine_agents_run_without_tools(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.config import load_config
    from gateway.sandboxes import open_sandboxes

    caplog.set_level(logging.WARNING, "potluck.sandboxes")
    env = {**os.environ, "POTLUCK_HOME": str(tmp_path / "a")}
    missing = load_config(env={**env, "POTLUCK_SANDBOX_BROKER": str(tmp_path / "none.sock")})
    assert await open_sandboxes(missing) is None
    assert "does not answer" in caplog.text and "agents run without tools" in caplog.text
    caplog.clear()
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")  # what the child inherits
    dead = {**env, "POTLUCK_HOME": str(tmp_path / "b")}
    assert await open_sandboxes(load_config(env=dead)) is None
    assert "reaches no Docker engine" in caplog.text and "agents run without tools" in caplog.text
    assert not (tmp_path / "b" / "state" / "broker.sock").exists()  # its broker was stopped


def test_sandbox_config_is_checked_at_load(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config

    home = {"POTLUCK_HOME": str(tmp_path)}
    good = load_config(
        env={**home, "POTLUCK_SANDBOX_MEMORY": "2g", "POTLUCK_SANDBOX_PIDS": "512"}
    ).sandbox
    assert good.broker is None and good.ceilings.memory_bytes == 2 * 1024**3
    assert good.ceilings.pids == 512 and good.ceilings.image == "potluck-sandbox:default"
    for key, value, message in (
        ("MEMORY", "lots", "memory must be a size"),
        ("MEMORY", "1m", "at least 16m"),
        ("PIDS", "1.5", "pids must be a number"),
        ("CPUS", "0", "cpus must be between"),
        ("EXEC_TIMEOUT_S", "-1", "exec_timeout_s must be between"),
        ("BROKER", "relative.sock", "absolute path"),
        ("IMAGE", "Not An Image", "image must be an image name"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(env={**home, f"POTLUCK_SANDBOX_{key}": value})
    (tmp_path / "config.toml").write_text('[sandbox]\nmemroy = "1g"\n')
    with pytest.raises(ConfigError, match=r"unknown keys \['memroy'\]"):
        load_config(env=home)


def test_the_operator_commands_go_through_a_broker(tmp_path: Path) -> None:
    """`potluck sandbox exec/list/reset`: each starts the install's broker when none runs,
    and stops it again; `docker-proxy` is gone."""
    engine()
    env = {
        **os.environ,
        "POTLUCK_HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "POTLUCK_SANDBOX_WORKSPACE": "64m",
    }

    def potluck(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = potluck("sandbox", "exec", "web:cli", "echo from the cli; exit 3")
    assert done.returncode == 3 and done.stdout == "from the cli\n", done.stderr
    assert "exit 3" in done.stderr
    listed = potluck("sandbox", "list")
    assert listed.returncode == 0 and "(no sandboxes)" in listed.stdout  # stopped with it
    assert "ceilings memory 1g" in listed.stdout
    assert potluck("sandbox", "reset", "web:cli").returncode == 0
    assert not (tmp_path / "state" / "broker.sock").exists()
    gone = potluck("docker-proxy", "--help")
    assert gone.returncode != 0 and "No such command" in gone.stderr
