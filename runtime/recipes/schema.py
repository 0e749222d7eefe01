"""The recipe schema: the one authority on what a recipe file may say.

Every model forbids unknown fields, so a typo is an error rather than a silently ignored
setting. Text is normalised on the way in (NFC, LF line ends, no trailing blanks) so that the
same recipe written on two machines has the same canonical form and therefore the same id.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
AGENT_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
VERSION_ID = r"^[0-9a-f]{64}$"
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
MEMORY = r"^[1-9][0-9]{0,5}[kmg]$"

PROTOCOLS = ("round_robin", "moderated", "pipeline", "parallel", "mention")
MODERATOR_RULES = ("least-recent", "mentioned-else-least-recent")
TOOLS = ("shell", "files")

# Shapes of provider credentials. A recipe is shared in public; a key pasted into a persona
# would leak with it, so the loader refuses these outright.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an OpenAI/Anthropic-style API key", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("a GitHub token", re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an AWS access key id", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a Telegram bot token", re.compile(r"\b\d{8,10}:[A-Za-z0-9_-]{35}\b")),
    ("a Nostr secret key", re.compile(r"\bnsec1[02-9ac-hj-np-z]{58}\b")),
    ("a private key block", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)

MAX_TEXT = 20_000


_LINE_BREAKS = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})


def normalise_text(value: str) -> str:
    """One spelling per text: NFC, LF line ends, no trailing blanks, no trailing newlines."""
    value = unicodedata.normalize("NFC", value).replace("\r\n", "\n")
    # YAML reads CR, NEL, LS and PS as line breaks: make them LF so a round trip is exact.
    value = value.translate(_LINE_BREAKS)
    return "\n".join(line.rstrip() for line in value.split("\n")).strip("\n")


def _refuse_secrets(value: str) -> str:
    for what, pattern in SECRET_PATTERNS:
        if pattern.search(value):
            raise ValueError(
                f"this text contains what looks like {what}; recipes are shared, so keys belong "
                "in the gateway's config or environment, never in a recipe"
            )
    return value


Text = Annotated[str, AfterValidator(normalise_text), AfterValidator(_refuse_secrets)]
ShortText = Annotated[Text, Field(max_length=200)]
LongText = Annotated[Text, Field(max_length=MAX_TEXT)]
ModelId = Annotated[str, Field(pattern=MODEL_ID)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Agent(Strict):
    """One participant: who it is, which model speaks for it, what it may do."""

    name: Annotated[str, Field(pattern=AGENT_NAME)]
    model: ModelId = "local/smollm2-135m"
    fallbacks: Annotated[list[ModelId], Field(max_length=8)] = []
    persona: LongText
    greeting: LongText | None = None
    api_base: Annotated[str, Field(pattern=r"^https?://[^@/?#\s]+(?:/[^?#\s]*)?$")] | None = None
    # Sampling. A setting left at its default is the answering model's to choose (its
    # measured profile, runtime/models/profile.py); one written here overrides it.
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repeat_penalty: Annotated[float, Field(ge=0.5, le=2.0)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 512
    tools: Annotated[list[Literal["shell", "files"]], Field(max_length=len(TOOLS))] = []
    color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = None


class Protocol(Strict):
    """How agents take turns. The conductor enforces these numbers, not the prompts."""

    kind: Literal["round_robin", "moderated", "pipeline", "parallel", "mention"] = "round_robin"
    moderator: str | None = None
    synthesizer: str | None = None
    max_rounds: Annotated[int, Field(ge=1, le=50)] = 3
    max_turns: Annotated[int, Field(ge=1, le=200)] = 12
    stop_when: Annotated[list[ShortText], Field(max_length=16)] = []
    pass_phrase: ShortText = "[pass]"
    loop_guard: bool = True


class Limits(Strict):
    max_cost_usd: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.5
    max_tokens: Annotated[int, Field(ge=100, le=10_000_000)] = 40_000


SANDBOX_IMAGE = "potluck-sandbox:default"


def _install_image_only(value: str) -> str:
    if value != SANDBOX_IMAGE:
        raise ValueError(
            f"a recipe cannot choose the sandbox image ({value!r}): the install runs every "
            f"sandbox from its own image ([sandbox] image in the gateway's config); remove "
            f"`image:` from the recipe's sandbox section"
        )
    return value


class SandboxPolicy(Strict):
    """What a recipe may ask of its sandbox: a request the install caps at its ceilings.
    Hardening itself is not negotiable here."""

    # Kept so recipes and stored versions that spell out the default still validate; any
    # other value is refused, since the image is the install's choice. The numbers below
    # are capped by runtime/sandbox/policy.py `effective`.
    image: Annotated[
        str,
        AfterValidator(_install_image_only),
        Field(
            description="The install's choice, never the recipe's: only the default is accepted.",
            json_schema_extra={"const": SANDBOX_IMAGE},
        ),
    ] = SANDBOX_IMAGE
    network: Literal["none"] = "none"
    memory: Annotated[str, Field(pattern=MEMORY)] = "512m"
    cpus: Annotated[float, Field(ge=0.1, le=8.0)] = 1.0
    pids: Annotated[int, Field(ge=16, le=4096)] = 128
    exec_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 30


class Recipe(Strict):
    """A portable, versioned, forkable AI configuration for a room."""

    potluck: Literal[1]
    name: Annotated[str, Field(pattern=SLUG)]
    title: ShortText
    description: LongText = ""
    tags: Annotated[list[Annotated[str, Field(pattern=SLUG)]], Field(max_length=16)] = []
    license: ShortText = "CC-BY-4.0"
    author: ShortText | None = None
    forked_from: Annotated[str, Field(pattern=VERSION_ID)] | None = None
    agents: Annotated[list[Agent], Field(min_length=1, max_length=12)]
    protocol: Protocol = Protocol()
    trigger: Literal["mention", "every_message", "command"] = "mention"
    limits: Limits = Limits()
    sandbox: SandboxPolicy = SandboxPolicy()

    @model_validator(mode="after")
    def _agents_consistent(self) -> Recipe:
        names = [agent.name for agent in self.agents]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"agents: two are named {name!r}; give each agent its own name")
            seen.add(name)
        protocol = self.protocol
        if protocol.kind == "moderated" and protocol.moderator is None:
            raise ValueError(
                "protocol.moderator: 'moderated' needs a moderator: an agent's name or one of "
                + ", ".join(MODERATOR_RULES)
            )
        if protocol.moderator is not None and protocol.moderator not in (*names, *MODERATOR_RULES):
            raise ValueError(
                f"protocol.moderator: {protocol.moderator!r} is neither an agent "
                f"({', '.join(names)}) nor a rule ({', '.join(MODERATOR_RULES)})"
            )
        if protocol.synthesizer is not None and protocol.synthesizer not in names:
            raise ValueError(
                f"protocol.synthesizer: {protocol.synthesizer!r} is not an agent of this recipe "
                f"({', '.join(names)})"
            )
        return self

    def agent(self, name: str) -> Agent:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)


def json_schema() -> dict[str, object]:
    """The schema as JSON Schema, for editors (yaml-language-server) and other tools."""
    schema = Recipe.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
