"""How an exchange or a session ended: a closed set, so track records can count endings.

Signed into exchange-end events and close marks (content `ending`) and self-labelled with
NIP-32 tags (`["L", NAMESPACE]`, `["l", ending, NAMESPACE]`), so relays can count them with
`#L`/`#l` filters without reading content.
"""

from __future__ import annotations

from enum import StrEnum

NAMESPACE = "potluck.ending"  # the NIP-32 label namespace of these values


class Ending(StrEnum):
    COMPLETED = "completed"  # the recipe's own stop condition: the protocol ran its course
    LIMIT_TURNS = "limit_turns"  # the recipe's max_turns was reached
    LIMIT_ROUNDS = "limit_rounds"  # the recipe's max_rounds was reached
    LIMIT_BUDGET = "limit_budget"  # a token or money budget was spent
    STOPPED = "stopped"  # a person stopped it (/stop, a recipe change, an admin)
    CUT = "cut"  # cut off by a crash or a shutdown
    ERROR = "error"  # the run failed

    @classmethod
    def parse(cls, value: object) -> Ending:
        """An Ending from its value, or ValueError naming the allowed ones."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(e.value for e in cls)
            raise ValueError(f"{value!r} is not an ending; endings are: {allowed}") from None


MAX_DETAIL = 500  # characters of free-text detail kept beside an ending
