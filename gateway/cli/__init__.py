"""The `potluck` command line: a thin shell over the library, the store and the receipts.

`app` holds the group and its context; importing the family modules registers their
commands on it.
"""

from . import (  # noqa: F401  (each registers its commands)
    conversation,
    operations,
    receipts,
    recipes,
    records,
    sandbox,
    sharing,
)
from .app import cli, main

__all__ = ["cli", "main"]
