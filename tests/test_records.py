"""Track records from receipts: sessions with known endings, tool results, costs, verdicts
and judgements give exactly the expected figures, the same from the store's fast path as
from the events a stranger recomputes them from; a recipe whose sessions all end alike is
flagged whatever its thumbs say; comparisons say when a difference is more than noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adapters.base import Reaction, vote_of
from gateway.receipts.endings import Ending
from gateway.records import stats
from gateway.records.assertion import differences, recompute
from gateway.records.compare import compare
from gateway.records.events import DELETION, REACTION
from gateway.records.figures import compute
from gateway.records.likeness import diversity
from gateway.records.store import Scope, family, record

from .support import Install


@pytest.fixture
def install(tmp_path: Path):
    one = Install(tmp_path)
    yield one
    one.store.close()


@pytest.fixture
def on_both(tmp_path: Path, database_url: str):
    """An install on SQLite, then on a real PostgreSQL server."""
    one = Install(tmp_path, database_url)
    yield one
    one.store.close()


def recount_of(one: Install, version_id: str):
    """The record a stranger would recompute from the events (all of them public here)."""
    from gateway.records.store import sessions_of

    sessions = {}
    texts = {}
    for session in sessions_of(one.store, [version_id]):
        events = one.ledger.events(session.id)
        sessions[events[0].id] = events
        for row in one.ledger.rows(session.id):
            if row.plaintext is not None:
                texts[row.id] = row.plaintext
    return recompute(
        sessions,
        one.events(REACTION, DELETION),
        [],
        gateway=one.keys.pubkey,
        until=2**40,
        texts=texts,
    )


async def test_known_sessions_give_exactly_the_expected_figures(on_both: Install) -> None:
    one = on_both
    s1, s2, s3 = one.session(), one.session(), one.session()
    one.exchange(
        s1,
        Ending.COMPLETED,
        turns=(("scripted/echo", 100, 20, 0.002), ("openai/gpt-4o-mini", 50, 10, 0.001)),
        tools=((0, 1200, None), (2, 300, None), (137, 30_000, "timeout")),
        text="ok, here is the plan",
    )
    one.exchange(s1, Ending.LIMIT_TURNS, person="web:bob", text="we ran out of turns")
    one.exchange(s2, Ending.COMPLETED, turns=(("local/smollm2-135m", 7, 3, 0.0),), text="done")
    one.exchange(s2, Ending.STOPPED, tools=((0, 500, None),), text="stopped midway")
    one.exchange(s3, Ending.ERROR, turns=(), text="")
    one.ledger.close(s2, Ending.STOPPED, "another recipe was attached")
    # verdicts: alice 👍 then 👎 in s1 (replaced: one vote), bob 👍 twice in s1 (one vote),
    # carol 👍 in s2, the admin's 👍 in s2 counted apart; a ❤️ and a reaction on a message
    # that shows no turn are not votes
    one.admins.add("dana")
    assert await one.react(s1, 0, "alice", "👍") == "counted"
    assert await one.react(s1, 1, "alice", "👎") == "counted"
    assert await one.react(s1, 0, "bob", "👍") == "counted"
    assert await one.react(s1, 2, "bob", "👍🏽") == "counted"
    assert await one.react(s2, 0, "carol", "👍") == "counted"
    assert await one.react(s2, 1, "dana", "👍") == "counted"
    assert await one.react(s2, 1, "erin", "❤️") == "ignored"
    stray = Reaction("web", "kitchen", "fred", "fred", "not-a-turn", "👍", "stray")
    row = one.reactions.record(one.room, stray)
    assert (await one.verdicts.handle(row, stray)).reason == "the message shows no agent turn"

    got = record(one.store, Scope((one.duo.id,))).to_dict()
    assert got["sessions"]["n"] == 3 and got["sessions"]["closed"] == 1
    assert got["sessions"]["endings"]["stopped"] == 1
    endings = got["exchanges"]["endings"]
    assert (endings["completed"], endings["limit_turns"], endings["stopped"]) == (2, 1, 1)
    assert endings["error"] == 1 and got["exchanges"]["n"] == 5
    assert got["exchanges"]["completion"]["k"] == 2 and got["exchanges"]["completion"]["n"] == 5
    low, high = stats.wilson(2, 5)
    assert got["exchanges"]["completion"]["low"] == round(low, 6)
    assert got["exchanges"]["completion"]["high"] == round(high, 6)
    # per exchange: tokens 180, 15, 10, 15, 0; turns 2, 1, 1, 1, 0; cost .003, .001, 0, .001, 0
    assert got["exchanges"]["tokens"] == {"n": 5, "median": 15.0, "p90": 180.0}
    assert got["exchanges"]["turns"] == {"n": 5, "median": 1.0, "p90": 2.0}
    assert got["exchanges"]["cost_usd"] == {"n": 5, "median": 0.001, "p90": 0.003}
    # per session (so far): s1 195 tokens/3 turns/$0.004, s2 25/2/$0.001, s3 0/0/$0
    assert got["sessions"]["tokens"] == {"n": 3, "median": 25.0, "p90": 195.0}
    assert got["sessions"]["cost_usd"]["p90"] == 0.004
    assert got["exchanges"]["models"] == {
        "local/smollm2-135m": 1,
        "openai/gpt-4o-mini": 1,
        "scripted/echo": 3,
    }
    tools = got["tools"]
    assert (tools["calls"], tools["ok"], tools["timeouts"], tools["failed"]) == (4, 2, 1, 1)
    assert tools["ms"] == {"n": 4, "median": 850.0, "p90": 30000.0}
    assert got["verdicts"] == {
        "up": 2,  # bob in s1, carol in s2
        "down": 1,  # alice in s1 (her 👍 replaced)
        "approval": {
            "k": 2,
            "n": 3,
            "rate": round(2 / 3, 6),
            "low": round(stats.wilson(2, 3)[0], 6),
            "high": round(stats.wilson(2, 3)[1], 6),
        },
        "insiders": {"up": 1, "down": 0},  # dana, the room admin
    }
    assert got["reach"] == {"people": 2, "voters": 4, "installs": 1, "rooms": 1}
    # alice's change: her 👍 deleted (NIP-09), her 👎 names the verdict it replaces; bob's
    # second 👍, on another turn of the same session, moves his one vote there the same way
    deletions = one.events(DELETION)
    assert [d.content for d in deletions] == ["vote changed", "vote changed"]
    down = next(e for e in one.events(REACTION) if e.content == "-")
    assert down.tag_value("replaces") in {d.tag_value("e") for d in deletions}
    assert len(one.votes()) == 4

    # A stranger's recount from the events gives the same figures (rooms are the install's).
    recount = recount_of(one, one.duo.id)
    assert not recount.problems
    compared = differences(got, recount.record.to_dict(), texts_public=True)
    assert compared.mismatches == [] and compared.matched > 60
    assert [c.split(" = ")[0] for c in compared.claimed] == ["reach.rooms"]


async def test_a_vote_taken_back_is_removed_and_one_person_votes_once_per_session(
    install: Install,
) -> None:
    one = install
    sid = one.session()
    one.exchange(sid, Ending.COMPLETED)
    one.exchange(sid, Ending.COMPLETED)
    assert await one.react(sid, 0, "alice", "👍") == "counted"
    assert await one.react(sid, 1, "alice", "👍") == "counted"
    assert [(v.value, v.receipt_id) for v in one.votes()] == [(1, one.turns[sid][1])]
    # taking back the later 👍 leaves the earlier one standing: still one vote, re-signed
    assert await one.react(sid, 1, "alice", "👍", added=False) == "counted"
    assert [(v.value, v.receipt_id) for v in one.votes()] == [(1, one.turns[sid][0])]
    assert await one.react(sid, 0, "alice", "👍", added=False) == "counted"
    assert one.votes() == []
    got = record(one.store, Scope((one.duo.id,)))
    assert (got.up, got.down, got.voters) == (0, 0, 0)
    assert not recount_of(one, one.duo.id).record.up


def test_thumbs_are_read_the_way_each_platform_writes_them() -> None:
    for up in ("👍", "👍🏿", "👍️", "+1", ":+1:", "thumbsup"):
        assert vote_of(up) == 1, up
    for down in ("👎", "👎🏻", "-1", ":thumbsdown:"):
        assert vote_of(down) == -1, down
    for other in ("❤️", "😂", "", "👍👍", "+2"):
        assert vote_of(other) is None, other


async def test_a_strawman_whose_sessions_all_end_alike_is_flagged_whatever_its_thumbs(
    install: Install,
) -> None:
    one = install
    strawman = one.library.fork("duo", "strawman")
    varied = one.library.fork("duo", "varied")
    for n in range(6):
        sid = one.session("strawman")
        one.exchange(
            sid,
            Ending.COMPLETED,
            text=f"(blushes) Yes, of course I will go out with you{'!' * (n % 2)}",
        )
        assert await one.react(sid, 0, f"person{n}", "👍") == "counted"
        other = one.session("varied")
        one.exchange(
            other,
            Ending.COMPLETED,
            text=f"Answer {n}: "
            + " ".join(
                ["maybe", "not tonight", "why do you ask", "tell me more", "I'm busy", "sure"][n:]
            )
            + f" {n * 7919}",
        )
    flagged = record(one.store, Scope((strawman.id,)))
    assert flagged.up == 6 and flagged.down == 0  # everyone liked it
    assert flagged.diversity is not None and flagged.diversity.flagged
    assert flagged.diversity.mean > 0.9 and flagged.diversity.pairs == 15
    assert "end alike" in flagged.diversity.note
    fine = record(one.store, Scope((varied.id,)))
    assert fine.diversity is not None and not fine.diversity.flagged, fine.diversity
    # a single long session repeating itself is not a strawman: only different sessions count
    lone = one.session("duo")
    for _ in range(6):
        one.exchange(lone, Ending.COMPLETED, text="the same words again")
    alone = record(one.store, Scope((one.duo.id,)))
    assert alone.diversity is not None and not alone.diversity.flagged
    assert alone.diversity.pairs == 0 and "too few" in alone.diversity.note


def test_likeness_compares_a_bounded_reproducible_sample() -> None:
    finals = [(f"s{n % 50}", f"turn {n} says something {n * 31}") for n in range(2000)]
    first, again = diversity(finals), diversity(list(finals))
    assert first.pairs == 500 and first == again
    same = diversity([(f"s{n}", "always the same") for n in range(40)])
    assert same.mean == 1.0 and same.flagged


def test_rates_carry_wilson_intervals_and_spreads_nearest_rank() -> None:
    low, high = stats.wilson(0, 10)
    assert low == 0.0 and math.isclose(high, 0.2775, abs_tol=1e-4)
    low, high = stats.wilson(10, 10)
    assert math.isclose(low, 0.7225, abs_tol=1e-4) and high == 1.0
    assert stats.wilson(0, 0) == (0.0, 1.0)
    spread = stats.Spread.of([5, 1, 4, 2, 3, 10, 9, 8, 7, 6])
    assert (spread.median, spread.p90) == (5.5, 9.0)
    # Mann–Whitney with continuity correction: 1..5 against 6..10 is U = 0, p ≈ 0.0122
    assert math.isclose(
        stats.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]), 0.0122, abs_tol=1e-3
    )
    assert stats.mann_whitney_p([3] * 6, [3] * 6) == 1.0


async def test_compare_says_whether_a_difference_is_more_than_noise(install: Install) -> None:
    one = install
    good = one.library.fork("duo", "good")
    bad = one.library.fork("duo", "bad")
    for n in range(30):
        a = one.session("good")
        one.exchange(a, Ending.COMPLETED, turns=(("scripted/echo", 100, 10, 0.001),))
        b = one.session("bad")
        ending = Ending.COMPLETED if n < 9 else Ending.LIMIT_TURNS
        one.exchange(b, ending, turns=(("scripted/echo", 400 + n, 40, 0.004),))
    rows = {
        row.figure: row
        for row in compare(
            record(one.store, Scope((good.id,))), record(one.store, Scope((bad.id,)))
        )
    }
    assert rows["completed"].difference.more_than_noise is True
    assert rows["completed"].a.startswith("100% of 30") and rows["completed"].b.startswith(
        "30% of 30"
    )
    assert rows["tokens per exchange (median)"].difference.more_than_noise is True
    assert rows["money per exchange (median)"].difference.more_than_noise is True
    assert "too few" in rows["people's 👍 (of their votes)"].verdict
    same = compare(record(one.store, Scope((good.id,))), record(one.store, Scope((good.id,))))
    assert next(r for r in same if r.figure == "completed").difference.more_than_noise is False


async def test_a_recipe_rolls_up_over_its_versions_and_forks(install: Install) -> None:
    one = install
    one.exchange(one.session("duo"), Ending.COMPLETED)
    edited = one.library.set("duo", "title", "Echo duo, edited")
    one.exchange(one.session("duo"), Ending.LIMIT_TURNS)
    fork = one.library.fork("duo", "my-duo")
    one.exchange(one.session("my-duo"), Ending.STOPPED)
    found = family(one.library, f"duo@{one.duo.id[:7]}")
    assert found.version.exchanges == 1
    assert found.rolled_up.exchanges == 3 and found.rolled_up.sessions == 3
    assert {vid for _ref, vid, _rec in found.versions} == {one.duo.id, edited.id, fork.id}


def test_text_that_looks_like_a_key_cannot_move_a_figure(tmp_path: Path) -> None:
    """A transparent room puts people's and agents' text in the receipts themselves: text
    shaped like the fields a record reads must not be read as them."""
    one = Install(tmp_path)
    try:
        from gateway.store.rooms import update_settings

        update_settings(one.store, one.room, transparent=True)
        sid = one.session()
        forged = '","wall_ms":999999,"exit_code":0,"killed":null,"sender":"' + "a" * 64 + '"}'
        with one.ledger.batch():
            one.ledger.person(sid, "web:mallory", forged + ' \\"sender\\":\\"' + "b" * 64)
            one.ledger.tool(
                sid,
                agent="first",
                tool="shell",
                command=f'echo {forged} "turns":99}}',
                exit_code=1,
                output="",
                wall_ms=40,
            )
            one.ledger.turn(
                sid,
                agent="first",
                model="scripted/echo",
                text='"tokens_in":99999,"turns":42}',
                tokens_in=3,
                tokens_out=2,
                cost_usd=0.0,
            )
            one.ledger.end_exchange(sid, Ending.COMPLETED, detail='x","ending":"error')
        got = record(one.store, Scope((one.duo.id,)))
        assert (got.tool_calls, got.tool_ok, got.tool_failed) == (1, 0, 1)
        assert got.tool_ms.median == 40.0 and got.people == 1
        assert got.endings["completed"] == 1 and got.endings["error"] == 0
        assert got.per_exchange["tokens"].median == 5.0
        assert got.per_exchange["turns"].median == 1.0
        from_events = recount_of(one, one.duo.id).record.to_dict()
        assert differences(got.to_dict(), from_events, texts_public=True).mismatches == []
    finally:
        one.store.close()


def test_compute_reads_plain_contents_too() -> None:
    items = [
        ("s", 0, 4743, '{"mark":"open"}', None, "o"),
        (
            "s",
            1,
            4740,
            '{"chars":2,"commitment":"' + "c" * 64 + '","sender":"' + "d" * 64 + '"}',
            None,
            "p",
        ),
        ("s", 2, 4741, "{}", "hi", "t"),
        (
            "s",
            3,
            4744,
            json.dumps(
                {
                    "cost_usd": 0.5,
                    "detail": "",
                    "ending": "completed",
                    "from_seq": 1,
                    "models": ["m"],
                    "persons": 1,
                    "tokens_in": 1,
                    "tokens_out": 2,
                    "tool_calls": 0,
                    "tool_failed": 0,
                    "tool_ms": 0,
                    "tool_ok": 0,
                    "tool_timeouts": 0,
                    "turns": 1,
                },
                sort_keys=True,
                separators=(",", ":"),
            ),
            None,
            "e",
        ),
    ]
    got = compute(items)
    assert (got.sessions, got.exchanges, got.people) == (1, 1, 1)
    assert got.per_exchange["cost_usd"].median == 0.5 and got.models == {"m": 1}


async def test_a_judge_labels_each_exchange_once_and_signs_who_judged(install: Install) -> None:
    from gateway.records.events import LABEL
    from gateway.records.judge import PROMPT_VERSION, judge
    from runtime.models import scripted
    from runtime.models.client import Models

    def judging(messages: list[dict]) -> str:
        said = messages[-1]["content"]
        if "no, that plan" in said.lower():
            return "CHALLENGED: they pushed back"
        return "Agreed." if "great idea" in said.lower() else "I cannot tell"

    scripted.SCRIPTS["judge"] = judging
    one = install
    sid = one.session()
    one.exchange(sid, Ending.COMPLETED, text="No, that plan will fail, and here is why")
    one.exchange(sid, Ending.COMPLETED, text="Great idea, let's do it")
    one.exchange(sid, Ending.COMPLETED, text="hmm")
    judged = await judge(one.ledger, Models(), "scripted/judge", [one.duo.id])
    assert (judged.labelled, judged.unclear, judged.failed) == (2, 1, [])
    labels = one.events(LABEL)
    assert sorted(e.tag("l")[1] for e in labels) == ["agreed", "challenged"]
    for label in labels:
        assert label.tag("judge") == ("judge", "scripted/judge", PROMPT_VERSION)
        assert label.tag_value("model") == "scripted/judge"  # the model that answered
        assert label.tag_value("k") == "4744" and label.pubkey == one.keys.pubkey
    got = record(one.store, Scope((one.duo.id,)))
    assert {j: (r.k, r.n) for j, r in got.challenge.items()} == {
        f"scripted/judge#{PROMPT_VERSION}": (1, 2)
    }
    again = await judge(one.ledger, Models(), "scripted/judge", [one.duo.id])
    assert again.labelled == 0 and again.unclear == 1  # judged once; the unclear one retried


def test_the_judge_is_off_unless_configured(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config

    assert load_config(env={"POTLUCK_HOME": str(tmp_path)}).judge == ""
    (tmp_path / "config.toml").write_text('[records]\njudge = "openai/gpt-4o-mini"\n')
    assert load_config(env={"POTLUCK_HOME": str(tmp_path)}).judge == "openai/gpt-4o-mini"
    (tmp_path / "config.toml").write_text('[records]\njudge = "a b"\nother = 1\n')
    with pytest.raises(ConfigError, match="one key: judge"):
        load_config(env={"POTLUCK_HOME": str(tmp_path)})


def test_the_command_line_shows_compares_and_refuses_clearly(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import cli

    one = Install(tmp_path)
    try:
        sid = one.session()
        one.exchange(sid, Ending.COMPLETED, tools=((0, 100, None),))
        one.exchange(sid, Ending.LIMIT_TURNS)
        one.library.fork("duo", "duo-fork")
        one.exchange(one.session("duo-fork"), Ending.ERROR)
        env = {"POTLUCK_HOME": str(tmp_path), "POTLUCK_DATABASE_URL": one.store.url}
        runner = CliRunner()
        shown = runner.invoke(cli, ["recipe", "record", "duo"], env=env)
        assert shown.exit_code == 0, shown.output
        assert "completed: 50% of 2 (" in shown.output
        assert "tools: 1 calls, ok 100% of 1" in shown.output
        assert "rolled up over 2 versions and forks" in shown.output
        data = json.loads(runner.invoke(cli, ["recipe", "record", "duo", "--json"], env=env).output)
        assert data["version"]["exchanges"]["n"] == 2 and data["rolled_up"]["exchanges"]["n"] == 3
        side = runner.invoke(cli, ["recipe", "compare", "duo", "duo-fork"], env=env)
        assert side.exit_code == 0 and "too few to tell (n=2 and n=1)" in side.output
        missing = runner.invoke(cli, ["recipe", "record"], env=env)
        assert missing.exit_code == 2 and "name a recipe" in missing.output
        unknown = runner.invoke(cli, ["recipe", "record", "nope"], env=env)
        assert unknown.exit_code == 2 and "no such recipe" in unknown.output
        nothing = runner.invoke(cli, ["recipe", "record", "duo", "--publish"], env=env)
        assert nothing.exit_code == 2 and "no relays to publish to" in nothing.output
        link = runner.invoke(cli, ["recipe", "record", "--verify", "npub1xyz"], env=env)
        assert link.exit_code == 2 and "record link" in link.output
    finally:
        one.store.close()
