"""The home-server deployment: the compose file validates and keeps the Docker socket away
from the gateway, the systemd units verify, and the gateway image builds here (no registry,
`docker build --network none`) and `potluck doctor` passes inside it, with sandboxes probed
through the proxy container on an internal network."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import yaml

from .conftest import ROOT, missing
from .test_sandbox import engine

DEPLOY = ROOT / "deploy"


def test_the_compose_file_validates_and_only_the_proxy_holds_the_socket() -> None:
    if shutil.which("docker-compose") is None:
        missing("docker-compose (`make test` installs it)")
    done = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway, proxy = compose["services"]["gateway"], compose["services"]["docker-proxy"]
    assert not any("docker.sock" in v for v in gateway["volumes"])
    assert any("docker.sock" in v for v in proxy["volumes"])
    assert gateway["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    assert compose["networks"]["engine"]["internal"] is True and proxy["networks"] == ["engine"]
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])
    for service in (gateway, proxy):
        assert service["read_only"] and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing("systemd-analyze")
    units = []
    for unit in DEPLOY.glob("*.service"):  # the venv path exists only once installed
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/potluck/.venv/bin/potluck", "/bin/true"))
        units.append(str(copy))
    assert len(units) == 2
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # warnings count too
    gateway = (DEPLOY / "potluck.service").read_text()
    assert "User=potluck" in gateway and "/var/run/docker.sock" not in gateway
    assert "DOCKER_HOST=unix:///run/potluck/docker.sock" in gateway


def test_the_gateway_image_builds_offline_and_doctor_passes_inside_it() -> None:
    engine()
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        missing("root and debootstrap (`make test` runs as root and installs it)")
    tag = "potluck-gateway:test"
    build = subprocess.run(
        [str(DEPLOY / "gateway" / "build.sh"), tag], capture_output=True, text=True, timeout=1200
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    network, proxy = f"potluck-test-{uuid.uuid4().hex[:6]}", f"potluck-proxy-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        ["docker", "network", "create", "--internal", network], check=True, capture_output=True
    )
    try:
        subprocess.run(
            ["docker", "run", "-d", "--rm", "--name", proxy, "--network", network,
             "-u", "0:0", "--read-only", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges:true",
             "-v", "/var/run/docker.sock:/var/run/docker.sock",
             tag, "potluck", "docker-proxy", "--listen", "0.0.0.0:2375"],
            check=True, capture_output=True,
        )  # fmt: skip
        doctor = subprocess.run(
            ["docker", "run", "--rm", "--network", network, "--read-only", "--tmpfs", "/tmp",
             "-v", f"{network}:/data",  # a named volume, as compose gives it
             "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
             "-e", f"DOCKER_HOST=tcp://{proxy}:2375",
             tag, "sh", "-c", "potluck init >/dev/null && potluck doctor"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        report = doctor.stdout
        assert "0 failed" in report
        for line in ("✓ recipes: 5 bundled", "✓ local model", "✓ sandbox image", "✓ store"):
            assert line in report, report
        assert "limits in force" in report  # probed through the proxy container
        user = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", tag, "id", "-u"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert user.stdout.strip() == "10002"  # the gateway is not root in its container
    finally:
        subprocess.run(["docker", "rm", "-f", proxy], capture_output=True)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", network], capture_output=True)


def test_compose_runs_the_gateway_behind_the_proxy_and_it_stops_cleanly() -> None:
    """The README's home-server path: `up`, healthy, doctor green inside, the web room on
    loopback with its token, then SIGTERM through `stop` and a clean drain in the logs."""
    import json
    import time
    import urllib.request

    from .conftest import free_port

    engine()
    if shutil.which("docker-compose") is None:
        missing("docker-compose (`make test` installs it)")
    image = "potluck-gateway:test"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        missing("the gateway image (built by the test above)")
    port = free_port()
    project = f"potluck{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "POTLUCK_IMAGE": image, "POTLUCK_PORT": str(port)}
    compose = ["docker-compose", "-p", project, "-f", str(DEPLOY / "compose.yaml")]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    up = run("up", "-d")
    assert up.returncode == 0, up.stderr
    try:
        deadline, health = time.monotonic() + 90, ""
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
        token = run("exec", "-T", "gateway", "cat", "/data/web.token").stdout.strip()
        url = f"http://127.0.0.1:{port}/api/recipes?token={token}"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert {r["name"] for r in json.load(response)} >= {"debate", "solo"}
        stop = run("stop", "gateway", timeout=90)
        assert stop.returncode == 0, stop.stderr
        logs = run("logs", "--no-color", "gateway").stdout
        records = [
            json.loads(line.split("|", 1)[1])
            for line in logs.splitlines()
            if "|" in line and line.split("|", 1)[1].strip().startswith("{")
        ]
        assert any(r["message"] == "stopped cleanly" for r in records), logs[-3000:]
        assert token not in logs
    finally:
        run("down", "-v", timeout=120)
