"""Hardened Docker sandboxes, one warm container per room, so agents break nothing.

The engine side (containers.py, behind broker.py) alone talks to Docker; the gateway holds a
BrokerClient (client.py) that asks for operations by intent over a Unix socket.
"""

from .policy import DEFAULT_IMAGE, Ceilings, Limits, effective, workspace_path
from .results import EngineDown, ExecResult, NotMine, ProbeResult, SandboxError

__all__ = [
    "DEFAULT_IMAGE",
    "Ceilings",
    "EngineDown",
    "ExecResult",
    "Limits",
    "NotMine",
    "ProbeResult",
    "SandboxError",
    "effective",
    "workspace_path",
]


def __getattr__(name: str) -> object:
    # The engine side imports docker; the gateway's side must not need it.
    if name == "Sandboxes":
        from .containers import Sandboxes

        return Sandboxes
    if name == "BrokerClient":
        from .client import BrokerClient

        return BrokerClient
    raise AttributeError(name)
