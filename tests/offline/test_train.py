from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import LightFMParams, Params, SearchParams
from recsys.offline.train import (
    Trial,
    best_trial,
    fit_baselines,
    parse_metric,
    refit,
    run_trial,
    sample_configurations,
    validation_scorer,
)


def block_matrix(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Two taste blocks: users 0-19 like items 0-9, users 20-39 like items 10-19; 2 held out each."""
    rng = np.random.default_rng(seed)
    train, valid = np.zeros((40, 20), np.float32), np.zeros((40, 20), np.float32)
    for user in range(40):
        liked = rng.permutation(np.arange(10) + (10 if user >= 20 else 0))
        train[user, liked[:6]] = 1.0
        valid[user, liked[6:8]] = 1.0
    return sp.csr_matrix(train), sp.csr_matrix(valid)


def test_parse_metric() -> None:
    assert parse_metric("ndcg@10") == ("ndcg", 10)
    with pytest.raises(ValueError, match="ndcg@10"):
        parse_metric("ndcg")


def test_sample_configurations_starts_with_base_and_is_seeded() -> None:
    base = LightFMParams()
    search = SearchParams(n_trials=4, space={"no_components": [8, 16, 32], "learning_rate": [0.01, 0.1]})
    first = sample_configurations(base, search, seed=1)
    assert first[0] == base
    assert len(first) == 4 and len(set(map(str, first))) == 4
    assert first == sample_configurations(base, search, seed=1)
    assert first != sample_configurations(base, search, seed=2)


def test_sample_configurations_stops_when_grid_is_exhausted() -> None:
    search = SearchParams(n_trials=10, space={"no_components": [8, 16]})
    configs = sample_configurations(LightFMParams(no_components=8), search, seed=0)
    assert [c.no_components for c in configs] == [8, 16]


def test_best_trial_prefers_higher_score_then_earlier() -> None:
    trials = [Trial(i, {}, score, 1, 0.0, 0.0) for i, score in enumerate([0.1, 0.3, 0.3, float("nan")])]
    assert best_trial(trials).number == 1
    with pytest.raises(ValueError, match="finite"):
        best_trial([Trial(0, {}, float("nan"), 1, 0.0, 0.0)])


def test_validation_scorer_rewards_the_structure() -> None:
    train, valid = block_matrix()
    params = LightFMParams(no_components=8, epochs=30, learning_rate=0.1)
    trial = run_trial(0, params, train, valid, None, "ndcg@5", seed=3, num_threads=1)
    assert trial.score > 0.3  # random ranking of 14 candidates with 2 relevant gives about 0.2
    model = refit(trial, train + valid, None, seed=3, num_threads=1)
    assert model.epochs_trained == trial.best_epoch
    scorer = validation_scorer(train, valid, "precision@5")
    assert 0.0 <= scorer(model) <= 1.0


def test_fit_baselines_names() -> None:
    train, _ = block_matrix()
    models = fit_baselines(train, Params())
    assert sorted(models) == ["ease", "itemknn", "most_popular"]
    assert all(model.score(np.array([0, 25])).shape == (2, 20) for model in models.values())
