from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import LightFMParams
from recsys.models import LightFMRecommender

from .conftest import N_ITEMS, N_USERS, POP_MISSING, TINY_LIGHTFM, make_item_features

ALL_USERS = np.arange(N_USERS)


def fit(
    interactions: sp.csr_matrix, features: sp.csr_matrix | None = None, **updates: object
) -> LightFMRecommender:
    return LightFMRecommender(TINY_LIGHTFM.model_copy(update=updates), seed=7).fit(interactions, features)


@pytest.mark.parametrize("with_features", [False, True], ids=["cf", "hybrid"])
def test_scorer_ranks_exactly_like_lightfm_predict(interactions: sp.csr_matrix, with_features: bool) -> None:
    features = make_item_features() if with_features else None
    model = fit(interactions, features)
    user_biases, _ = model.user_representations()
    assert np.abs(user_biases).max() > 0  # the comparison covers the user bias
    users, items = np.repeat(ALL_USERS, N_ITEMS), np.tile(np.arange(N_ITEMS), N_USERS)
    expected = model._fitted()[0].predict(users, items, item_features=features).reshape(N_USERS, N_ITEMS)
    scorer = model.scorer()
    np.testing.assert_allclose(scorer.score(ALL_USERS), expected, rtol=1e-5, atol=1e-6)
    indices, _ = scorer.top_k(ALL_USERS, 5)
    np.testing.assert_array_equal(indices, np.argsort(-expected, axis=1, kind="stable")[:, :5])


def test_names_follow_the_features(interactions: sp.csr_matrix, item_features: sp.csr_matrix) -> None:
    assert fit(interactions).name == "lightfm_cf"
    assert fit(interactions, item_features).name == "lightfm_hybrid"
    assert LightFMRecommender(TINY_LIGHTFM, seed=1, name="challenger").name == "challenger"


def test_confidence_weights_reach_the_loss(interactions: sp.csr_matrix) -> None:
    binary = interactions.copy()
    binary.data[:] = 1.0
    assert not np.array_equal(fit(interactions).score(ALL_USERS), fit(binary).score(ALL_USERS))


def scripted(scores: list[float]) -> Iterator[float]:
    yield from scores
    while True:
        yield 0.0


def test_early_stopping_keeps_the_best_epoch(interactions: sp.csr_matrix) -> None:
    script = scripted([0.1, 0.3, 0.2, 0.25, 0.9])
    params = TINY_LIGHTFM.model_copy(update={"epochs": 40, "eval_every": 5, "patience": 2})
    model = LightFMRecommender(params, seed=7).fit(interactions, validation_score=lambda _: next(script))
    assert model.history == [(5, 0.1), (10, 0.3), (15, 0.2), (20, 0.25)]
    assert model.best_epoch == model.epochs_trained == 10
    assert model.epochs_run == 20
    at_best = LightFMRecommender(params.model_copy(update={"epochs": 10}), seed=7).fit(interactions)
    np.testing.assert_array_equal(model.score(ALL_USERS), at_best.score(ALL_USERS))
    # The random stream is restored too: both continue identically.
    model.fit_partial(interactions, epochs=2)
    at_best.fit_partial(interactions, epochs=2)
    np.testing.assert_array_equal(model.score(ALL_USERS), at_best.score(ALL_USERS))


def test_patience_zero_stops_at_the_first_miss_and_the_last_epoch_is_evaluated(
    interactions: sp.csr_matrix,
) -> None:
    params = TINY_LIGHTFM.model_copy(update={"epochs": 12, "eval_every": 5, "patience": 0})
    rising = scripted([0.1, 0.2, 0.3])
    model = LightFMRecommender(params, seed=7).fit(interactions, validation_score=lambda _: next(rising))
    assert model.history == [(5, 0.1), (10, 0.2), (12, 0.3)]
    falling = scripted([0.3, 0.2, 0.1])
    model = LightFMRecommender(params, seed=7).fit(interactions, validation_score=lambda _: next(falling))
    assert model.history == [(5, 0.3), (10, 0.2)]
    assert model.best_epoch == 5


