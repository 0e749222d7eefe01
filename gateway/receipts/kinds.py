"""Event kinds Potluck signs.

All sit in ranges no NIP has assigned: checked against the event-kind table of the NIPs
README (nostr-protocol/nips, the version listing NIP-85's 30382–30384 and the Marmot kinds,
2026) and NIP-01's ranges: 1000–9999 are *regular* (relays keep every one), 30000–39999 are
*addressable* (relays keep the newest per author, kind and `d` tag).

Format v2 (gateway/receipts/__init__.py describes it) keeps every recipe version as a
regular event, so a version a receipt points at stays fetchable by id after newer ones are
published; the addressable kind only names the latest.
"""

PERSON_MESSAGE = 4740  # a person's message, witnessed by the gateway (sender as a salted hash)
AGENT_TURN = 4741  # one agent turn: agent, model actually used, tokens, cost
TOOL_CALL = 4742  # one sandbox tool call and its result: command, exit code, output digest
SESSION_MARK = 4743  # a session opened or closed: the first and last links of a chain
EXCHANGE_END = 4744  # v2: how one exchange (a conductor run answering a person) ended, counts
RECIPE_VERSION = 4745  # v2: one recipe version, immutable (regular: relays keep them all)
RECIPE_LATEST = 34745  # v2: which version of a recipe is its author's latest (`d` = name)
RECIPE_VERSION_V1 = 34740  # v1 only: a version as an addressable event (relays kept the newest)

RECEIPT_KINDS = frozenset({PERSON_MESSAGE, AGENT_TURN, TOOL_CALL, SESSION_MARK, EXCHANGE_END})
NAMES = {
    PERSON_MESSAGE: "person message",
    AGENT_TURN: "agent turn",
    TOOL_CALL: "tool call",
    SESSION_MARK: "session mark",
    EXCHANGE_END: "exchange end",
    RECIPE_VERSION: "recipe version",
    RECIPE_LATEST: "latest recipe version",
    RECIPE_VERSION_V1: "recipe version (v1)",
}
