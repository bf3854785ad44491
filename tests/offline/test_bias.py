"""Popularity-bias mitigation: the re-ranking trade-off curve and the choice of the default strength."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.config import EvaluateParams, Params
from recsys.offline.bias import (
    LIFT,
    NDCG_COST,
    STRENGTH,
    bias_report,
    choose_strength,
    group_popularity_lift,
    served_candidate,
    served_strength,
    tradeoff_curve,
)
from recsys.offline.evaluation import evaluate
from recsys.offline.popularity import item_popularity, mainstreaminess, reranked_scores, user_groups

N_USERS, N_ITEMS, K = 60, 40, 10
PARAMS = EvaluateParams(ks=(5, K), primary_k=K)


def _interactions(seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Listening skewed towards low item indices (popular head), split into train and test at random."""
    rng = np.random.default_rng(seed)
    appeal = np.linspace(0.9, 0.05, N_ITEMS)
    listened = rng.random((N_USERS, N_ITEMS)) < appeal[None, :] * rng.uniform(0.3, 1.0, (N_USERS, 1))
    held_out = listened & (rng.random(listened.shape) < 0.25)
    return sp.csr_matrix((listened & ~held_out).astype(float)), sp.csr_matrix(held_out.astype(float))


TRAIN, TEST = _interactions(0)
POPULARITY = item_popularity(TRAIN)
GROUPS = user_groups(mainstreaminess(TRAIN), ("niche", "medium", "mainstream"))


def _popularity_loving_scores(users: np.ndarray) -> np.ndarray:
    """A model that mostly follows popularity, with distinct per-user noise (no ties)."""
    noise = np.random.default_rng(7).random((N_USERS, N_ITEMS))
    return (np.log1p(POPULARITY)[None, :] + noise)[users]


def test_strength_zero_equals_the_unmitigated_metrics() -> None:
    curve = tradeoff_curve(_popularity_loving_scores, TRAIN, TEST, POPULARITY, [0.5, 0.0], PARAMS, GROUPS)
    plain = evaluate(_popularity_loving_scores, TRAIN, TEST, PARAMS, GROUPS)
    base = curve.iloc[0]
    assert curve[STRENGTH].tolist() == [0.0, 0.5]
    for key in (f"ndcg@{K}", f"arp@{K}", f"long_tail_share@{K}", f"coverage@{K}", "auc"):
        assert base[key] == pytest.approx(plain.metrics[key]), key
    for name, values in plain.groups.items():
        assert base[f"ndcg@{K}/{name}"] == pytest.approx(values[f"ndcg@{K}"]), name
    assert base[NDCG_COST] == 0.0


def test_higher_strength_lowers_popularity_of_recommendations() -> None:
    strengths = [0.0, 0.5, 1.0, 3.0]
    curve = tradeoff_curve(_popularity_loving_scores, TRAIN, TEST, POPULARITY, strengths, PARAMS, GROUPS)
    arp = curve[f"arp@{K}"].to_numpy()
    assert np.all(np.diff(arp) <= 0) and arp[-1] < arp[0]
    assert curve[f"long_tail_share@{K}"].iloc[-1] > curve[f"long_tail_share@{K}"].iloc[0]
    assert curve[LIFT].iloc[-1] < curve[LIFT].iloc[0]
    for name in GROUPS:
        assert curve[f"{LIFT}/{name}"].iloc[-1] < curve[f"{LIFT}/{name}"].iloc[0], name


def test_group_popularity_lift_compares_recommendations_with_own_listening() -> None:
    # popularity = [2, 1, 1]; user 0 listens to items 0 and 2 (mean 1.5), user 1 to items 0 and 1.
    train = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 0]], dtype=float))
    lift = group_popularity_lift(
        np.array([[0, -1], [1, 2]]), train, np.array([0, 1]), {"a": np.array([0]), "b": np.array([1])}
    )
    assert lift == pytest.approx({"overall": (2 / 1.5 + 1 / 1.5) / 2, "a": 2 / 1.5, "b": 1 / 1.5})


def _curve(ndcg: list[float], long_tail: list[float]) -> pd.DataFrame:
    strengths = [0.0, 0.1, 0.2, 0.3][: len(ndcg)]
    return pd.DataFrame({STRENGTH: strengths, f"ndcg@{K}": ndcg, f"long_tail_share@{K}": long_tail})


def test_choose_strength_takes_the_largest_long_tail_share_within_the_cost() -> None:
    # Costs: 0, 0.02, 0.03 (exactly the budget), 0.10.
    curve = _curve([0.20, 0.196, 0.194, 0.18], [0.50, 0.60, 0.65, 0.90])
    strength, row = choose_strength(curve, 0.03, k=K)
    assert strength == 0.2
    assert row[NDCG_COST] == pytest.approx(0.03) and row[f"long_tail_share@{K}"] == 0.65


def test_choose_strength_falls_back_to_zero_when_nothing_qualifies() -> None:
    curve = _curve([0.20, 0.15, 0.10], [0.5, 0.7, 0.9])
    strength, row = choose_strength(curve, 0.03, k=K)
    assert strength == 0.0 and row[NDCG_COST] == 0.0


