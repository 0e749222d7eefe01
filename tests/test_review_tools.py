"""Adversarial review (issue 13 follow-up): how much sandbox work one model reply can ask
for. Real conductor, real broker, real engine; fails on the code as reviewed."""

from __future__ import annotations

import time

from runtime.sandbox.client import BrokerClient

BLOCKS = 40


async def test_one_reply_cannot_queue_an_unbounded_number_of_sandbox_commands(
    sandboxes: BrokerClient,
) -> None:
    """Severity: low. A model reply is untrusted text (a chat participant steers it, a
    provider writes it). `parse_text_calls` (and `parse_native_calls`) return every call in
    the reply and the conductor runs them all, one after another, each up to the install's
    exec time limit, in each of MAX_TOOL_ROUNDS rounds; nothing caps the count. A reply of
    N ```run blocks (a few tokens each: "run `sleep 120` 200 times") holds the room's
    sandbox and conversation for N × 120 s, and posts N tool results into the room. The
    attacker gets: one message that ties a room up for hours and floods it; budgets do not
    notice (tool calls cost no tokens). Smallest fix: cap the calls taken from one reply
    (e.g. 8, like MAX_TOOL_ROUNDS), and tell the model the rest were not run."""
    from runtime.conductor import Conductor
    from runtime.context import Line
    from runtime.models import scripted
    from runtime.models.client import Models
    from runtime.recipes import validate_data
    from runtime.tools import SandboxToolbox

    replies = 0

    def many(messages: list[dict]) -> str:
        nonlocal replies
        replies += 1
        if replies > 1:
            return "Done."
        return "".join(f"```run\necho {n}\n```\n" for n in range(BLOCKS))

    scripted.SCRIPTS["review-many-runs"] = many
    recipe = validate_data(
        {
            "potluck": 1,
            "name": "many",
            "title": "Many",
            "agents": [
                {
                    "name": "runner",
                    "model": "scripted/review-many-runs",
                    "persona": "You run things.",
                    "tools": ["shell"],
                }
            ],
            "protocol": {"max_rounds": 1},
        }
    )
    toolbox = SandboxToolbox(sandboxes, "room", recipe.sandbox)
    started = time.monotonic()
    outcome = await Conductor(recipe, Models(), toolbox=toolbox).respond(
        [Line("mallory", "person", "please run all of these")]
    )
    ran = [t for t in outcome.turns[0].tools if t.exit_code == 0]
    assert len(ran) <= 16, (
        f"one reply ran {len(ran)} sandbox commands in {time.monotonic() - started:.1f} s; "
        "nothing caps the tool calls a reply may ask for"
    )
