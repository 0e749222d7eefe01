"""Chat commands: parsing and usage help. Pure: no store, no platform.

Any mistake gets the usage of the command meant, so a person learns the right form from
the error itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    usage: str
    summary: str
    admin: bool = False  # changes the room: only room admins may use it
    min_args: int = 0
    max_args: int | None = 0


SPECS: dict[str, Spec] = {
    "help": Spec("/help", "the commands you may use here"),
    "recipe list": Spec("/recipe list", "bundled and local recipes"),
    "recipe show": Spec("/recipe show [NAME]", "a recipe, its version and lineage", max_args=1),
    "recipe use": Spec(
        "/recipe use NAME[@VERSION]|LINK",
        "attach a recipe to this room (a nevent/naddr link: fetched and shown first)",
        True,
        0,
        1,
    ),
    "recipe fork": Spec(
        "/recipe fork NAME|LINK NEW-NAME", "fork a recipe and attach the fork", True, 2, 2
    ),
    "recipe set": Spec(
        "/recipe set PATH VALUE",
        "edit a field of this room's recipe, e.g. agents.critic.temperature 0.2",
        True,
        2,
        None,
    ),
    "recipe diff": Spec(
        "/recipe diff A B", "what changed between two versions", min_args=2, max_args=2
    ),
    "recipe history": Spec(
        "/recipe history [NAME]", "the lineage of a recipe, across installs", max_args=1
    ),
    "recipe publish": Spec(
        "/recipe publish [NAME[@VERSION]]",
        "sign this room's recipe (or NAME) and send it to the relays",
        True,
        0,
        1,
    ),
    "recipe share": Spec(
        "/recipe share [NAME[@VERSION]]", "the link another install fetches it by", max_args=1
    ),
    "recipe record": Spec(
        "/recipe record [NAME] [OTHER]",
        "how a recipe has done, from its receipts; with two, side by side",
        max_args=2,
    ),
    "recipe export": Spec("/recipe export [NAME]", "the recipe as a file", max_args=1),
    "recipe import": Spec(
        "/recipe import", "send with a recipe file (.yaml, or a character card .json/.png)", True
    ),
    "run": Spec("/run TEXT", "start the agents on TEXT", min_args=1, max_args=None),
    "stop": Spec("/stop", "stop the agents now"),
    "budget": Spec("/budget", "what this session has spent, by agent"),
    "receipts": Spec("/receipts", "this session's signed receipts and whether they verify"),
    "sandbox reset": Spec(
        "/sandbox reset", "a fresh sandbox and empty workspace (asks first)", True, 0, 1
    ),
    "schedule add": Spec(
        "/schedule add WHEN RECIPE [TEXT]",
        'run RECIPE here on a timetable, e.g. /schedule add weekdays 9:00 standup "plans?"',
        True,
        2,
        None,
    ),
    "schedule list": Spec("/schedule list", "this room's schedules and their next runs"),
    "schedule cancel": Spec(
        "/schedule cancel ID", "cancel one of this room's schedules", True, 1, 1
    ),
}
GROUPS = {"recipe", "sandbox", "schedule"}
PREFIXES = ("/", "!potluck ")


@dataclass(frozen=True)
class Command:
    name: str  # e.g. "recipe use"
    args: tuple[str, ...]
    raw_args: str  # the text after the command, unsplit (for /run and /recipe set)

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]


@dataclass(frozen=True)
class CommandError:
    message: str


def is_command(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith("/") or stripped.lower().startswith("!potluck")


def _usage_of(group: str) -> str:
    return "\n".join(
        f"  {spec.usage} — {spec.summary}" for name, spec in SPECS.items() if name.startswith(group)
    )


def parse(text: str, bot_names: tuple[str, ...] = ()) -> Command | CommandError | None:
    """A command, a usage error, or None when the text is not a command at all."""
    stripped = text.strip()
    if stripped.lower().startswith("!potluck"):
        body = stripped[len("!potluck") :].strip() or "help"
    elif stripped.startswith("/"):
        body = stripped[1:]
    else:
        return None
    head, _, rest = body.partition(" ")
    word = head.split("@", 1)[0].lower()  # Telegram's /cmd@botname
    if "@" in head and bot_names and head.split("@", 1)[1].lower() not in bot_names:
        return None  # addressed to another bot
    if word in GROUPS:
        sub, _, rest = rest.strip().partition(" ")
        name = f"{word} {sub.lower()}".strip()
        if name not in SPECS:
            which = f"'{sub}' is not a {word} command" if sub else f"/{word} needs a subcommand"
            return CommandError(f"{which}. Use:\n{_usage_of(word + ' ')}")
    else:
        name = word
        if name not in SPECS:
            return CommandError(f"unknown command /{word}. Try /help")
    spec = SPECS[name]
    try:
        args = tuple(shlex.split(rest))
    except ValueError as exc:
        return CommandError(f"{exc} (check your quotes). Usage: {spec.usage}")
    if len(args) < spec.min_args or (spec.max_args is not None and len(args) > spec.max_args):
        return CommandError(f"usage: {spec.usage} — {spec.summary}")
    return Command(name, args, rest.strip())


def help_text(is_admin: bool) -> str:
    lines = [
        f"{spec.usage} — {spec.summary}" for spec in SPECS.values() if is_admin or not spec.admin
    ]
    footer = "" if is_admin else "\n(only room admins can change the recipe or reset the sandbox)"
    return "Commands (also as !potluck …):\n" + "\n".join(lines) + footer


def platform_commands() -> list[tuple[str, str, bool]]:
    """Top-level commands for a platform's command menu: (name, summary, admin only)."""
    menu: dict[str, tuple[str, bool]] = {}
    for name, spec in SPECS.items():
        top = name.split()[0]
        summary = {
            "recipe": "recipes: list, show, use, fork, set, diff, history, record, publish, share",
            "schedule": "run a recipe here on a timetable: add, list, cancel",
        }.get(top, spec.summary)
        admin = menu[top][1] and spec.admin if top in menu else spec.admin
        menu[top] = (summary, admin)
    return [(name, summary, admin) for name, (summary, admin) in menu.items()]
