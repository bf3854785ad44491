"""The tuning experiment: seeded configurations, trials with early stopping, and the winners as settings."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config import LightFMParams, Params, SearchParams
from recsys.models import LightFMRecommender
from recsys.offline.tune import (
    Trial,
    best_trial,
    competitor_specs,
    parse_metric,
    run_trial,
    sample_configurations,
    search_specs,
    tuned_params,
    validation_scorer,
)
from recsys.specs import CF, HYBRID
from tests.offline.test_train import block_matrix


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
    final = params.model_copy(update={"epochs": trial.best_epoch})
    model = LightFMRecommender(final, seed=3, num_threads=1).fit(train + valid)
    assert model.epochs_trained == trial.best_epoch
    scorer = validation_scorer(train, valid, "precision@5")
    assert 0.0 <= scorer(model) <= 1.0


def test_the_search_runs_the_hybrid_configurations_then_the_cf_each_capped_at_max_epochs() -> None:
    train, valid = block_matrix()
    settings = Params().model_dump()
    settings["train"]["search"] = {"n_trials": 3, "max_epochs": 7, "space": {"no_components": [4, 8, 16]}}
    specs = search_specs(Params.model_validate(settings), train, valid, None, num_threads=1)
    assert [spec.model for spec in specs] == [HYBRID, HYBRID, HYBRID, CF]
    assert [spec.number for spec in specs] == [0, 1, 2, 3]
    assert {spec.config.epochs for spec in specs} == {7}
    assert (
        specs[-1].item_features is None
        and specs[-1].config.no_components == Params().train.lightfm_cf.no_components
    )


def test_tuned_params_take_each_models_winner_with_its_best_epoch() -> None:
    trials = [
        Trial(0, {"no_components": 8, "epochs": 80}, 0.2, 30, 1.0, 0.1),
        Trial(1, {"no_components": 16, "epochs": 80}, 0.3, 45, 1.0, 0.1),
        Trial(2, {"no_components": 32, "epochs": 80}, 0.9, 5, 1.0, 0.1, model=CF),
    ]
    settings = tuned_params(trials)
    assert settings["train.lightfm.no_components"] == 16 and settings["train.lightfm.epochs"] == 45
    assert settings["train.lightfm_cf.no_components"] == 32 and settings["train.lightfm_cf.epochs"] == 5
    assert np.isfinite(best_trial(trials, CF).score)


def test_every_competitor_grid_point_is_a_trial_and_its_winner_becomes_its_settings() -> None:
    train, valid = block_matrix()
    settings = Params().model_dump()
    settings["train"]["search"]["competitors"] = {
        "ease": {"l2": [1.0, 1000.0]},
        "rp3beta": {"alpha": [1.0], "beta": [0.0, 0.5], "neighbours": [5]},
        "als": {"factors": [4], "regularization": [0.1], "iterations": [5]},
    }
    params = Params.model_validate(settings)
    specs = competitor_specs(params, train, valid, first_number=7)
    assert [spec.model for spec in specs] == ["ease", "ease", "rp3beta", "rp3beta", "als"]
    assert [spec.number for spec in specs] == [7, 8, 9, 10, 11]
    trials = [spec.run() for spec in specs]
    assert all(0.0 <= trial.score <= 1.0 for trial in trials)
    lightfm = [
        Trial(0, {"epochs": 80}, 0.1, 9, 0.0, 0.0),
        Trial(1, {"epochs": 80}, 0.1, 4, 0.0, 0.0, model=CF),
    ]
    tuned = tuned_params(lightfm + trials)
    best_l2 = max(trials[:2], key=lambda trial: trial.score).params["l2"]
    assert tuned["train.ease.l2"] == best_l2 and tuned["train.rp3beta.neighbours"] == 5
    assert tuned["train.als.factors"] == 4 and tuned["train.lightfm.epochs"] == 9


def test_an_unknown_competitor_or_parameter_is_refused() -> None:
    settings = Params().model_dump()
    settings["train"]["search"]["competitors"] = {"svd": {"k": [1]}}
    with pytest.raises(ValueError, match="unknown competitor 'svd'"):
        Params.model_validate(settings)
    settings["train"]["search"]["competitors"] = {"ease": {"lambda": [1.0]}}
    with pytest.raises(ValueError, match="unknown ease parameter"):
        Params.model_validate(settings)
