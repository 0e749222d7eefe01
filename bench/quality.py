"""Answer quality of the embedded model: the runtime through each bundled recipe vs the same
model called directly with the best settings found, in the same run.

A fixed set of checkable tasks in the bundled recipes' domains: code that must pass hidden
tests (run in the real sandbox, through the broker), arithmetic and facts with exact answers,
format instructions, persona adherence, multi-agent turns that stay on topic and in
character, code review. Each task is asked (a) through the gateway's exchange path (store,
conductor, receipts) on the recipe it belongs to, every agent turn checked, and (b) of the
raw llama.cpp server with each of that recipe's agents' personas as the system prompt and
the best sampler settings found (RAW_BEST; `--sweep` compares candidates). Also printed:
the share of turns that are well-formed (code blocks that parse, no runaway non-words).

Usage: .venv/bin/python bench/quality.py [--repeat N] [--sweep] [--only RECIPE,...]
Runs in a few minutes on 2 cores; the sweep takes longer.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

MODEL = "local/smollm2-135m"
# The best direct settings found by --sweep (see the README's "Models" section for its run).
RAW_BEST: dict[str, Any] = {
    "temperature": 0.2,
    "top_p": 0.9,
    "min_p": 0.1,
    "repeat_penalty": 1.0,
    "seed": 42,  # the same seed as the runtime's profile: each task is a paired comparison
}
SWEEP: dict[str, dict[str, Any]] = {
    "t0.2 top_p0.9 min_p0.1": RAW_BEST,
    "greedy (t0)": {"temperature": 0.0, "repeat_penalty": 1.0},
    "t0.1 min_p0.1": {"temperature": 0.1, "min_p": 0.1, "repeat_penalty": 1.0},
    "t0.4 min_p0.1": {"temperature": 0.4, "min_p": 0.1, "repeat_penalty": 1.0},
    "t0.2 rp1.1/64": {"temperature": 0.2, "repeat_penalty": 1.1, "repeat_last_n": 64},
    "t0.7 (litellm default)": {"temperature": 0.7, "repeat_penalty": 1.0},
    "old: t0.5 rp1.2/256": {"temperature": 0.5, "repeat_penalty": 1.2, "repeat_last_n": 256},
}
RAW_MAX_TOKENS = 320
AT_ONCE = 6  # calls in flight, as many as the model has slots

# -- tasks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    id: str
    domain: str
    prompt: str
    fn: str = ""  # code: the function the hidden tests call
    tests: str = ""  # code: asserts on `f`
    answer: tuple[str, ...] = ()  # facts: any of these, as a word or number
    keywords: tuple[str, ...] = ()  # on-topic words (debate, board, review)
    check: Callable[[str], bool] | None = None  # format: the rule


def _code(id_: str, prompt: str, fn: str, tests: str) -> Task:
    return Task(id_, "code", prompt, fn=fn, tests=tests)


def _fact(id_: str, prompt: str, *answer: str) -> Task:
    return Task(id_, "facts", prompt, answer=answer)


def _bullets(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(r"^\s*([-*•]|\d+[.)])\s+\S", ln)]


def _json_of(text: str) -> Any:
    found = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.DOTALL)
    body = found.group(1) if found else text
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    with contextlib.suppress(ValueError):
        value, _ = json.JSONDecoder().raw_decode(body[start:])
        return value
    return None


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", s)])


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


TASKS: list[Task] = [
    _code(
        "fibonacci",
        "Write a Python function that returns the n-th Fibonacci number.",
        "fibonacci",
        "seq = [f(i) for i in range(1, 11)]\n"
        "assert seq in ([1, 1, 2, 3, 5, 8, 13, 21, 34, 55], [0, 1, 1, 2, 3, 5, 8, 13, 21, 34])",
    ),
    _code(
        "add",
        "Write a Python function add(a, b) that returns the sum of a and b.",
        "add",
        "assert f(2, 3) == 5 and f(-1, 1) == 0",
    ),
    _code(
        "square",
        "Write a Python function square(x) that returns x squared.",
        "square",
        "assert f(3) == 9 and f(-4) == 16",
    ),
    _code(
        "is_even",
        "Write a Python function is_even(n) that returns True when n is even.",
        "is_even",
        "assert f(4) is True or f(4) == True\nassert not f(7)",
    ),
    _code(
        "reverse",
        "Write a Python function reverse_string(s) that returns the string reversed.",
        "reverse_string",
        "assert f('abc') == 'cba' and f('') == ''",
    ),
    _code(
        "maximum",
        "Write a Python function find_max(numbers) that returns the largest number in a list.",
        "find_max",
        "assert f([3, 9, 2]) == 9 and f([-5, -2]) == -2",
    ),
    _code(
        "factorial",
        "Write a Python function factorial(n) that returns n factorial.",
        "factorial",
        "assert f(5) == 120 and f(0) == 1",
    ),
    _code(
        "vowels",
        "Write a Python function count_vowels(s) that counts the vowels in a string.",
        "count_vowels",
        "assert f('hello') == 2 and f('sky') == 0",
    ),
    _code(
        "celsius",
        "Write a Python function celsius_to_fahrenheit(c) that converts Celsius to Fahrenheit.",
        "celsius_to_fahrenheit",
        "assert abs(f(100) - 212) < 1e-6 and abs(f(0) - 32) < 1e-6",
    ),
    _code(
        "palindrome",
        "Write a Python function is_palindrome(s) that returns True if s reads the same backwards.",
        "is_palindrome",
        "assert f('racecar') and not f('potluck')",
    ),
    _code(
        "sum_list",
        "Write a Python function sum_list(numbers) that returns the sum of a list of numbers.",
        "sum_list",
        "assert f([1, 2, 3]) == 6 and f([]) == 0",
    ),
    _code(
        "greet",
        "Write a Python function greet(name) that returns 'Hello, ' followed by the name.",
        "greet",
        "assert f('Ada').startswith('Hello, Ada')",
    ),
    _fact("add-small", "What is 7 + 5?", "12"),
    _fact("subtract", "What is 9 minus 4?", "5"),
    _fact("multiply", "What is 6 times 3?", "18"),
    _fact("divide", "What is 10 divided by 2?", "5"),
    _fact("capital", "What is the capital of France?", "paris"),
    _fact("week", "How many days are in a week?", "7", "seven"),
    _fact("sky", "What colour is the sky on a clear day?", "blue"),
    _fact("bigger", "Which number is bigger, 12 or 21?", "21"),
    _fact("opposite", "What is the opposite of hot?", "cold"),
    _fact("spider", "How many legs does a spider have?", "8", "eight"),
    _fact("freezing", "At how many degrees Celsius does water freeze?", "0", "zero"),
    Task(
        "three-bullets",
        "format",
        "Give exactly three bullet points about apples.",
        check=lambda t: len(_bullets(t)) == 3,
    ),
    Task(
        "json-ab",
        "format",
        'Reply with a JSON object with keys "a" and "b", where a is 1 and b is 2.',
        check=lambda t: isinstance(v := _json_of(t), dict) and set(v) == {"a", "b"},
    ),
    Task(
        "one-word",
        "format",
        "What is the largest planet in our solar system? Answer in one word.",
        check=lambda t: len(_words(t)) == 1 and "jupiter" in t.lower(),
    ),
    Task(
        "yes",
        "format",
        "Reply with only the word yes.",
        check=lambda t: t.strip().strip(".!\"'").lower() == "yes",
    ),
    Task(
        "numbered",
        "format",
        "Give a numbered list of three fruits.",
        check=lambda t: [re.sub(r"\D.*", "", b.strip()) for b in _bullets(t)] == ["1", "2", "3"],
    ),
    Task(
        "json-list",
        "format",
        "Reply with a JSON list of three numbers.",
        check=lambda t: (
            isinstance(v := _json_of(t), list)
            and len(v) == 3
            and all(isinstance(x, int | float) for x in v)
        ),
    ),
    Task(
        "short",
        "format",
        "In fewer than ten words: why do birds fly?",
        check=lambda t: 0 < len(_words(t)) < 10,
    ),
    Task(
        "two-sentences",
        "format",
        "Write exactly two sentences about dogs.",
        check=lambda t: _sentences(t) == 2 and "dog" in t.lower(),
    ),
    Task(
        "commas",
        "format",
        "Name three colours on one line, separated by commas.",
        check=lambda t: len(t.strip().splitlines()) == 1 and len(t.split(",")) == 3,
    ),
    Task(
        "capitals",
        "format",
        "Write one short sentence in capital letters only.",
        check=lambda t: bool(re.search(r"[A-Z]{2}", t)) and not re.search(r"[a-z]", t),
    ),
    *(
        Task(f"persona-{n}", "persona", text)
        for n, text in enumerate(
            (
                "Hi Sam! How was your weekend?",
                "Would you like to get coffee with me on Saturday?",
                "I made you a playlist. Want to hear it?",
                "What is your favourite film?",
                "Sorry I was late yesterday.",
            )
        )
    ),
    *(
        Task(f"debate-{n}", "debate", text, keywords=words)
        for n, (text, words) in enumerate(
            (
                ("Our town should build a bike lane on Main Street.", ("bike", "lane", "street")),
                ("I want to quit my job to open a bakery.", ("bakery", "job", "bread", "bak")),
                ("Schools should start an hour later.", ("school", "start", "later", "hour")),
                ("Our team should switch to a four-day work week.", ("four-day", "week", "work")),
                ("I am going to learn the piano at forty.", ("piano", "learn", "music", "play")),
            )
        )
    ),
    *(
        Task(f"board-{n}", "board", text, keywords=words)
        for n, (text, words) in enumerate(
            (
                (
                    "My pitch: an app that finds dog walkers for busy owners.",
                    ("dog", "walk", "app"),
                ),
                ("My pitch: a monthly box of coffee beans from local roasters.", ("coffee", "box")),
                ("My pitch: a solar charger that clips onto bicycles.", ("solar", "charg", "bik")),
                ("My pitch: tutoring kids in maths over video calls.", ("tutor", "math", "kid")),
                ("My pitch: renting out camping gear by the weekend.", ("camp", "gear", "rent")),
            )
        )
    ),
    *(
        Task(f"review-{n}", "review", text, keywords=words)
        for n, (text, words) in enumerate(
            (
                (
                    "Review this function, which should add two numbers:\n"
                    "```python\ndef add(a, b):\n    return a - b\n```",
                    ("a + b", "subtract", "minus", "difference", "instead of add"),
                ),
                (
                    "Review this function, which should return the average of a list:\n"
                    "```python\ndef average(xs):\n    return sum(xs) / len(xs)\n```",
                    ("empty", "zero", "len(xs) == 0", "zerodivision", "division by"),
                ),
                (
                    "Review this function, which should return the last item of a list:\n"
                    "```python\ndef last(xs):\n    return xs[len(xs)]\n```",
                    ("indexerror", "-1", "len(xs) - 1", "out of range", "index"),
                ),
                (
                    "Review this function, which should say whether n is even:\n"
                    "```python\ndef is_even(n):\n    return n % 2 == 1\n```",
                    ("== 0", "odd", "wrong", "opposite", "% 2 == 0"),
                ),
            )
        )
    ),
]

RECIPE_DOMAINS = {
    "solo": ("code", "facts", "format"),
    "crush": ("persona",),
    "debate": ("debate",),
    "board": ("board",),
    "code-review": ("review",),
}

# -- checks -------------------------------------------------------------------------------

AI_SPEAK = re.compile(
    r"(?i)\b(as an ai|an ai language|language model|i am an ai|i'm an ai|ai assistant|chatbot)\b"
)
ROLE_WORDS = {
    "advocate": ("should", "benefit", "good", "great", "help", "will", "because", "better"),
    "devil": ("but", "however", "risk", "problem", "not", "against", "cost", "might", "could"),
    "judge": ("advocate", "devil", "side", "case", "argument", "both", "check", "decid"),
    "chair": ("?",),
    "cfo": ("cost", "price", "money", "revenue", "profit", "budget", "pay", "spend", "fund",
            "$", "margin", "runway", "cash", "invest", "financ", "econom", "sales"),
    "cto": ("build", "tech", "software", "app", "system", "platform", "data", "engineer",
            "prototype", "scale", "develop", "hardware", "fail", "proven", "design"),
    "customer": ("customer", "buy", "user", "people", "who", "need", "market", "today",
                 "instead", "use", "owner", "famil"),
}  # fmt: skip
CODE_BLOCK = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
HARNESS = """
import json, sys
d = json.load(sys.stdin)
ns = {}
exec(d["code"], ns)
f = ns.get(d["fn"])
if not callable(f):
    fs = [v for k, v in ns.items() if callable(v) and getattr(v, "__module__", "") is None
          and not k.startswith("_") and hasattr(v, "__code__")]
    f = fs[-1] if fs else None
