"""A Docker API proxy that lets the gateway do only what sandboxes need.

Whoever can talk to /var/run/docker.sock is root on the host. In a container deployment
the gateway does not get the socket; it talks to this proxy, which holds it and forwards
only the calls the sandbox manager makes, and for the ones that create things it reads the
request body: containers only from the sandbox image, with no network, a read-only root, no
capabilities, no-new-privileges, not privileged, no host paths, no host namespaces; execs
only as a non-root user; volumes only local ones, ext4 on a loop device at most. Everything
else (pulling images, building, host mounts, `--privileged`, the events stream, archives)
gets 403 with a message naming the call. The rules are a pure function; the server around
them splices bytes, so exec's hijacked streams work unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

log = logging.getLogger("potluck.docker_proxy")

ID = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
READ_ONLY = [
    r"/_ping",
    r"/version",
    r"/info",
    rf"/images/{ID}(:[A-Za-z0-9_.-]+)?/json",
    r"/containers/json",
    rf"/containers/{ID}/json",
    rf"/exec/{ID}/json",
    r"/volumes",
    rf"/volumes/{ID}",
]
ACTIONS = {
    "POST": [
        rf"/containers/{ID}/(start|stop|kill|wait)",
        rf"/exec/{ID}/start",
    ],
    "DELETE": [rf"/containers/{ID}", rf"/volumes/{ID}"],
}
CHECKED = {  # (method, path) -> the function that reads the body
    ("POST", r"/containers/create"): "container",
    ("POST", rf"/containers/{ID}/exec"): "exec",
    ("POST", r"/volumes/create"): "volume",
}
IMAGE_PREFIX = "potluck-sandbox"
MAX_BODY = 1 << 20


def _path(target: str) -> str:
    path = target.split("?", 1)[0]
    return re.sub(r"^/v\d+\.\d+", "", path)


def decide(method: str, target: str, body: bytes) -> str | None:
    """None to forward the call, or why it is refused. Pure."""
    path = _path(target)
    if method in ("GET", "HEAD") and any(re.fullmatch(p, path) for p in READ_ONLY):
        return None
    if any(re.fullmatch(p, path) for p in ACTIONS.get(method, [])):
        return None
    for (allowed_method, pattern), kind in CHECKED.items():
        if method == allowed_method and re.fullmatch(pattern, path):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return "the request body is not JSON"
            return {"container": _container, "exec": _exec, "volume": _volume}[kind](data)
    return f"{method} {path} is not a call Potluck's sandboxes make"


def _container(data: dict[str, Any]) -> str | None:
    host = data.get("HostConfig") or {}
    image = str(data.get("Image", ""))
    if not image.startswith(IMAGE_PREFIX):
        return f"image {image!r} is not a Potluck sandbox image"
    if host.get("Privileged"):
        return "privileged containers are refused"
    if host.get("NetworkMode") != "none":
        return "sandboxes must have no network (NetworkMode none)"
    if not host.get("ReadonlyRootfs"):
        return "sandboxes must have a read-only root"
    if "ALL" not in (host.get("CapDrop") or []) or host.get("CapAdd"):
        return "sandboxes must drop all capabilities and add none"
    if not any(str(o).startswith("no-new-privileges") for o in host.get("SecurityOpt") or []):
        return "sandboxes must run with no-new-privileges"
    for key in ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        if str(host.get(key) or "").startswith(("host", "container:")):
            return f"{key} {host.get(key)!r} shares the host's or another container's namespace"
    if host.get("Devices") or host.get("DeviceRequests") or host.get("VolumesFrom"):
        return "devices and other containers' volumes are refused"
    for bind in host.get("Binds") or []:
        source = str(bind).split(":", 1)[0]
        if source.startswith(("/", ".", "~")):
            return f"host path {source!r} cannot be mounted; named volumes only"
    for mount in host.get("Mounts") or []:
        if mount.get("Type") not in ("volume", "tmpfs"):
            return f"{mount.get('Type')} mounts are refused; named volumes and tmpfs only"
    if str(data.get("User", "")).split(":")[0] in ("", "0", "root"):
        return "sandboxes must not run as root"
    return None


def _exec(data: dict[str, Any]) -> str | None:
    if data.get("Privileged"):
        return "privileged execs are refused"
    if str(data.get("User", "")).split(":")[0] in ("", "0", "root"):
        return "execs must run as the sandbox's user, not root"
    return None


def _volume(data: dict[str, Any]) -> str | None:
    if data.get("Driver", "local") != "local":
        return f"volume driver {data.get('Driver')!r} is refused; local only"
    options = data.get("DriverOpts") or {}
    if not options:
        return None
    if options.get("type") != "ext4" or not re.fullmatch(
        r"/dev/loop\d+", str(options.get("device"))
    ):
        return "volume options may only name an ext4 image on a loop device"
    if set(options) - {"type", "device", "o"}:
        return "unexpected volume options"
    return None


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def _refuse(writer: asyncio.StreamWriter, status: str, message: str) -> None:
    body = json.dumps({"message": f"potluck docker proxy: {message}"}).encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, socket_path: str
) -> None:
    """One request per connection (the proxy asks Docker to close after answering)."""
    try:
        head = await _read_head(reader)
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        names = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            _refuse(writer, "411 Length Required", "chunked request bodies are refused")
            return
        length = int(names.get("content-length", "0") or 0)
        if length > MAX_BODY:
            _refuse(writer, "413 Payload Too Large", "request body too large")
            return
        body = await reader.readexactly(length) if length else b""
        reason = decide(method, target, body)
        if reason is not None:
            log.warning("refused %s %s: %s", method, _path(target), reason)
            _refuse(writer, "403 Forbidden", reason)
            return
        upgrade = names.get("upgrade", "").lower() == "tcp"
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() != "connection"]
        kept.append("Connection: Upgrade" if upgrade else "Connection: close")
        docker_reader, docker_writer = await asyncio.open_unix_connection(socket_path)
        docker_writer.write(
            f"{method} {target} {version}\r\n".encode("latin-1")
            + "\r\n".join(kept).encode("latin-1")
            + b"\r\n\r\n"
            + body
        )
        await docker_writer.drain()
        await asyncio.gather(_splice(reader, docker_writer), _splice(docker_reader, writer))
        docker_writer.close()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()


async def serve(host: str, port: int, socket_path: str) -> asyncio.AbstractServer:
    return await asyncio.start_server(
        lambda r, w: handle(r, w, socket_path), host, port, limit=MAX_BODY
    )


async def serve_unix(path: str, socket_path: str, mode: int = 0o660) -> asyncio.AbstractServer:
    """On a Unix socket: who may use it is then a file permission (e.g. the potluck group)."""
    import os

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.start_unix_server(
        lambda r, w: handle(r, w, socket_path), path, limit=MAX_BODY
    )
    os.chmod(path, mode)
    return server
