"""Hardened Docker sandboxes, one warm container per room, so agents break nothing."""

from .manager import ExecResult, ProbeResult, SandboxError, Sandboxes
from .policy import DEFAULT_IMAGE, workspace_path

__all__ = [
    "DEFAULT_IMAGE",
    "ExecResult",
    "ProbeResult",
    "SandboxError",
    "Sandboxes",
    "workspace_path",
]
