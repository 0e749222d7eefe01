"""The home-server deployment: the compose file validates and only the broker holds the
Docker socket, the systemd units verify, and the gateway image builds here (no registry,
`docker build --network none`) and `potluck doctor` passes inside it, with sandboxes probed
through a broker container over a shared Unix socket; compose runs both end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support import ROOT, engine, free_port, missing

DEPLOY = ROOT / "deploy"
SOCKET = "/run/potluck/broker.sock"


def test_the_compose_file_validates_and_only_the_broker_holds_the_socket() -> None:
    if shutil.which("docker-compose") is None:
        missing("docker-compose (`make test` installs it)")
    done = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    holders = [n for n, s in services.items() if any("docker.sock" in v for v in s["volumes"])]
    assert holders == ["broker"]
    gateway, broker = services["gateway"], services["broker"]
    assert broker["network_mode"] == "none"  # no network at all, the engine by its socket
    assert "networks" not in gateway and not any("DOCKER" in k for k in gateway["environment"])
    assert gateway["environment"]["POTLUCK_SANDBOX_BROKER"] == SOCKET
    assert gateway["depends_on"] == {"broker": {"condition": "service_healthy"}}
    shared = "broker-socket:/run/potluck"
    assert shared in gateway["volumes"] and shared in broker["volumes"]
    assert broker["command"][:3] == ["potluck", "sandbox", "broker"] and "660" in broker["command"]
    assert broker["user"] == "0:10002"  # the socket's group is the gateway's
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])
    for service in (gateway, broker):
        assert service["read_only"] and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing("systemd-analyze")
    units = []
    for unit in DEPLOY.glob("*.service"):  # the venv path exists only once installed
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/potluck/.venv/bin/potluck", "/bin/true"))
        units.append(copy)
    assert sorted(u.name for u in units) == ["potluck-broker.service", "potluck.service"]
    done = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # warnings count too
    gateway = (DEPLOY / "potluck.service").read_text()
    assert "User=potluck" in gateway and "docker.sock" not in gateway
    assert "DOCKER_HOST" not in gateway
    assert f"POTLUCK_SANDBOX_BROKER={SOCKET}" in gateway
    assert "Requires=potluck-broker.service" in gateway
    broker = (DEPLOY / "potluck-broker.service").read_text()
    assert f"--socket {SOCKET} --mode 660" in broker
    assert "Group=potluck" in broker and "RuntimeDirectory=potluck" in broker
    assert "NoNewPrivileges=yes" in broker and "ProtectSystem=strict" in broker


def _docker(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def gateway_image() -> Iterator[str]:
    """The gateway image built from this checkout, under a tag of this run's own."""
    engine()
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        missing("root and debootstrap (`make test` runs as root and installs it)")
    tag = f"potluck-gateway:test-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        [str(DEPLOY / "gateway" / "build.sh"), tag], capture_output=True, text=True, timeout=1800
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    yield tag
    _docker("image", "rm", "-f", tag)


