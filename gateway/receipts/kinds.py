"""Event kinds Potluck signs. All sit in ranges no NIP has assigned (checked against the
NIPs README event-kind table, 2026-11); regular kinds are stored by relays, the
addressable one (30000–39999) is replaced per author and `d` tag."""

PERSON_MESSAGE = 4740  # a person's message, witnessed by the gateway (sender as a salted hash)
AGENT_TURN = 4741  # one agent turn: agent, model actually used, tokens, cost
TOOL_CALL = 4742  # one sandbox tool call and its result: command, exit code, output digest
SESSION_MARK = 4743  # a session opened or closed: the first and last links of a chain
RECIPE_VERSION = 34740  # a recipe version, addressable by recipe name (`d` tag)

RECEIPT_KINDS = frozenset({PERSON_MESSAGE, AGENT_TURN, TOOL_CALL, SESSION_MARK})
NAMES = {
    PERSON_MESSAGE: "person message",
    AGENT_TURN: "agent turn",
    TOOL_CALL: "tool call",
    SESSION_MARK: "session mark",
    RECIPE_VERSION: "recipe version",
}
