"""Contract every recommender honours, written once and run for each model (RecTools-style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import ALSParams, EaseParams, ItemKNNParams, RP3betaParams
from recsys.models import (
    ALS,
    EASE,
    ItemKNN,
    LightFMRecommender,
    MostPopular,
    NotFittedError,
    Recommender,
    RP3beta,
    load_recommender,
)

from .conftest import (
    N_ITEMS,
    N_USERS,
    POP_MISSING,
    POP_USER,
    ROCK_MISSING,
    ROCK_USER,
    TINY_LIGHTFM,
    make_interactions,
    make_item_features,
)


@dataclass(frozen=True)
class Case:
    """How to build and fit one model for the contract."""

    id: str
    make: Callable[[], Recommender]
    uses_features: bool = False
    personalised: bool = True

    def fit(self, model: Recommender, interactions: sp.csr_matrix) -> Recommender:
        return model.fit(interactions, make_item_features() if self.uses_features else None)

    def fitted(self) -> Recommender:
        return self.fit(self.make(), make_interactions())


CASES = [
    Case("most_popular", MostPopular, personalised=False),
    Case("itemknn", lambda: ItemKNN(ItemKNNParams(neighbours=3, shrink=1.0))),
    Case("itemknn_weighted", lambda: ItemKNN(ItemKNNParams(neighbours=3, shrink=1.0), use_weights=True)),
    Case("ease", lambda: EASE(EaseParams(l2=1.0, min_item_users=1))),
    # Items 5-8 have fewer than 4 users: exercises the unmodelled-item path.
    Case("ease_restricted", lambda: EASE(EaseParams(l2=1.0, min_item_users=4)), personalised=False),
    Case("rp3beta", lambda: RP3beta(RP3betaParams(alpha=1.0, beta=0.3, neighbours=5))),
    Case("als", lambda: ALS(ALSParams(factors=4, regularization=0.1, alpha=1.0, iterations=10), seed=7)),
    Case("lightfm_cf", lambda: LightFMRecommender(TINY_LIGHTFM, seed=7)),
    Case("lightfm_hybrid", lambda: LightFMRecommender(TINY_LIGHTFM, seed=7), uses_features=True),
]
ALL_USERS = np.arange(N_USERS)


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


def test_score_shape_dtype_and_batching(case: Case) -> None:
    model = case.fitted()
    users = np.array([3, ROCK_USER, 11])
    scores = model.score(users)
    assert scores.shape == (3, N_ITEMS)
    assert scores.dtype == np.float32
    assert np.all(np.isfinite(scores))
    assert model.n_items == N_ITEMS
    # A user's scores do not depend on the batch it is scored in.
    np.testing.assert_allclose(scores[1], model.score(np.array([ROCK_USER]))[0], rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_gives_identical_scores(case: Case, tmp_path: Path) -> None:
    model = case.fitted()
    path = tmp_path / "model.npz"
    model.save(path)
    for loaded in (type(model).load(path), load_recommender(path)):
        assert type(loaded) is type(model)
        assert loaded.name == model.name
        assert loaded.n_items == model.n_items
        np.testing.assert_array_equal(loaded.score(ALL_USERS), model.score(ALL_USERS))
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left behind


def test_load_refuses_a_file_of_another_class(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    case.fitted().save(path)
    other = MostPopular if not isinstance(case.make(), MostPopular) else EASE
    with pytest.raises(ValueError, match="not a"):
        other.load(path)


def test_same_seed_gives_the_same_scores(case: Case) -> None:
    np.testing.assert_array_equal(case.fitted().score(ALL_USERS), case.fitted().score(ALL_USERS))


def test_refit_starts_fresh(case: Case) -> None:
    interactions = make_interactions()
    other = sp.csr_matrix(interactions[::-1])  # same shape, different listeners
    model = case.make()
    case.fit(model, other)
    case.fit(model, interactions)
    np.testing.assert_array_equal(model.score(ALL_USERS), case.fitted().score(ALL_USERS))


def test_top_k_never_returns_excluded_items(case: Case) -> None:
    interactions = make_interactions()
    model = case.fitted()
    indices, scores = model.recommend(ALL_USERS, N_ITEMS, exclude=interactions)
    assert indices.shape == scores.shape == (N_USERS, N_ITEMS)
    for user in ALL_USERS:
        listened = set(interactions[user].indices)
        returned = indices[user][indices[user] >= 0]
        assert not listened & set(returned.tolist())
        assert len(returned) == N_ITEMS - len(listened)
        assert np.all(np.diff(scores[user][: len(returned)]) <= 0)


def test_fit_partial_behaves_as_documented(case: Case) -> None:
    interactions = make_interactions()
    model = case.fitted()
    before = model.score(ALL_USERS)
    if not model.incremental:
        with pytest.raises(NotImplementedError, match="fit"):
            model.fit_partial(interactions, epochs=1)
        return
    model.fit_partial(interactions, epochs=3)
    after = model.score(ALL_USERS)
    assert not np.array_equal(after, before)
    # Continuing (no reset): fit(20) then fit_partial(3) is exactly fit(23).
    assert isinstance(model, LightFMRecommender)
    longer = LightFMRecommender(TINY_LIGHTFM.model_copy(update={"epochs": 23}), seed=7)
    np.testing.assert_array_equal(case.fit(longer, interactions).score(ALL_USERS), after)


def test_recommends_the_obvious_item(case: Case) -> None:
    interactions = make_interactions()
    model = case.fitted()
    indices, _ = model.recommend(np.array([ROCK_USER, POP_USER]), 1, exclude=interactions)
    assert indices[0, 0] == ROCK_MISSING
    if case.personalised:
        assert indices[1, 0] == POP_MISSING


def test_unfitted_model_says_so(case: Case, tmp_path: Path) -> None:
    model = case.make()
    assert not model.is_fitted
    with pytest.raises(NotFittedError):
        model.score(ALL_USERS)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "model.npz")


def test_unknown_users_and_bad_input_are_rejected(case: Case) -> None:
    model = case.fitted()
    with pytest.raises(IndexError):
        model.score(np.array([N_USERS]))
    negative = make_interactions()
    negative.data[0] = -1.0
    with pytest.raises(ValueError, match="> 0"):
        case.fit(case.make(), negative)
    with pytest.raises(ValueError, match="sparse"):
        case.fit(case.make(), make_interactions().toarray())