def test_valid_alone_early_stops_on_precision(interactions: sp.csr_matrix) -> None:
    train, valid = interactions.tolil(), sp.lil_matrix(interactions.shape, dtype=np.float32)
    for user, item in [(1, 4), (9, 9), (2, 1)]:
        valid[user, item], train[user, item] = 1.0, 0.0
    params = TINY_LIGHTFM.model_copy(update={"epochs": 20, "patience": 4})
    model = LightFMRecommender(params, seed=7).fit(train.tocsr(), valid=valid.tocsr())
    epochs, scores = zip(*model.history, strict=True)
    assert epochs == (5, 10, 15, 20)
    assert all(0.0 <= score <= 0.1 for score in scores)  # 3 users, k=10: at most 1 hit of 10 each
    assert model.best_epoch == epochs[int(np.argmax(scores))]


def test_fit_partial_on_a_fresh_model_starts_from_the_seed(interactions: sp.csr_matrix) -> None:
    warm = LightFMRecommender(TINY_LIGHTFM, seed=7).fit_partial(interactions, epochs=TINY_LIGHTFM.epochs)
    np.testing.assert_array_equal(warm.score(ALL_USERS), fit(interactions).score(ALL_USERS))


def test_fit_partial_refuses_other_shapes_and_feature_columns(
    interactions: sp.csr_matrix, item_features: sp.csr_matrix
) -> None:
    model = fit(interactions, item_features)
    with pytest.raises(ValueError, match="training shape"):
        model.fit_partial(interactions[:, :5], epochs=1)
    with pytest.raises(ValueError, match="columns"):
        model.fit_partial(interactions, epochs=1, item_features=item_features[:, :5])


def test_cold_start_items_are_scored_from_their_features(interactions: sp.csr_matrix) -> None:
    # Train without item 9; it comes back with only its genre feature (no identity column).
    catalogue = make_item_features(n_identity=POP_MISSING)
    model = fit(interactions[:, :POP_MISSING], catalogue[:POP_MISSING], epochs=30)
    biases, embeddings = model.item_representations(catalogue)
    assert embeddings.shape == (N_ITEMS, TINY_LIGHTFM.no_components)
    np.testing.assert_allclose(biases[:POP_MISSING], model.item_representations()[0], rtol=1e-6)
    listened = sp.hstack([interactions[:, :POP_MISSING], sp.csr_matrix((N_USERS, 1))]).tocsr()
    pop_listeners = np.array([8, 9, 10])
    indices, _ = model.scorer(catalogue).top_k(pop_listeners, 1, exclude=listened)
    assert indices[:, 0].tolist() == [POP_MISSING] * 3
    with pytest.raises(ValueError, match="columns"):
        model.item_representations(catalogue[:, :4])


@pytest.mark.parametrize("with_features", [False, True], ids=["cf", "hybrid"])
def test_fold_in_a_new_listener(interactions: sp.csr_matrix, with_features: bool) -> None:
    model = fit(interactions, make_item_features() if with_features else None)
    scorer = model.scorer()
    for favourites, cluster in (([0, 1], {2, 3, 4}), ([5, 6], {7, 8, 9})):
        vector = model.fold_in_user(np.array(favourites))
        assert vector.shape == (TINY_LIGHTFM.no_components + 2,)
        indices, _ = scorer.top_k_for_vector(vector, 1, exclude_items=np.array(favourites))
        assert indices[0] in cluster
    with pytest.raises(ValueError, match="at least one"):
        model.fold_in_user(np.array([], dtype=np.int64))


