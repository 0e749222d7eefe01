"""How an exchange or a session ended: a closed set, so track records can count endings.

The set itself is the conductor's (runtime/conductor.py `Ending`: it decides how an exchange
ends); here is how receipts carry it. Signed into exchange-end events and close marks
(content `ending`) and self-labelled with NIP-32 tags (`["L", NAMESPACE]`,
`["l", ending, NAMESPACE]`), so relays can count them with `#L`/`#l` filters without reading
content.
"""

from __future__ import annotations

from runtime.conductor import Ending

NAMESPACE = "potluck.ending"  # the NIP-32 label namespace of these values
MAX_DETAIL = 500  # characters of free-text detail kept beside an ending

__all__ = ["MAX_DETAIL", "NAMESPACE", "Ending"]
