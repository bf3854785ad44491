"""Calibrated re-ranking and the served-mitigation rule: the greedy list, its measurement through the
offline protocol, and which mitigation the rule serves and why."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.offline.calibration import (
    Calibrated,
    Categories,
    calibrate,
    calibrated_lists,
    kl,
    measure,
    summary,
    tuning_half,
)
from recsys.offline.mitigation import CALIBRATION, NONE, POPULARITY, choose, mitigation_report

N_ITEMS, N_USERS = 40, 60


def _world(seed: int = 0) -> tuple[Categories, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Two genres; half the listeners like genre A, the others B; a model that scores genre A higher for
    everyone (as a popularity-biased model would the head)."""
    rng = np.random.default_rng(seed)
    genre = (np.arange(N_ITEMS) >= N_ITEMS // 2).astype(int)  # 0: A, 1: B
    genres = np.eye(2, dtype=np.float32)[genre]
    cats = Categories(genres, np.zeros(N_ITEMS, dtype=np.int64), ("genre:a", "genre:b"))
    train, test = np.zeros((N_USERS, N_ITEMS)), np.zeros((N_USERS, N_ITEMS))
    for user in range(N_USERS):
        home = np.flatnonzero(genre == user % 2)
        picked = rng.choice(home, size=10, replace=False)
        train[user, picked[:6]], test[user, picked[6:]] = 1, 1
    scores = np.where(genre == 0, 1.0, 0.4)[np.newaxis, :] + 0.1 * rng.random((N_USERS, N_ITEMS))
    return cats, sp.csr_matrix(train), sp.csr_matrix(test), scores


def test_kl_is_zero_for_the_same_mix_and_grows_with_the_difference() -> None:
    target = np.array([0.7, 0.3])
    assert kl(target, target) == pytest.approx(0.0, abs=1e-9)
    assert 0 < kl(target, np.array([0.5, 0.5])) < kl(target, np.array([1.0, 0.0]))
    assert kl(np.zeros(2), np.array([1.0, 0.0])) == 0.0  # no target: nothing to match


def test_calibration_follows_the_listeners_own_mix_and_strength_zero_is_the_models_order() -> None:
    cats, train, _, scores = _world()
    user = 1  # a genre-B listener whom the model offers genre A first
    history = train.indices[train.indptr[user] : train.indptr[user + 1]]
    candidates = np.argsort(-scores[user])[:30]  # every genre-A item, then the best of genre B
    plain = calibrate(candidates, scores[user][candidates], cats, cats.target(history), 0.0, 10)
    assert plain.tolist() == candidates[:10].tolist()
    calibrated = calibrate(candidates, scores[user][candidates], cats, cats.target(history), 0.9, 10)
    target = cats.target(history)
    assert cats.miscalibration(target, calibrated) < cats.miscalibration(target, plain)
    assert (cats.genres[calibrated, 1] > 0).sum() > (cats.genres[plain, 1] > 0).sum()
    assert len(set(calibrated.tolist())) == 10 and set(calibrated.tolist()) <= set(candidates.tolist())


def test_the_calibrated_score_function_ranks_the_calibrated_lists() -> None:
    cats, train, _, scores = _world()
    setting = Calibrated(0.7, candidates=20, genres=2)
    served = setting.score_fn(lambda users: scores[users], train, cats, depth=10)
    users = np.arange(N_USERS)
    expected = calibrated_lists(lambda u: scores[u], train, users, cats, [0.7], 10, n_candidates=20)[0.7]
    ranked = np.argsort(-np.where(train.toarray() > 0, -np.inf, served(users)), axis=1)[:, :10]
    np.testing.assert_array_equal(ranked, expected)
    assert Calibrated.from_metadata(setting.metadata()) == setting
    assert Calibrated.from_metadata({"strength": 0.0}) is None and Calibrated.from_metadata(None) is None


def test_calibration_serves_the_minority_listeners_better_here() -> None:
    cats, train, test, scores = _world()
    params = EvaluateParams(ks=[5, 10], primary_k=10)
    groups = {"niche": np.arange(1, N_USERS, 2), "mainstream": np.arange(0, N_USERS, 2)}
    plain = measure(lambda u: scores[u], train, test, params, groups, cats)
    setting = Calibrated(0.9, candidates=40, genres=2)
    calibrated = measure(
        setting.score_fn(lambda u: scores[u], train, cats, 10), train, test, params, groups, cats
    )
    everyone = np.ones(len(plain.users), dtype=bool)
    before, after = summary(plain, everyone, groups, 10), summary(calibrated, everyone, groups, 10)
    assert after["miscalibration"] < before["miscalibration"]
    assert after["ndcg@10/niche"] > before["ndcg@10/niche"] and after["niche_ratio"] > before["niche_ratio"]


def test_the_rule_serves_what_narrows_the_gap_within_the_cost_and_says_why() -> None:
    cats, train, test, scores = _world()
    params = EvaluateParams(ks=[10], primary_k=10)
    groups = {"niche": np.arange(1, N_USERS, 2), "mainstream": np.arange(0, N_USERS, 2)}

    def way(fn: object) -> object:
        return measure(fn, train, test, params, groups, cats)  # type: ignore[arg-type]

    measured = {
        (NONE, 0.0): way(lambda u: scores[u]),
        (POPULARITY, 0.5): way(lambda u: scores[u] + np.where(np.arange(N_ITEMS) < 20, 0.5, 0.0)),
        (CALIBRATION, 0.5): way(Calibrated(0.5, 40, 2).score_fn(lambda u: scores[u], train, cats, 10)),
        (CALIBRATION, 0.9): way(Calibrated(0.9, 40, 2).score_fn(lambda u: scores[u], train, cats, 10)),
    }
    tuning = tuning_half(measured[(NONE, 0.0)].users, seed=0)
    assert tuning.sum() == len(tuning) // 2
    report = mitigation_report(measured, tuning, groups, 10, max_cost=0.5)
    assert report["mitigation"]["served"] == CALIBRATION
    assert report["calibration"]["chosen"] in (0.5, 0.9)
    assert "popularity at 0.5" in report["mitigation"]["why"] and "(served)" in report["mitigation"]["why"]
    verdicts = dict(part.split(": ", 1) for part in report["mitigation"]["why"].rstrip(".").split("; "))
    assert "(not served: " in verdicts["popularity at 0.5"] and "(not served: " in verdicts["none"]
    strict = mitigation_report(measured, tuning, groups, 10, max_cost=0.0, calibration_measurable=False)
    assert strict["mitigation"]["served"] == NONE and "served_metrics" not in strict["mitigation"]
    rows = [{"ndcg@10": 0.3, "ndcg@10/niche": 0.1, "niche_ratio": 0.3, "miscalibration": 1.0}]
    assert choose(rows, rows[0], 0.02, 10) == 0  # the unmitigated model is always eligible


def test_the_gate_measures_what_the_rule_serves() -> None:
    from recsys.offline.bias import served_calibration, served_candidate, served_strength

    setting = {"strength": 0.2, "candidates": 100, "genres": 30, "tier_weight": 0.0}
    measured = {"metrics": {"ndcg@10": 0.249}, "groups": {"niche": {"ndcg@10": 0.159}}}
    bias = {
        "chosen": {"strength": 0.1},
        "strengths": [{"strength": 0.1, "ndcg@10": 0.246}],
        "mitigation": {
            "served": CALIBRATION,
            "strength": 0.2,
            "calibration": setting,
            "served_metrics": measured,
        },
    }
    plain = {"metrics": {"ndcg@10": 0.25}, "groups": {}}
    assert served_strength(bias, "chosen") == 0.0 and served_calibration(bias, "chosen") == setting
    assert served_calibration(bias, "off") is None and served_strength(bias, "off") == 0.0
    candidate = served_candidate(plain, bias, 0.0, served_calibration(bias, "chosen"))
    assert candidate["metrics"] == measured["metrics"] and candidate["calibration"] == setting
    assert candidate["bias_strength"] == 0.0
    popular = {**bias, "mitigation": {"served": POPULARITY, "strength": 0.1}}
    assert served_strength(popular, "chosen") == 0.1 and served_calibration(popular, "chosen") is None
    older = {"chosen": {"strength": 0.1}}  # a report written before the rule: its popularity strength
    assert served_strength(older, "chosen") == 0.1 and served_calibration(older, "chosen") is None
