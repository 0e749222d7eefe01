"""Room workspaces with a hard size cap on ext4 hosts.

Docker's `storage_opt` size quotas need xfs with pquota; on overlay2 over ext4 they are
refused. So each room's workspace is a sparse ext4 image file under the gateway's state
directory, attached to a loop device and exposed to Docker as a named volume of type ext4.
The file cannot grow past its size, so a sandbox filling its disk fills only its own image;
it survives container loss, dockerd restarts and gateway restarts, and a reset deletes it.
Where loop devices are unavailable (no root), a plain named volume is used and the probe
reports that the size cap is not in force.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .policy import LABEL_INSTALL, LABEL_ROOM, USER, labels, room_slug, volume_name
from .results import NotMine

log = logging.getLogger("potluck.sandbox")


@dataclass(frozen=True)
class Workspace:
    volume: str
    capped: bool  # a hard size cap is in force


def loop_devices_usable() -> bool:
    return (
        Path("/dev/loop-control").exists()
        and shutil.which("losetup") is not None
        and shutil.which("mkfs.ext4") is not None
        and subprocess.run(["losetup", "-f"], capture_output=True).returncode == 0
    )


def _attached(image: Path) -> str | None:
    found = subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=False
    ).stdout
    return found.split(":", 1)[0] if found.strip() else None


def _attach(image: Path) -> str:
    if device := _attached(image):
        return device
    return subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _loop_options(device: str) -> dict[str, str]:
    return {"type": "ext4", "device": device, "o": "nodev,nosuid"}


def _loop_shaped(options: dict[str, str]) -> bool:
    """Options we would have set, on whichever loop device: nothing else is ours to replace."""
    return (
        set(options) == {"type", "device", "o"}
        and options["type"] == "ext4"
        and options["o"] == "nodev,nosuid"
        and re.fullmatch(r"/dev/loop[0-9]+", options["device"]) is not None
    )


def _detach(image: Path) -> None:
    while device := _attached(image):
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


class Workspaces:
    """Creates, re-attaches and deletes the per-room volumes of one install.

    A volume is only used or removed when it carries this install's labels for that room and
    no driver options but the ones we set (an ext4 image on a loop device, or none): a volume
    someone else made under our name, say one binding a host folder, is refused, not mounted,
    and left where it is.
    """

    def __init__(self, client: Any, install: str, state_dir: Path, size_bytes: int) -> None:
        self.client = client
        self.install = install
        self.directory = state_dir / "workspaces"
        self.size_bytes = size_bytes
        self.loop = loop_devices_usable()

    def image_file(self, room: str) -> Path:
        return self.directory / f"{room_slug(room)}.ext4"

    def _ours(self, volume: Any, room: str) -> bool:
        found = volume.attrs.get("Labels") or {}
        options = volume.attrs.get("Options") or {}
        made_here = _loop_shaped(options) if self.loop else not options
        return (
            found.get(LABEL_INSTALL) == self.install
            and found.get(LABEL_ROOM) == room
            and volume.attrs.get("Driver", "local") == "local"
            and made_here
        )

    def _existing(self, room: str) -> Any:
        """The room's volume if there is one, refusing one that is not ours."""
        import docker.errors

        name = volume_name(self.install, room)
        try:
            volume = self.client.volumes.get(name)
        except docker.errors.NotFound:
            return None
        if not self._ours(volume, room):
            raise self._not_mine(name)
        return volume

    def ensure(self, room: str) -> Workspace:
        """The room's volume, ready to mount; created on first use, re-attached after a
        reboot (loop devices do not survive one; the image file does)."""
        name = volume_name(self.install, room)
        volume = self._existing(room)
        if not self.loop:
            if volume is None:
                self.client.volumes.create(name, labels=labels(self.install, room, "workspace"))
            return Workspace(name, capped=False)
        image = self.image_file(room)
        if not image.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = image.with_suffix(".partial")
            with partial.open("wb") as handle:
                handle.truncate(self.size_bytes)  # sparse: costs nothing until written
            uid, gid = USER.split(":")
            subprocess.run(
                [
                    "mkfs.ext4",
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-E",
                    f"root_owner={uid}:{gid}",
                    "-L",
                    "workspace",
                    str(partial),
                ],
                check=True,
                capture_output=True,
            )
            partial.rename(image)
        device = _attach(image)
        if volume is not None and volume.attrs.get("Options") != _loop_options(device):
            volume.remove()  # stale device number after a reboot; the data is in the file
            volume = None
        if volume is None:
            self.client.volumes.create(
                name,
                driver="local",
                driver_opts=_loop_options(device),
                labels=labels(self.install, room, "workspace"),
            )
        return Workspace(name, capped=True)

    @staticmethod
    def _not_mine(name: str) -> NotMine:
        return NotMine(
            f"a volume named {name} exists that this install did not make as it makes "
            f"workspaces; it is left alone (remove it with `docker volume rm {name}` if it is "
            "stale)"
        )

    def remove(self, room: str) -> None:
        """Delete the room's workspace: its volume (when ours) and its image file."""
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            volume = self.client.volumes.get(volume_name(self.install, room))
            if not self._ours(volume, room):
                return  # not ours: neither the volume nor any file of it is touched
            volume.remove(force=True)
        image = self.image_file(room)
        if self.loop:
            _detach(image)
        image.unlink(missing_ok=True)