exec(d["tests"], {"f": f})
print("PASS")
"""


def python_blocks(text: str) -> list[str]:
    blocks = []
    for lang, body in CODE_BLOCK.findall(text):
        if lang.lower() in ("python", "py", "python3") or (not lang and "def " in body):
            blocks.append(body)
    return blocks


def well_formed(text: str) -> bool:
    """Code blocks that parse, fences that close, no runaway non-words."""
    if not text.strip() or text.count("```") % 2:
        return False
    for block in python_blocks(text):
        try:
            ast.parse(block)
        except (SyntaxError, ValueError):
            return False
    prose = re.sub(r"https?://\S+|`[^`]*`", " ", CODE_BLOCK.sub(" ", text))
    return not re.search(r"[A-Za-z]{26,}", prose)


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(w in low for w in words)


class Checker:
    def __init__(self, sandboxes: Any, room: str) -> None:
        self.sandboxes = sandboxes
        self.room = room

    async def passes(self, task: Task, agent: str, text: str) -> bool:
        if not text.strip() or AI_SPEAK.search(text):
            return False
        if task.domain == "code":
            return await self.code(task, text)
        if task.domain == "facts":
            numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
            words = {w.lower() for w in _words(text)}
            first_last = {n.removesuffix(".0") for n in numbers[:1] + numbers[-1:]}
            return any(a in first_last or a in words for a in task.answer)
        if task.domain == "format":
            try:
                return bool(task.check and task.check(text))
            except (ValueError, TypeError, AttributeError):
                return False
        words = _words(text)
        if re.match(r"^\s*\(?[A-Za-z]+\)?\s*:", text):  # speaks under a label (as another)
            return False
        if task.domain == "persona":
            personal = re.search(r"(?i)\b(i|i'm|i've|i'd|me|my)\b|\?", text)
            return len(words) <= 60 and bool(personal)
        if task.domain == "review":
            return _mentions(text, task.keywords) and len(words) <= 250
        on_topic = _mentions(text, task.keywords)
        return on_topic and len(words) <= 150 and _mentions(text, ROLE_WORDS.get(agent, ("",)))

    async def code(self, task: Task, text: str) -> bool:
        from runtime.recipes.schema import SandboxPolicy

        blocks = python_blocks(text)
        if not blocks and re.search(r"^def ", text, re.M):
            blocks = [text[text.index("def ") :]]
        for block in blocks:
            if "def " not in block:
                continue
            stdin = json.dumps({"code": block, "fn": task.fn, "tests": task.tests}).encode()
            result = await self.sandboxes.run(
                self.room,
                ["python3", "-c", HARNESS],
                SandboxPolicy(exec_timeout_s=10),
                stdin=stdin,
            )
            return result.exit_code == 0 and "PASS" in result.stdout
        return False


# -- the two sides ------------------------------------------------------------------------


@dataclass
class Score:
    passed: list[bool] = field(default_factory=list)
    formed: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    def rate(self, which: str = "passed") -> float:
        values = getattr(self, which)
        return sum(values) / len(values) if values else 0.0


class Raw:
    """The llama.cpp server, asked directly: no litellm, no conductor, no gateway."""

    def __init__(self, server: Any, settings: dict[str, Any]) -> None:
        self.server = server
        self.settings = settings

    async def ask(self, http: aiohttp.ClientSession, persona: str, prompt: str, cap: int) -> str:
        body = {
            "model": "raw",
            "messages": [
                {"role": "system", "content": persona},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": min(cap, RAW_MAX_TOKENS),
            **self.settings,
        }
        headers = {"Authorization": f"Bearer {self.server.api_key}"}
        async with http.post(
            self.server.api_base + "/chat/completions", json=body, headers=headers
        ) as response:
            data = await response.json()
        return data["choices"][0]["message"]["content"] or ""


class Collect:
    """An outlet that keeps each finished turn and every notice (gateway/outlet.py)."""

    def __init__(self) -> None:
        self.turns: list[tuple[str, str, Any]] = []
        self.notices: list[str] = []

    async def notice(self, text: str, **_: Any) -> None:
        self.notices.append(text)

    async def turn_started(self, agent: str) -> None: ...

    async def turn_text(self, agent: str, text: str) -> None: ...

    async def turn_finished(self, agent: str, text: str, turn: Any, receipt: Any) -> None:
        self.turns.append((agent, text, turn))

    async def tool_result(self, agent: str, outcome: Any) -> None: ...

    async def cut(self, reason: str) -> None: ...

    async def badge(self, message_id: str | None, receipt: Any) -> None: ...


class Runtime:
    """The gateway's exchange path on a store of its own: one fresh session per task."""

    def __init__(self, home: Path, models: Any, sandboxes: Any) -> None:
        from gateway.budgets import Budgets
        from gateway.exchange import Exchange
        from gateway.library import Library
        from gateway.receipts.keys import KeyPair
        from gateway.receipts.ledger import Ledger
        from gateway.store.db import Store

        self.store = Store(f"sqlite:///{home / 'quality.db'}")
        self.library = Library(self.store)
        self.library.sync_bundled()
        ledger = Ledger(self.store, KeyPair.generate())
        self.exchange = Exchange(
            self.store, self.library, ledger, models, Budgets(self.store, {}), sandboxes
        )
        self.notices: dict[str, list[str]] = defaultdict(list)

    async def ask(self, recipe: str, task: Task, n: int) -> list[tuple[str, str]]:
        from gateway.exchange import Said
        from gateway.store.rooms import ensure_room

        saved = self.library.get(recipe)
        key = f"{recipe}-{task.id}-{n}"
        room_id = ensure_room(self.store, "bench", key)
        conversation = self.exchange.open(room_id, saved)
        self.exchange.hear(
            room_id, conversation, Said("bench:alice", "alice", task.prompt), answer=True
        )
        outlet = Collect()
        await self.exchange.answer(room_id, f"bench:{key}", conversation, outlet)
        self.notices[recipe] += [n for n in outlet.notices if n not in self.notices[recipe]]
        return [
            (agent, t.text) for agent, _, t in outlet.turns if t.finish not in ("pass", "error")
        ]


