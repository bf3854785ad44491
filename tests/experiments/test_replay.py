"""Off-policy replay checked against a known truth: simulated listeners with known like probabilities meet an
exploring champion (the service's own :func:`recsys.serving.exploration.explore`), and the replay of the
logged lists estimates challengers whose true like rate is computed exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.columns import Col
from recsys.experiments.replay import MIN_SUPPORT, exploration_outcome, replay, replayable
from recsys.feedback.tables import Served
from recsys.serving.exploration import explore

USERS, ITEMS, K, DEPTH, SESSIONS = 300, 120, 10, 40, 3
HORIZON = pd.Timedelta(hours=1)
START = pd.Timestamp("2026-12-01", tz="UTC")
Policy = Callable[[np.ndarray], list[int]]


class World:
    """Listeners' true like probabilities and the champion's scores (a noisy view of them)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        taste = rng.normal(size=(USERS, 4)) @ rng.normal(size=(4, ITEMS))
        popularity = np.linspace(1.5, -1.5, ITEMS)  # item 0 the most popular
        self.like = 1 / (1 + np.exp(-(taste + popularity - 1.5)))
        self.scores = taste + popularity + rng.normal(scale=1.0, size=(USERS, ITEMS))
        self.tail = np.arange(ITEMS) >= 30
        self.order = np.argsort(-self.scores, axis=1)

    def log(self, share: float, slots: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Every listener's ``SESSIONS`` lists from the exploring champion and their likes."""
        rng = np.random.default_rng(seed)
        lists, events = [], []
        for session in range(SESSIONS):
            for user in range(USERS):
                ranked = self.order[user, :DEPTH]
                shown, candidates = ranked[:K], ranked[K:]
                pool = candidates[self.tail[candidates]]
                out = explore(shown, shown * 0.0, pool, pool * 0.0, share=share, slots=slots,
                              draw=rng.random(), rng=rng)  # fmt: skip
                at = START + pd.Timedelta(minutes=10 * session) + pd.Timedelta(milliseconds=user)
                lists.append(
                    {
                        Served.SERVED_AT: at,
                        Served.USER: f"u{user}",
                        Served.ENDPOINT: "recommend",
                        Served.ARM: None,
                        Served.ITEMS: [f"i{i}" for i in out.indices.tolist()],
                        Served.PROPENSITIES: list(out.propensities),
                        Served.EXPLORED: list(out.explored),
                        Served.CREDITS: None,
                    }
                )
                for item in out.indices.tolist():
                    if rng.random() < self.like[user, item]:
                        events.append(
                            {
                                Col.USER: f"u{user}",
                                Col.ITEM: f"i{item}",
                                Col.EVENT: "like",
                                Col.TIMESTAMP: at + pd.Timedelta(seconds=5),
                            }
                        )
        return pd.DataFrame(lists), pd.DataFrame(events)

    def truth(self, policy: Policy) -> float:
        """The policy's expected like rate: the like probability of its items, every slot weighing alike."""
        chosen = [(u, i) for u in range(USERS) for i in self._list(policy, u)]
        return float(np.mean([self.like[u, i] for u, i in chosen]))

    def _list(self, policy: Policy, user: int) -> list[int]:
        return policy(self.order[user])

    def lists(self, policy: Policy) -> dict[tuple[str, int], list[str]]:
        """The policy's list of each listener, keyed as the replay asks: ``(user, logged list length)``."""
        return {(f"u{u}", K): [f"i{i}" for i in self._list(policy, u)] for u in range(USERS)}


def champion(order: np.ndarray) -> list[int]:
    return order[:K].tolist()


def tail_first(order: np.ndarray) -> list[int]:
    """The champion's top five, then the long-tail artists among its best ``DEPTH``: fully supported when the
    logging policy explores five slots."""
    top = order[:DEPTH]
    tail = [int(i) for i in top[5:] if i >= 30]
    return (top[:5].tolist() + tail)[:K]


def popular(order: np.ndarray) -> list[int]:
    """The ten most popular artists the listener's champion list does not show: little support."""
    return [i for i in range(ITEMS) if i not in set(order[:K].tolist())][:K]


def _covered(estimate: dict[str, Any], truth: float, width: float = 1.0) -> bool:
    half = width * (estimate["high"] - estimate["low"]) / 2
    return bool(estimate["value"] - half <= truth <= estimate["value"] + half)


def test_the_replay_of_a_supported_challenger_covers_its_true_like_rate() -> None:
    world = World(seed=1)
    served, events = world.log(share=0.5, slots=5, seed=2)
    for policy in (champion, tail_first):
        truth = world.truth(policy)
        estimate = replay(served, events, world.lists(policy), HORIZON)
        assert estimate["support"] == pytest.approx(1.0, abs=0.05), policy.__name__
        assert "warning" not in estimate and estimate["lists"] == USERS * SESSIONS
        assert estimate["listeners"] == USERS and estimate["ips"]["units"] == USERS
        # 99.7 % intervals (3 se) so that the fixed seed is not a 5 % coin toss; coverage is below.
        for name in ("ips", "snips"):
            assert _covered(estimate[name], truth, width=1.5), (policy.__name__, name, estimate[name], truth)


def test_replay_intervals_cover_the_truth_at_about_their_level() -> None:
    """Over 30 independent logs, the 95 % IPS and SNIPS intervals of a supported challenger hold its true
    like rate at least 80 % of the time (the binomial 1 % quantile of 30 draws at 0.95 is 25)."""
    world = World(seed=3)
    truth = world.truth(tail_first)
    covered = {"ips": 0, "snips": 0}
    for seed in range(30):
        served, events = world.log(share=0.5, slots=5, seed=100 + seed)
        estimate = replay(served, events, world.lists(tail_first), HORIZON)
        for name in covered:
            covered[name] += _covered(estimate[name], truth)
    assert covered["ips"] >= 24 and covered["snips"] >= 24, covered


def test_a_challenger_the_log_cannot_show_is_flagged_not_trusted() -> None:
    world = World(seed=4)
    served, events = world.log(share=0.1, slots=1, seed=5)
    estimate = replay(served, events, world.lists(popular), HORIZON)
    true_support = np.mean(
        [
            np.mean([i >= 30 and i in world.order[u, K:DEPTH] for i in popular(world.order[u])])
            for u in range(USERS)
        ]
    )
    assert estimate["support"] == pytest.approx(true_support, abs=0.02) and estimate["support"] < MIN_SUPPORT
    assert "warning" in estimate and estimate["ips"]["value"] < world.truth(popular)


def test_only_shown_lists_with_propensities_are_replayed_and_exploration_is_summarised() -> None:
    world = World(seed=6)
    served, events = world.log(share=0.5, slots=1, seed=7)
    extra = served.iloc[:3].copy()
    extra[Served.ARM] = ["shadow", "interleave", None]
    extra[Served.PROPENSITIES] = [extra.iloc[0][Served.PROPENSITIES]] * 2 + [None]
    assert len(replayable(pd.concat([served, extra], ignore_index=True))) == len(served)
    outcome = exploration_outcome(served, events, HORIZON)
    assert outcome["lists"] == len(served)
    assert outcome["list_share"] == pytest.approx(0.5, abs=0.05)
    assert outcome["slot_share"] == pytest.approx(outcome["list_share"] / K)
    model_slots = [
        (u, item)
        for u, items, explored in zip(
            served[Served.USER], served[Served.ITEMS], served[Served.EXPLORED], strict=True
        )
        for place, item in enumerate(items)
        if place not in explored
    ]
    expected = np.mean([world.like[int(u[1:]), int(i[1:])] for u, i in model_slots])
    assert outcome["model_like_rate"]["value"] == pytest.approx(expected, abs=0.02)
    assert outcome["explored_like_rate"]["units"] > 0
    assert exploration_outcome(served.assign(**{Served.PROPENSITIES: None}), events, HORIZON) == {"lists": 0}


def test_a_like_belongs_to_the_latest_list_that_showed_it_even_one_the_replay_cannot_use() -> None:
    """An explored artist shown again by a later interleaved list: the like is that list's, so it is never
    weighed by the explored showing's 1 / p (which once gave an IPS of 500)."""
    base = {Served.USER: "u", Served.ENDPOINT: "recommend", Served.CREDITS: None}
    served = pd.DataFrame(
        [
            base | {Served.SERVED_AT: START, Served.ARM: None, Served.ITEMS: ["a", "j"],
                    Served.PROPENSITIES: [1.0, 0.001], Served.EXPLORED: [1]},
            base | {Served.SERVED_AT: START + pd.Timedelta(minutes=1), Served.ARM: "interleave",
                    Served.ITEMS: ["j", "b"], Served.PROPENSITIES: None, Served.EXPLORED: None},
        ]
    )  # fmt: skip
    like = {Col.USER: "u", Col.ITEM: "j", Col.EVENT: "like", Col.TIMESTAMP: START + pd.Timedelta(minutes=2)}
    estimate = replay(served, pd.DataFrame([like]), {("u", 2): ["a", "j"]}, HORIZON)
    assert estimate["lists"] == 1 and estimate["ips"]["value"] == 0.0
    assert estimate["served_like_rate"]["value"] == 0.0
    assert exploration_outcome(served, pd.DataFrame([like]), HORIZON)["explored_like_rate"]["value"] == 0.0
    earlier = like | {Col.TIMESTAMP: START + pd.Timedelta(seconds=30)}  # before the interleaved list
    assert replay(served, pd.DataFrame([earlier]), {("u", 2): ["a", "j"]}, HORIZON)["ips"]["value"] == 500.0
