"""Where the gateway decides what a message is and whether the agents answer it. Pure: no
store, no platform, no clock, so every rule here is a plain function of its inputs.

Two decisions, at two moments:
- `admit`, as a message arrives: is its sender or room allowed here (closed by default), is
  it a command for this bot (parsed once, with the bot's own names, so `/stop@otherbot` is
  not ours), `/stop` (which skips the room's queue), a scheduled run, or talk — and did it
  address the bot (a mention, or a reply to one of its messages)? A reaction comes in by
  the same allow-list (`admit_reaction`), and is never a command.
- `answers`, when the room's worker reaches it: given the recipe the room runs, do the
  agents answer this talk, or only hear it?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adapters.base import Capabilities, Incoming, Reaction
from runtime.mentions import addressed as addressed_agents
from runtime.recipes import Recipe

from .commands import Command, CommandError, parse
from .config import Config

SCHEDULE_EVENT = "schedule:"  # event ids of scheduled runs: schedule:ID:RECIPE:TIME
NOTICE_EVENT = "schedule:notice:"  # the gateway telling a room something (a missed run, a
# newer version of its recipe): said, not run; keyed so a room hears each one once
SCHEDULER = "potluck"  # the sender id of scheduled runs, which no platform user can have

Kind = Literal["ignore", "stop", "command", "scheduled", "talk", "reaction"]


@dataclass(frozen=True)
class Admission:
    kind: Kind
    addressed: bool = False  # mentioned the bot or replied to it
    command: Command | CommandError | None = None
    why: str = ""  # for `ignore`: the reason, for the log


def allowed(config: Config, capabilities: Capabilities, incoming: Incoming | Reaction) -> bool:
    """Closed by default: the room (or the room a thread belongs to) or the person must be
    listed, or `*` given. The local rooms (web, terminal) belong to the machine's owner."""
    if capabilities.local_owner:
        return True
    rooms = config.allowed_rooms
    room_keys = {incoming.key, f"{incoming.platform}:*", "*"}
    if incoming.parent:
        room_keys.add(f"{incoming.platform}:{incoming.parent}")
    return bool(room_keys.intersection(rooms)) or may_invite(
        config, incoming.platform, incoming.sender
    )


def may_invite(config: Config, platform: str, user: str) -> bool:
    """Whether this person may bring the bot into a room (and talk to it anywhere)."""
    people = {*config.allowed_users, *config.admins}
    return "*" in people or f"{platform}:{user}" in people


def listed_admin(config: Config, incoming: Incoming) -> bool:
    """Admins by the install's config, whatever the platform says."""
    return f"{incoming.platform}:{incoming.sender}" in config.admins


def is_scheduled(incoming: Incoming) -> bool:
    return incoming.sender == SCHEDULER and incoming.event_id.startswith(SCHEDULE_EVENT)


def admit(config: Config, capabilities: Capabilities, incoming: Incoming) -> Admission:
    """What this message is, decided once as it arrives."""
    if is_scheduled(incoming):
        return Admission("scheduled", addressed=True)
    if not allowed(config, capabilities, incoming):
        return Admission("ignore", why="not in the allowed rooms or users")
    return classify(capabilities, incoming)


def admit_reaction(config: Config, capabilities: Capabilities, reaction: Reaction) -> Admission:
    """A person's reaction: let in by the same allow-list as their messages."""
    if not allowed(config, capabilities, reaction):
        return Admission("ignore", why="not in the allowed rooms or users")
    return Admission("reaction")


def classify(capabilities: Capabilities, incoming: Incoming) -> Admission:
    """Command, /stop, scheduled run or talk, for a message already allowed in (also for
    one stored before a crash, whose thread is no longer known)."""
    if is_scheduled(incoming):
        return Admission("scheduled", addressed=True)
    addressed = incoming.mentions_bot or incoming.reply_to_bot
    command = parse(incoming.text, capabilities.bot_names)
    if command is None:  # talk (or another bot's command, which is talk to us)
        return Admission("talk", addressed=addressed)
    if isinstance(command, Command) and command.name == "stop":
        return Admission("stop", addressed=True, command=command)
    return Admission("command", addressed=True, command=command)


def answers(recipe: Recipe, incoming: Incoming, addressed: bool) -> bool:
    """Whether the agents answer this talk (True) or only hear it as context (False)."""
    if recipe.trigger == "every_message":
        return True
    if recipe.trigger == "command":
        return False  # only /run starts them
    names = [agent.name for agent in recipe.agents]
    return addressed or bool(addressed_agents(incoming.text, names))