def test_fold_in_from_a_cold_favourite(interactions: sp.csr_matrix) -> None:
    catalogue = make_item_features(n_identity=POP_MISSING)
    model = fit(interactions[:, :POP_MISSING], catalogue[:POP_MISSING], epochs=30)
    vector = model.fold_in_user(np.array([POP_MISSING]), item_features=catalogue)
    indices, _ = model.scorer(catalogue).top_k_for_vector(vector, 3, exclude_items=np.array([POP_MISSING]))
    assert set(indices.tolist()) <= {5, 6, 7, 8}


def test_saved_model_resumes_training_identically(interactions: sp.csr_matrix, tmp_path: Path) -> None:
    model = fit(interactions, make_item_features())
    model.save(tmp_path / "lightfm.npz")
    loaded = LightFMRecommender.load(tmp_path / "lightfm.npz")
    assert loaded.item_features is not None and loaded.best_epoch == model.best_epoch
    model.fit_partial(interactions, epochs=2)
    loaded.fit_partial(interactions, epochs=2)
    np.testing.assert_array_equal(loaded.score(ALL_USERS), model.score(ALL_USERS))


def test_warp_kos_trains_without_sample_weights(interactions: sp.csr_matrix) -> None:
    params = LightFMParams.model_validate({"loss": "warp-kos", "no_components": 4, "epochs": 2})
    model = LightFMRecommender(params, seed=1).fit(interactions)
    assert np.all(np.isfinite(model.score(ALL_USERS)))


def test_a_seed_ensemble_scores_the_mean_of_its_members(
    interactions: sp.csr_matrix, item_features: sp.csr_matrix
) -> None:
    ensemble = fit(interactions, item_features, members=2)
    first = LightFMRecommender(TINY_LIGHTFM, seed=7).fit(interactions, item_features)
    second = LightFMRecommender(TINY_LIGHTFM, seed=8).fit(interactions, item_features)
    mean = (first.score(ALL_USERS) + second.score(ALL_USERS)) / 2
    np.testing.assert_allclose(ensemble.score(ALL_USERS), mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first.score(ALL_USERS), second.score(ALL_USERS))  # two different members
    biases, embeddings = ensemble.item_representations()
    assert embeddings.shape == (N_ITEMS, 2 * TINY_LIGHTFM.no_components)
    np.testing.assert_allclose(
        biases, (first.item_representations()[0] + second.item_representations()[0]) / 2
    )
    vector = ensemble.fold_in_user(np.array([0, 1]))
    assert vector.shape == (2 * TINY_LIGHTFM.no_components + 2,)
    # Trained side by side in threads, each member is still bit-identical to a run of its own.
    again = fit(interactions, item_features, members=2)
    np.testing.assert_array_equal(again.score(ALL_USERS), ensemble.score(ALL_USERS))


def test_a_saved_ensemble_resumes_training_identically(
    interactions: sp.csr_matrix, item_features: sp.csr_matrix, tmp_path: Path
) -> None:
    script = scripted([0.1, 0.3, 0.2, 0.1])
    params = TINY_LIGHTFM.model_copy(update={"members": 3, "epochs": 40, "eval_every": 5, "patience": 2})
    model = LightFMRecommender(params, seed=7).fit(
        interactions, item_features, validation_score=lambda _: next(script)
    )
    assert model.best_epoch == model.epochs_trained == 10
    at_best = LightFMRecommender(params.model_copy(update={"epochs": 10}), seed=7).fit(
        interactions, item_features
    )
    np.testing.assert_array_equal(model.score(ALL_USERS), at_best.score(ALL_USERS))  # every member restored
    model.save(tmp_path / "ensemble.npz")
    loaded = LightFMRecommender.load(tmp_path / "ensemble.npz")
    np.testing.assert_array_equal(loaded.score(ALL_USERS), model.score(ALL_USERS))
    model.fit_partial(interactions, epochs=2)
    loaded.fit_partial(interactions, epochs=2)
    np.testing.assert_array_equal(loaded.score(ALL_USERS), model.score(ALL_USERS))