async def run_raw(
    raw: Raw, recipes: dict[str, Any], checker: Checker, repeat: int, gate: asyncio.Semaphore
) -> dict[str, Score]:
    scores: dict[str, Score] = defaultdict(Score)

    async def one(name: str, agent: Any, task: Task, http: aiohttp.ClientSession) -> None:
        async with gate:
            text = await raw.ask(http, agent.persona, task.prompt, agent.max_tokens)
        scores[name].passed.append(await checker.passes(task, agent.name, text))
        scores[name].formed.append(well_formed(text))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        jobs = [
            one(name, agent, task, http)
            for _ in range(repeat)
            for name, recipe in recipes.items()
            for task in TASKS
            if task.domain in RECIPE_DOMAINS[name]
            for agent in recipe.agents
        ]
        await asyncio.gather(*jobs)
    return scores


async def run_runtime(
    runtime: Runtime,
    recipes: dict[str, Any],
    checker: Checker,
    repeat: int,
    gate: asyncio.Semaphore,
) -> dict[str, Score]:
    scores: dict[str, Score] = defaultdict(Score)

    async def one(name: str, task: Task, n: int) -> None:
        async with gate:
            turns = await runtime.ask(name, task, n)
        if not turns:
            scores[name].passed.append(False)
            scores[name].formed.append(False)
        for agent, text in turns:
            scores[name].passed.append(await checker.passes(task, agent, text))
            scores[name].formed.append(well_formed(text))

    jobs = [
        one(name, task, n)
        for n in range(repeat)
        for name in recipes
        for task in TASKS
        if task.domain in RECIPE_DOMAINS[name]
    ]
    await asyncio.gather(*jobs)
    return scores