def test_the_gateway_image_builds_offline_and_doctor_passes_inside_it(gateway_image: str) -> None:
    run_id = uuid.uuid4().hex[:6]
    socket_volume, data_volume, state_volume = (f"potluck-test-{k}-{run_id}" for k in "sdb")
    broker = f"potluck-broker-{run_id}"
    hardened = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges:true"]  # fmt: skip
    try:
        _docker(
            "run", "-d", "--name", broker, "--network", "none", "-u", "0:10002", *hardened,
            "-e", f"POTLUCK_HOME=/state/{run_id}",  # an install label of this run's own
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{socket_volume}:/run/potluck", "-v", f"{state_volume}:/state",
            gateway_image, "potluck", "sandbox", "broker", "--socket", SOCKET, "--mode", "660",
            check=True,
        )  # fmt: skip
        gateway = ["run", "--rm", "--network", "none", *hardened,
                   "-v", f"{data_volume}:/data", "-v", f"{socket_volume}:/run/potluck",
                   "-e", f"POTLUCK_SANDBOX_BROKER={SOCKET}", gateway_image]  # fmt: skip
        deadline = time.monotonic() + 60
        probe = "import socket; socket.socket(socket.AF_UNIX).connect('" + SOCKET + "')"
        while _docker(*gateway, "python3", "-c", probe).returncode:
            assert time.monotonic() < deadline, _docker("logs", broker).stderr[-3000:]
            time.sleep(0.5)
        doctor = _docker(*gateway, "sh", "-c", "potluck init >/dev/null && potluck doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        report = doctor.stdout
        assert "0 failed" in report
        for line in (
            "✓ recipes: 5 bundled",
            "✓ local model",
            f"✓ sandbox broker: {SOCKET}",
            "via the broker",
            "✓ sandbox image",
            "✓ store",
        ):
            assert line in report, report
        assert "limits in force" in report  # probed through the broker container
        # the gateway's side has no engine: no Docker socket, and the broker's speaks no HTTP
        smuggle = (
            "import socket, struct; s = socket.socket(socket.AF_UNIX); s.connect('" + SOCKET
            + "'); s.sendall(b'GET /v1.41/containers/json HTTP/1.1\\r\\nHost: d\\r\\n\\r\\n');"
            " n = struct.unpack('>I', s.recv(4))[0]; print(s.recv(n).decode())"
        )  # fmt: skip
        answer = _docker(*gateway, "sh", "-c", f'ls /var/run/docker.sock; python3 -c "{smuggle}"')
        assert "No such file" in answer.stderr, answer
        assert json.loads(answer.stdout)["error"]["code"] == "too_large", answer.stdout
        user = _docker("run", "--rm", "--network", "none", gateway_image, "id", "-u", check=True)
        assert user.stdout.strip() == "10002"  # the gateway is not root in its container
        stop = _docker("stop", "-t", "30", broker)
        assert stop.returncode == 0, stop.stderr
        state = json.loads(_docker("inspect", broker, check=True).stdout)[0]["State"]
        assert state["ExitCode"] == 0, _docker("logs", broker).stderr[-3000:]  # SIGTERM: clean
    finally:
        _docker("rm", "-f", broker)
        for volume in (socket_volume, data_volume, state_volume):
            _docker("volume", "rm", "-f", volume)


def test_compose_runs_the_gateway_beside_its_broker_and_both_stop_cleanly(
    gateway_image: str,
) -> None:
    """The README's home-server path: `up`, healthy, doctor green inside, a command run
    through the broker, the web room on loopback with its token, then SIGTERM through
    `stop` and a clean drain in both services' logs."""
    import urllib.request

    if shutil.which("docker-compose") is None:
        missing("docker-compose (`make test` installs it)")
    port = free_port()
    project = f"potluck{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "POTLUCK_IMAGE": gateway_image, "POTLUCK_PORT": str(port)}
    compose = ["docker-compose", "-p", project, "-f", str(DEPLOY / "compose.yaml")]

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    up = run("up", "-d")
    assert up.returncode == 0, up.stderr
    try:
        deadline, health = time.monotonic() + 120, ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert health.startswith("ok"), run("logs").stdout[-3000:]
        doctor = run("exec", "-T", "gateway", "potluck", "doctor")
        assert doctor.returncode == 0 and "0 failed" in doctor.stdout, doctor.stdout
        assert "via the broker" in doctor.stdout
        command = run("exec", "-T", "gateway", "potluck", "sandbox", "exec", "web:t", "id -u")
        assert command.returncode == 0 and command.stdout.strip() == "10001", command
        reset = run("exec", "-T", "gateway", "potluck", "sandbox", "reset", "web:t")
        assert reset.returncode == 0, reset  # its workspace volume is the engine's, not compose's
        token = run("exec", "-T", "gateway", "cat", "/data/web.token").stdout.strip()
        url = f"http://127.0.0.1:{port}/api/recipes"
        asked = urllib.request.Request(url, headers={"X-Potluck-Token": token})
        with urllib.request.urlopen(asked, timeout=5) as response:
            assert {r["name"] for r in json.load(response)} >= {"debate", "solo"}
        stop = run("stop", timeout=120)
        assert stop.returncode == 0, stop.stderr
        logs = run("logs", "--no-color").stdout
        records = [
            json.loads(line.split("|", 1)[1])
            for line in logs.splitlines()
            if "|" in line and line.split("|", 1)[1].strip().startswith("{")
        ]
        assert any(r["message"] == "stopped cleanly" for r in records), logs[-3000:]
        assert any(r["message"] == "broker stopped" for r in records), logs[-3000:]
        assert token not in logs
        broker = run("ps", "-q", "broker").stdout.strip()
        state = json.loads(_docker("inspect", broker, check=True).stdout)[0]["State"]
        assert state["ExitCode"] == 0
    finally:
        run("down", "-v", timeout=180)
