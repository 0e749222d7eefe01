"""The default sandbox image: built offline from Debian's mirror, tagged by its definition.

The tag carries a hash of the files that define the image, so a changed package list makes
a new tag and an unchanged one is never rebuilt. `potluck-sandbox:default` points at the
current build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .policy import DEFAULT_IMAGE

DEFINITION = Path(__file__).with_name("image")
REPOSITORY = DEFAULT_IMAGE.split(":")[0]


def definition_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(DEFINITION.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def current_tag() -> str:
    return f"{REPOSITORY}:{definition_hash()}"


def image_present(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_image(client: Any, progress: Callable[[str], None] = print) -> str:
    """Build the image unless this definition's tag exists; point :default at it."""
    tag = current_tag()
    if image_present(client, tag):
        progress(f"image: {tag} is up to date")
    else:
        if os.geteuid() != 0:
            raise PermissionError("building the sandbox image runs debootstrap: run it as root")
        mirror = os.environ.get("POTLUCK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        script = DEFINITION / "build.sh"
        process = subprocess.Popen(
            ["bash", str(script), tag, mirror],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            progress(line.rstrip())
        if process.wait() != 0:
            raise RuntimeError(f"building {tag} failed (exit {process.returncode}); see above")
    client.images.get(tag).tag(REPOSITORY, "default")
    return tag
