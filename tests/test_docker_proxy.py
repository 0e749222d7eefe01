"""The Docker proxy a container deployment gives the gateway instead of the socket: the
sandbox manager works through it unchanged (create, exec with hijacked streams, probe,
reset), and everything that would reach the host is refused with a reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.docker_proxy import decide, serve
from runtime.sandbox import Sandboxes
from runtime.sandbox.policy import DEFAULT_IMAGE

from .test_sandbox import engine


def test_the_rules_read_the_body_of_what_creates_things() -> None:
    sandbox = {
        "Image": "potluck-sandbox:default",
        "User": "10001:10001",
        "HostConfig": {
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "Binds": ["potluck-ws-abc:/workspace:rw"],
        },
    }
    assert (
        decide(
            "POST", "/v1.41/containers/create?name=x", str.encode(__import__("json").dumps(sandbox))
        )
        is None
    )
    import json

    def create(**changes: object) -> str | None:
        host = {**sandbox["HostConfig"], **changes.pop("host", {})}  # type: ignore[dict-item]
        return decide(
            "POST",
            "/containers/create",
            json.dumps({**sandbox, **changes, "HostConfig": host}).encode(),
        )

    assert "privileged" in str(create(host={"Privileged": True}))
    assert "no network" in str(create(host={"NetworkMode": "host"}))
    assert "host path '/etc'" in str(create(host={"Binds": ["/etc:/host"]}))
    assert "not a Potluck sandbox image" in str(create(Image="debian:bookworm"))
    assert "namespace" in str(create(host={"PidMode": "host"}))
    assert "root" in str(create(User="0"))
    assert "bind mounts are refused" in str(create(host={"Mounts": [{"Type": "bind"}]}))
    assert decide("POST", "/images/create?fromImage=debian", b"") is not None  # no pulls
    assert decide("POST", "/build", b"") is not None
    assert decide("GET", "/containers/abc/archive?path=/", b"") is not None
    assert decide("GET", "/events", b"") is not None
    assert decide("POST", "/containers/abc/exec", b'{"User": "root", "Cmd": ["sh"]}') is not None
    assert decide("POST", "/containers/abc/exec", b'{"User": "10001", "Cmd": ["sh"]}') is None
    assert (
        decide(
            "POST",
            "/volumes/create",
            b'{"Name": "w", "DriverOpts": {"type": "ext4", "device": "/dev/sda1"}}',
        )
        is not None
    )
    assert (
        decide(
            "POST",
            "/volumes/create",
            b'{"Name": "w", "DriverOpts": {"type": "ext4", "device": "/dev/loop3", "o": "nodev"}}',
        )
        is None
    )


@pytest.fixture
async def proxied() -> AsyncIterator[str]:
    engine()  # skips without an engine and the sandbox image
    server = await serve("127.0.0.1", 0, "/var/run/docker.sock")
    port = server.sockets[0].getsockname()[1]
    yield f"tcp://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_sandboxes_work_through_it_and_the_host_stays_out_of_reach(
    proxied: str, tmp_path: Path
) -> None:
    import docker

    # the clients ask /version when built: off the loop that runs the proxy
    client = await asyncio.to_thread(docker.DockerClient, base_url=proxied, timeout=60)
    boxes = Sandboxes(tmp_path, install="p" + uuid.uuid4().hex[:9], client=client)
    try:
        result = await boxes.exec("room", "echo through the proxy; id -u")
        assert result.exit_code == 0 and result.stdout.split() == [
            "through",
            "the",
            "proxy",
            "10001",
        ]
        probe = await boxes.probe()
        for limit in ("no network", "read-only root", "no capabilities", "memory limit"):
            assert limit in probe.enforced
        await boxes.reset("room")
    finally:
        await boxes.close()
        for container in await asyncio.to_thread(boxes.ours):
            await asyncio.to_thread(container.remove, force=True)

    api = await asyncio.to_thread(docker.APIClient, base_url=proxied, timeout=30)
    refused = [
        lambda: api.create_container(
            DEFAULT_IMAGE,
            "sh",
            host_config=api.create_host_config(privileged=True, network_mode="none"),
        ),
        lambda: api.create_container(
            DEFAULT_IMAGE,
            "sh",
            host_config=api.create_host_config(
                binds=["/:/host"],
                network_mode="none",
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
            ),
            user="10001",
        ),
        lambda: api.pull("debian", tag="bookworm"),
        lambda: api.get_archive("anything", "/etc"),
        lambda: api.create_container("debian:bookworm", "sh"),
    ]
    for call in refused:
        with pytest.raises(docker.errors.APIError) as caught:
            await asyncio.to_thread(call)
        assert caught.value.status_code == 403
        assert "potluck docker proxy" in str(caught.value)