def _total(scores: dict[str, Score], which: str = "passed") -> float:
    values = [v for s in scores.values() for v in getattr(s, which)]
    return sum(values) / len(values) if values else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="ask every task this many times")
    parser.add_argument("--sweep", action="store_true", help="compare direct settings")
    parser.add_argument("--only", default="", help="recipes, comma-separated")
    args = parser.parse_args()

    from gateway.config import load_config
    from gateway.sandboxes import open_sandboxes
    from runtime.models.client import Models

    names = [n for n in RECIPE_DOMAINS if not args.only or n in args.only.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="potluck-quality-") as tmp:
        home = Path(tmp)
        config = load_config(env={"POTLUCK_HOME": str(home)})
        sandboxes = await open_sandboxes(config)
        if sandboxes is None:
            sys.exit("the code tasks need the sandbox broker and Docker: see `potluck doctor`")
        try:
            models = Models()
            server = await models.local.ensure(MODEL)
            runtime = Runtime(home, models, sandboxes)
            recipes = {n: runtime.library.get(n).recipe for n in names}
            checker = Checker(sandboxes, "bench-quality")
            gate = asyncio.Semaphore(AT_ONCE)
            count = sum(1 for t in TASKS if any(t.domain in RECIPE_DOMAINS[n] for n in names))
            print(
                f"quality of {MODEL}: {count} tasks over {', '.join(names)}; repeat {args.repeat}"
            )
            if args.sweep:
                for label, settings in SWEEP.items():
                    t0 = time.perf_counter()
                    got = await run_raw(Raw(server, settings), recipes, checker, args.repeat, gate)
                    detail = "  ".join(f"{n} {got[n].rate():.2f}" for n in names)
                    print(
                        f"  direct, {label:24s} pass {_total(got):.3f}  well-formed "
                        f"{_total(got, 'formed'):.2f}  ({detail}; {time.perf_counter() - t0:.0f} s)"
                    )
                return
            # interleaved halves, so the machine's drift hits both sides alike
            raw_scores: dict[str, Score] = defaultdict(Score)
            ours: dict[str, Score] = defaultdict(Score)
            for _ in range(args.repeat):
                for side, target in (("raw", raw_scores), ("runtime", ours)):
                    t0 = time.perf_counter()
                    if side == "raw":
                        got = await run_raw(Raw(server, RAW_BEST), recipes, checker, 1, gate)
                    else:
                        got = await run_runtime(runtime, recipes, checker, 1, gate)
                    for name, score in got.items():
                        target[name].passed += score.passed
                        target[name].formed += score.formed
                    target["_"].seconds += time.perf_counter() - t0
            embedded = [n for n in names if "embedded-model" in recipes[n].tags]
            report(names, ours, raw_scores, runtime.notices, embedded)
            print(f"bench time {time.perf_counter() - started:.0f} s")
        finally:
            with contextlib.suppress(Exception):
                await sandboxes.remove("bench-quality")
            await sandboxes.close()
            _remove_workspaces(config.install_id)


