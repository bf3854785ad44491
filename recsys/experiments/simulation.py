"""How many listening sessions an A/B test and an interleaving test need to pick the better model.

Simulated listeners are real listeners whose held-out future (the test split) is the ground truth. One
session: a listener drawn at random is shown ``k`` items, examines position ``r`` (1-based) with
probability ``1 / log2(r + 1)`` (people look at the top of a list more) and likes every examined item of
their future. An A/B session shows one arm's list (the listener's sticky arm) and counts a hit when
anything is liked; an interleaving session shows the team-drafted list and credits each like to the model
that drafted the item (:func:`recsys.experiments.design.team_draft`).

An experiment of ``n`` sessions ends with the project's own decision rules
(:func:`recsys.experiments.report.decide`: the A/B difference's 95 % interval, the interleaving sign
test at 5 %). Repeated ``repeats`` times per ``n``, it gives the share of experiments that reach the right
decision, the wrong one, or none; :func:`sessions_needed` is the smallest ``n`` that is right in at least
``power`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from recsys.experiments.design import CHALLENGER_ARM, CHAMPION_ARM, team_draft
from recsys.experiments.report import LOSES, MORE_TRAFFIC, WINS, decide, difference, ratio_estimate

Lists = Sequence[Sequence[int]]


def examined(k: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, k)`` booleans: whether each position is looked at (probability ``1 / log2(rank + 1)``)."""
    return rng.random((size, k)) < 1.0 / np.log2(np.arange(2, k + 2))


def ab_experiment(
    champion: Lists, challenger: Lists, future: Sequence[set[int]], sessions: int, rng: np.random.Generator
) -> str:
    """One A/B test of ``sessions`` sessions (half each arm, by a fair coin): its decision on the hit rate."""
    k = len(champion[0])
    users = rng.integers(len(future), size=sessions)
    arms = rng.random(sessions) < 0.5
    looked = examined(k, rng, sessions)
    hits = np.zeros(sessions)
    for s, (user, ours) in enumerate(zip(users, arms, strict=True)):
        shown = (challenger if ours else champion)[user]
        hits[s] = any(looked[s, r] and item in future[user] for r, item in enumerate(shown))
    ones = np.ones(sessions)
    a = ratio_estimate(hits[arms], ones[arms])
    b = ratio_estimate(hits[~arms], ones[~arms])
    return decide(difference(a, b))


def interleaving_experiment(
    champion: Lists, challenger: Lists, future: Sequence[set[int]], sessions: int, rng: np.random.Generator
) -> str:
    """One interleaving test of ``sessions`` sessions: its sign-test decision."""
    k = len(champion[0])
    users = rng.integers(len(future), size=sessions)
    looked = examined(k, rng, sessions)
    seeds = rng.integers(2**31, size=sessions)
    wins = losses = 0
    for s, user in enumerate(users):
        votes = {CHAMPION_ARM: 0, CHALLENGER_ARM: 0}
        for r, (item, team) in enumerate(team_draft(champion[user], challenger[user], k, int(seeds[s]))):
            if looked[s, r] and item in future[user]:
                votes[team] += 1
        wins += votes[CHALLENGER_ARM] > votes[CHAMPION_ARM]
        losses += votes[CHALLENGER_ARM] < votes[CHAMPION_ARM]
    decided = wins + losses
    p_value = float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return decide({"lists_with_votes": decided, "p_value": p_value, "wins": wins, "losses": losses})


def power_curve(
    champion: Lists,
    challenger: Lists,
    future: Sequence[set[int]],
    sessions: Sequence[int],
    repeats: int,
    seed: int,
) -> dict[str, dict[int, dict[str, float]]]:
    """Per method and number of sessions: the shares of repeated experiments that decided each way."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for method, run in (("ab", ab_experiment), ("interleaving", interleaving_experiment)):
        rng = np.random.default_rng(seed)
        out[method] = {}
        for n in sessions:
            decisions = [run(champion, challenger, future, n, rng) for _ in range(repeats)]
            out[method][n] = {d: decisions.count(d) / repeats for d in (WINS, LOSES, MORE_TRAFFIC)}
    return out


def sessions_needed(curve: dict[int, dict[str, float]], right: str, power: float) -> int | None:
    """The fewest sessions whose experiments reached the ``right`` decision at least ``power`` of the time."""
    return next((n for n in sorted(curve) if curve[n][right] >= power), None)


def true_effect(champion: Lists, challenger: Lists, future: Sequence[set[int]]) -> dict[str, Any]:
    """Each model's expected hit rate under the click model (examination probabilities, no sampling)."""
    k = len(champion[0])
    look = 1.0 / np.log2(np.arange(2, k + 2))

    def expected(lists: Lists) -> float:
        misses = [
            np.prod([1 - look[r] for r, i in enumerate(items) if i in future[u]])
            for u, items in enumerate(lists)
        ]
        return float(1 - np.mean(misses))

    return {CHAMPION_ARM: expected(champion), CHALLENGER_ARM: expected(challenger)}
