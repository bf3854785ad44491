"""Experiment designs and their online report: sticky arms, team-draft interleaving, rates and decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.columns import Col
from recsys.experiments.design import (
    CHALLENGER_ARM,
    CHAMPION_ARM,
    INTERLEAVE,
    SHADOW,
    Experiment,
    arm_of,
    bucket,
    team_draft,
)
from recsys.experiments.report import (
    LOSES,
    MORE_TRAFFIC,
    WINS,
    ab_outcome,
    attribute,
    decide,
    difference,
    interleaving_outcome,
    like_rate_by_model,
    ratio_estimate,
)
from recsys.feedback.tables import Served

T0 = datetime(2026, 12, 1, tzinfo=UTC)
HOUR = pd.Timedelta(hours=1)


def test_arms_are_sticky_salted_and_split_by_the_share() -> None:
    users = [f"listener-{n}" for n in range(4000)]
    arms = [arm_of(user, "s1", 0.3) for user in users]
    assert arms == [arm_of(user, "s1", 0.3) for user in users]  # the same listener, the same arm
    assert abs(arms.count(CHALLENGER_ARM) / len(users) - 0.3) < 0.03
    reshuffled = [arm_of(user, "s2", 0.3) for user in users]
    assert sum(a != b for a, b in zip(arms, reshuffled, strict=True)) > 800  # a new salt, a new split
    # Growing the share only moves champion listeners over: nobody leaves the challenger's arm.
    assert all(
        arm_of(u, "s1", 0.5) == CHALLENGER_ARM
        for u, a in zip(users, arms, strict=True)
        if a == CHALLENGER_ARM
    )
    assert all(0 <= bucket(user, "s1") < 1 for user in users[:50])


def test_an_experiment_needs_a_challenger_unless_off() -> None:
    assert not Experiment().active and Experiment().share == 0.0
    with pytest.raises(ValidationError, match="challenger"):
        Experiment(mode="interleave")
    with pytest.raises(ValidationError):
        Experiment(mode="ab", challenger="m:1", share=1.5)


def test_team_draft_alternates_credits_each_item_once_and_is_seeded() -> None:
    a, b = list(range(10)), [9, 8, 7, 0, 1, 2, 3, 4, 5, 6]
    for seed in range(30):
        drafted = team_draft(a, b, 6, seed)
        items = [item for item, _ in drafted]
        assert len(items) == len(set(items)) == 6
        teams = [team for _, team in drafted]
        for prefix in range(1, len(teams) + 1):  # neither team is ever more than one pick ahead
            assert abs(teams[:prefix].count(CHAMPION_ARM) - teams[:prefix].count(CHALLENGER_ARM)) <= 1
        # Each team's picks keep their own ranking's order.
        assert [i for i, t in drafted if t == CHAMPION_ARM] == sorted(
            i for i, t in drafted if t == CHAMPION_ARM
        )
    assert team_draft(a, b, 6, 3) == team_draft(a, b, 6, 3)
    assert {team_draft(a, b, 6, seed)[0][1] for seed in range(30)} == {CHAMPION_ARM, CHALLENGER_ARM}
    same = team_draft([1, 2, 3], [1, 2, 3], 3, 0)
    assert [i for i, _ in same] == [1, 2, 3]  # identical rankings interleave to themselves
    assert len(team_draft([1], [2], 5, 0)) == 2  # stops when both run out


def test_a_ratio_estimate_uses_the_listener_as_the_unit() -> None:
    x, n = np.array([1.0, 0.0, 2.0, 1.0]), np.array([2.0, 2.0, 2.0, 2.0])
    estimate = ratio_estimate(x, n)
    assert estimate.value == pytest.approx(0.5) and estimate.low < 0.5 < estimate.high
    # One listener with many lists: the interval is as wide as their number, not their lists', warrants.
    lumpy = ratio_estimate(np.array([100.0, 0.0]), np.array([100.0, 100.0]))
    assert lumpy.high - lumpy.low > 0.9
    assert np.isnan(ratio_estimate(np.array([]), np.array([])).value)


def _served(rows: list[tuple[str, list[str], str, list[str] | None, int]]) -> pd.DataFrame:
    """Served lists: (user, items, arm, credits, minute)."""
    return pd.DataFrame(
        {
            Served.SERVED_AT: pd.to_datetime([T0 + timedelta(minutes=m) for *_, m in rows], utc=True),
            Served.USER: [r[0] for r in rows],
            Served.ITEMS: [r[1] for r in rows],
            Served.ARM: [r[2] for r in rows],
            Served.CREDITS: [r[3] for r in rows],
        }
    )


def _events(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """Feedback events: (user, item, event, minute)."""
    return pd.DataFrame(
        {
            Col.USER: [r[0] for r in rows],
            Col.ITEM: [r[1] for r in rows],
            Col.EVENT: [r[2] for r in rows],
            Col.TIMESTAMP: pd.to_datetime([T0 + timedelta(minutes=r[3]) for r in rows], utc=True),
        }
    )


def test_an_event_counts_for_the_latest_list_before_it_that_showed_its_item() -> None:
    served = _served(
        [
            ("u1", ["a", "b"], CHAMPION_ARM, None, 0),
            ("u1", ["b", "c"], CHAMPION_ARM, None, 10),
            ("u1", ["a"], "shadow", None, 11),  # never shown
            ("u2", ["a"], CHALLENGER_ARM, None, 0),
        ]
    )
    events = _events(
        [("u1", "b", "like", 12), ("u1", "a", "like", 12), ("u1", "c", "like", 5), ("u2", "a", "play", 200)]
    )
    joined = attribute(served, events, HOUR)
    assert joined[[Col.ITEM, "list_id"]].values.tolist() == [["b", 1], ["a", 0]]  # c: before; u2: too late


def test_ab_outcome_measures_rates_per_arm_and_decides_when_the_interval_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    rows, events = [], []
    for n in range(600):
        user = f"u{n}"
        arm = CHALLENGER_ARM if n % 2 else CHAMPION_ARM
        rows.append((user, ["a", "b", "c"], arm, None, 0))
        if rng.random() < (0.5 if arm == CHALLENGER_ARM else 0.2):
            events.append((user, "a", "like", 1))
        if rng.random() < 0.1:
            events.append((user, "b", "skip", 1))
    outcome = ab_outcome(_served(rows), _events(events), HOUR)
    assert outcome[CHALLENGER_ARM]["hit_rate"].value == pytest.approx(0.5, abs=0.07)
    assert outcome[CHAMPION_ARM]["hit_rate"].value == pytest.approx(0.2, abs=0.07)
    assert outcome[CHAMPION_ARM]["like_rate"].value == pytest.approx(
        outcome[CHAMPION_ARM]["hit_rate"].value / 3
    )
    assert outcome[CHALLENGER_ARM]["skip_rate"].value == pytest.approx(0.1 / 3, abs=0.02)
    better = difference(outcome[CHALLENGER_ARM]["hit_rate"], outcome[CHAMPION_ARM]["hit_rate"])
    assert decide(better) == WINS
    assert decide(difference(outcome[CHAMPION_ARM]["hit_rate"], outcome[CHALLENGER_ARM]["hit_rate"])) == LOSES
    assert decide(better, min_units=10_000) == MORE_TRAFFIC
    few = ab_outcome(_served(rows[:6]), _events(events[:2]), HOUR)
    assert decide(difference(few[CHALLENGER_ARM]["hit_rate"], few[CHAMPION_ARM]["hit_rate"])) == MORE_TRAFFIC


def test_interleaving_counts_a_win_for_the_model_whose_slots_drew_more_plays() -> None:
    credits = [CHAMPION_ARM, CHALLENGER_ARM, CHAMPION_ARM, CHALLENGER_ARM]
    served = _served([(f"u{n}", ["a", "b", "c", "d"], "interleave", credits, 0) for n in range(40)])
    # 30 listeners like the challenger's "b"; 5 like the champion's "a"; 5 like one of each (a tie).
    rows = [(f"u{n}", "b", "like", 1) for n in range(30)] + [(f"u{n}", "a", "play", 1) for n in range(30, 35)]
    rows += [(f"u{n}", item, "like", 1) for n in range(35, 40) for item in ("a", "b")]
    outcome = interleaving_outcome(served, _events(rows), HOUR)
    assert (outcome["wins"], outcome["losses"], outcome["ties"]) == (30, 5, 5)
    assert outcome["preference"] == pytest.approx(25 / 40) and outcome["p_value"] < 0.001
    assert decide(outcome) == WINS
    flipped = interleaving_outcome(served, _events([(f"u{n}", "a", "like", 1) for n in range(3)]), HOUR)
    assert flipped["losses"] == 3 and decide(flipped) == MORE_TRAFFIC  # 3 lists decide nothing


def test_simulated_experiments_find_a_clearly_better_model_and_rarely_a_difference_between_equals() -> None:
    from recsys.experiments.simulation import (
        ab_experiment,
        examined,
        interleaving_experiment,
        power_curve,
        sessions_needed,
        true_effect,
    )

    looked = examined(4, np.random.default_rng(0), 20_000).mean(axis=0)
    assert looked == pytest.approx(1 / np.log2(np.arange(2, 6)), abs=0.02)
    future = [{n % 7, 7 + n % 5} for n in range(60)]  # each listener's two held-out items
    good = [[n % 7, 20, 21, 22] for n in range(60)]  # the first item is always in the future
    bad = [[30, 31, 32, 33] for _ in range(60)]
    effect = true_effect(bad, good, future)
    assert effect[CHAMPION_ARM] == 0 and effect[CHALLENGER_ARM] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    assert ab_experiment(bad, good, future, 200, rng) == WINS
    assert interleaving_experiment(bad, good, future, 200, rng) == WINS
    assert interleaving_experiment(good, bad, future, 200, rng) == LOSES
    same = [interleaving_experiment(good, good, future, 200, rng) for _ in range(20)]
    assert same.count(MORE_TRAFFIC) >= 17  # identical lists: no votes differ, at most chance decisions
    curve = power_curve(bad, good, future, (20, 200), repeats=10, seed=0)
    assert curve["ab"][200][WINS] == 1.0 and sessions_needed(curve["interleaving"], WINS, 0.9) in (20, 200)
    assert sessions_needed({10: {WINS: 0.5}}, WINS, 0.9) is None


def test_the_like_rate_per_model_credits_each_shown_slot_to_the_model_that_placed_it() -> None:
    served = _served(
        [
            ("u1", ["a", "b"], None, None, 0),  # outside an experiment: the champion's
            (
                "u2",
                ["a", "b", "c", "d"],
                INTERLEAVE,
                [CHAMPION_ARM, CHALLENGER_ARM, CHALLENGER_ARM, CHAMPION_ARM],
                0,
            ),
            ("u3", ["e", "f"], CHALLENGER_ARM, None, 0),
            ("u4", ["x", "y"], SHADOW, None, 0),  # never shown: neither its items nor their likes count
        ]
    )
    events = _events(
        [
            ("u1", "a", "like", 5),
            ("u2", "b", "like", 5),  # the challenger's slot
            ("u2", "c", "play", 5),  # a play is not a like
            ("u3", "e", "like", 5),
            ("u3", "f", "like", 60 * 30),  # beyond the horizon: no list explains it
            ("u4", "x", "like", 5),
        ]
    )
    rates = like_rate_by_model(served, events, HOUR)
    # champion: u1's 2 + u2's 2 slots, 1 like; challenger: u2's 2 slots + u3's 2 items, 2 likes.
    assert rates == {CHAMPION_ARM: pytest.approx(1 / 4), CHALLENGER_ARM: pytest.approx(2 / 4)}
    assert like_rate_by_model(served.iloc[:0], events, HOUR) == {}


def test_traffic_picks_the_listeners_an_interleaving_or_shadow_experiment_runs_for() -> None:
    users = [f"listener-{n}" for n in range(2000)]
    part = Experiment(mode="interleave", challenger="m:1", salt="s", traffic=0.25)
    taking = [user for user in users if part.takes_part(user)]
    assert 0.2 < len(taking) / len(users) < 0.3
    assert taking == [user for user in users if bucket(user, "s") < 0.25]  # sticky: the salted bucket
    assert all(Experiment(mode="shadow", challenger="m:1").takes_part(user) for user in users[:50])
    # Under A/B every listener takes part: the share picks the arm, not who is in the experiment.
    assert all(
        Experiment(mode="ab", challenger="m:1", share=0.5, traffic=0.1).takes_part(u) for u in users[:50]
    )
    with pytest.raises(ValueError, match="traffic"):
        Experiment(mode="interleave", challenger="m:1", traffic=0.0)
