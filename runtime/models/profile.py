"""What the runtime knows about a model's abilities, so it asks each model what it can do.

A profile is per model, never per recipe: the sampler settings it answers best with, whether
it can use tools, how much context it can use and how long its turns should be. Models we
ship (local/...) carry a profile measured by bench/quality.py; every other model gets the
neutral one (the recipe's settings, litellm's word on function calling, the full window).
A recipe's explicit settings still win over a profile's: see `resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    """Sampler settings. None: not sent, so the provider's default applies."""

    temperature: float | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    seed: int | None = None  # a fixed seed: the same context gets the same answer

    def extra_body(self) -> dict[str, float | int]:
        """The llama.cpp-style settings that OpenAI's API has no name for."""
        found: dict[str, float | int] = {}
        if self.seed is not None:
            found["seed"] = self.seed
        if self.min_p is not None:
            found["min_p"] = self.min_p
        if self.repeat_penalty is not None:
            found["repeat_penalty"] = self.repeat_penalty
        if self.repeat_last_n is not None:
            found["repeat_last_n"] = self.repeat_last_n
        return found


@dataclass(frozen=True)
class Profile:
    """tools: None asks litellm; False means the model gets no tools and no tool
    instructions. tiny: the model gets a short persona, a trimmed transcript and a reminder
    of who it is (runtime/context.py). context_tokens / reply_tokens: caps, None for none."""

    sampling: Sampling = field(default_factory=Sampling)
    tools: bool | None = None
    tiny: bool = False
    context_tokens: int | None = None
    reply_tokens: int | None = None
    group_reply_tokens: int | None = None  # a turn among several agents: shorter still


NEUTRAL = Profile()


def resolve(profile: Profile, recipe: Sampling, recipe_default: Sampling) -> Sampling:
    """The settings a call uses: each of the recipe's, unless it is the schema's default
    (a default is "not said": the canonical form leaves it out), in which case the model's
    profile decides, and failing that the default itself."""

    def pick(name: str) -> object:
        said = getattr(recipe, name)
        if said is not None and said != getattr(recipe_default, name):
            return said
        measured = getattr(profile.sampling, name)
        return measured if measured is not None else said

    return Sampling(**{name: pick(name) for name in Sampling.__dataclass_fields__})  # type: ignore[arg-type]