def report(
    names: list[str],
    ours: dict[str, Score],
    raw: dict[str, Score],
    notices: dict[str, list[str]],
    embedded: list[str] | None = None,
) -> None:
    print(f"raw settings (baseline): {RAW_BEST}")
    print(
        f"{'recipe':12s} {'turns':>5s} {'runtime':>8s} {'direct':>7s} {'ratio':>6s}"
        f"   well-formed runtime / direct"
    )
    for name in names:
        a, b = ours[name], raw[name]
        ratio = a.rate() / b.rate() if b.rate() else float("nan")
        print(
            f"{name:12s} {len(a.passed):5d} {a.rate():8.3f} {b.rate():7.3f} {ratio:6.2f}"
            f"   {a.rate('formed'):.2f} / {b.rate('formed'):.2f}"
        )
    mine = {n: ours[n] for n in names}
    theirs = {n: raw[n] for n in names}
    total_a, total_b = _total(mine), _total(theirs)
    ratio = total_a / total_b if total_b else float("nan")
    print(
        f"{'all':12s} {sum(len(s.passed) for s in mine.values()):5d} {total_a:8.3f} "
        f"{total_b:7.3f} {ratio:6.2f}   {_total(mine, 'formed'):.2f} / "
        f"{_total(theirs, 'formed'):.2f}"
    )
    if embedded:
        mine = {n: ours[n] for n in embedded}
        theirs = {n: raw[n] for n in embedded}
        a, b = _total(mine), _total(theirs)
        print(
            f"{'embedded':12s} {sum(len(s.passed) for s in mine.values()):5d} {a:8.3f} {b:7.3f} "
            f"{a / b if b else float('nan'):6.2f}   (the recipes meant for the embedded model: "
            f"{', '.join(embedded)}; goal >= 1.0)"
        )
    per_recipe = [ours[n].rate() / raw[n].rate() for n in names if raw[n].rate()]
    if per_recipe:
        print(f"median per-recipe ratio {statistics.median(per_recipe):.2f} (goal >= 1.0)")
    print(
        f"time: runtime {ours['_'].seconds:.0f} s, direct {raw['_'].seconds:.0f} s "
        "(the runtime's turns are more: every agent of every round)"
    )
    for name in names:
        for note in notices.get(name, []):
            print(f"  {name}: room told {note}")


def _remove_workspaces(install: str) -> None:
    """The bench's sandbox workspaces (its install is a temporary home's)."""
    with contextlib.suppress(Exception):
        import docker

        from runtime.sandbox.policy import LABEL_INSTALL

        client = docker.from_env(timeout=60)
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTALL}={install}"}
        ):
            container.remove(force=True)
        for volume in client.volumes.list(filters={"label": f"{LABEL_INSTALL}={install}"}):
            volume.remove(force=True)


if __name__ == "__main__":
    asyncio.run(main())