def test_choose_strength_prefers_the_smaller_strength_on_a_tie_and_needs_strength_zero() -> None:
    strength, _ = choose_strength(_curve([0.20, 0.20, 0.20], [0.5, 0.7, 0.7]), 0.03, k=K)
    assert strength == 0.1
    with pytest.raises(ValueError, match="strength-0"):
        choose_strength(_curve([0.20, 0.19], [0.5, 0.6]).iloc[1:], 0.03, k=K)


def test_a_model_that_finds_nothing_is_served_unmitigated_instead_of_failing_the_stage() -> None:
    # Found by the newcomer test: the songs trained for seconds score nDCG 0 at every strength.
    strength, row = choose_strength(_curve([0.0, 0.0, 0.0], [0.5, 0.7, 0.9]), 0.03, k=K)
    assert strength == 0.0 and row[NDCG_COST] == 0.0
    curve = _curve([0.0, 0.0], [0.5, 0.7]).assign(**{f"arp@{K}": [10.0, 8.0]})
    assert json.loads(json.dumps(bias_report(curve, 0.03, K)))["chosen"][STRENGTH] == 0.0


def test_bias_report_is_plain_json_with_the_chosen_row() -> None:
    curve = _curve([0.20, 0.198], [0.5, 0.6]).assign(**{f"arp@{K}": [10.0, np.nan]})
    curve[NDCG_COST] = [0.0, 0.01]
    report = bias_report(curve, 0.03, K)
    decoded = json.loads(json.dumps(report, allow_nan=False))
    assert decoded["chosen"][STRENGTH] == 0.1 and decoded["chosen"][f"arp@{K}"] is None
    assert [row[STRENGTH] for row in decoded["strengths"]] == [0.0, 0.1]
    assert "3.0%" in decoded["rule"]


def test_the_gate_input_at_the_served_strength_is_what_the_service_would_rank() -> None:
    curve = tradeoff_curve(_popularity_loving_scores, TRAIN, TEST, POPULARITY, [0.0, 0.5], PARAMS, GROUPS)
    report = json.loads(json.dumps(bias_report(curve, 0.03, K)))  # as read back from metrics/bias.json
    plain = evaluate(_popularity_loving_scores, TRAIN, TEST, PARAMS, GROUPS)
    unmitigated = {"metrics": dict(plain.metrics), "groups": plain.groups}

    served = served_candidate(unmitigated, report, 0.5)
    # The same numbers as evaluating the served ranking itself (the offline formula the service applies).
    reranked = evaluate(
        reranked_scores(_popularity_loving_scores, POPULARITY, 0.5), TRAIN, TEST, PARAMS, GROUPS
    )
    assert served["bias_strength"] == 0.5
    for key in (f"ndcg@{K}", f"recall@{K}", f"arp@{K}", f"coverage@{K}", "map@5"):
        assert served["metrics"][key] == pytest.approx(reranked.metrics[key]), key
    assert served["metrics"][f"arp@{K}"] < unmitigated["metrics"][f"arp@{K}"]
    for name, values in reranked.groups.items():
        assert served["groups"][name][f"ndcg@{K}"] == pytest.approx(values[f"ndcg@{K}"]), name

    assert served_candidate(unmitigated, report, 0.0) == unmitigated | {"bias_strength": 0.0}
    with pytest.raises(ValueError, match=r"no row at strength 0\.3"):
        served_candidate(unmitigated, report, 0.3)
    assert served_strength(report, "chosen") == report["chosen"][STRENGTH]
    assert served_strength(report | {"chosen": {STRENGTH: 0.5}}, "off") == 0.0


@pytest.mark.slow
@pytest.mark.realdata
def test_real_hybrid_tradeoff_curve(prepared_real: Path, tmp_path: Path) -> None:
    from recsys import stages
    from recsys.models import LightFMRecommender

    params = Params()
    stages.features(params, prepared_real, tmp_path / "features")
    stages.split(params, prepared_real, tmp_path / "split")
    loaded, item_features = stages.training_inputs(tmp_path / "features", tmp_path / "split")
    lightfm = params.train.lightfm.model_copy(update={"epochs": 15})
    model = LightFMRecommender(lightfm, seed=params.seed, num_threads=params.train.num_threads)
    model.fit(loaded.train_full, item_features.matrix)
    groups = user_groups(mainstreaminess(loaded.train_full), params.evaluate.groups)
    popularity = item_popularity(loaded.train_full)
    curve = tradeoff_curve(
        model.score,
        loaded.train_full,
        loaded.test,
        popularity,
        [0.0, 0.05, 0.2, 0.5],
        params.evaluate,
        groups,
    )
    k = params.evaluate.primary_k
    arp = curve[f"arp@{k}"].to_numpy()
    # Monotone up to a small tolerance: re-ranking may reorder a few near-tied lists the other way.
    assert np.all(arp[1:] <= arp[:-1] * 1.02) and arp[-1] < 0.5 * arp[0]
    assert curve[f"long_tail_share@{k}"].iloc[-1] > curve[f"long_tail_share@{k}"].iloc[0]
    assert curve[f"ndcg@{k}"].iloc[0] > 0.05  # a trained model, so the relative cost means something
    strength, row = choose_strength(curve, params.bias.max_ndcg_cost, k)
    assert strength in curve[STRENGTH].tolist()
    assert row[NDCG_COST] <= params.bias.max_ndcg_cost + 1e-12
