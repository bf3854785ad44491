from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import EaseParams, ItemKNNParams
from recsys.models import EASE, ItemKNN, MostPopular
from recsys.models.baselines import keep_top_per_row

from .conftest import N_USERS

ALL_USERS = np.arange(N_USERS)


def test_most_popular_counts_distinct_users_not_plays(interactions: sp.csr_matrix) -> None:
    scores = MostPopular().fit(interactions).score(np.array([0, 5]))
    expected = np.diff(interactions.tocsc().indptr).astype(np.float32)
    np.testing.assert_array_equal(scores, np.vstack([expected, expected]))
    assert not np.array_equal(expected, np.asarray(interactions.sum(axis=0)).ravel())


def test_keep_top_per_row_keeps_the_largest_and_breaks_ties_by_column() -> None:
    matrix = sp.csr_matrix(np.array([[0.25, 0.5, 0.5, 1.0], [0.0, 0.75, 0.0, 0.0]], dtype=np.float32))
    pruned = keep_top_per_row(matrix, 2).toarray()
    np.testing.assert_array_equal(pruned, [[0.0, 0.5, 0.0, 1.0], [0.0, 0.75, 0.0, 0.0]])


@pytest.mark.parametrize("use_weights", [False, True])
def test_itemknn_is_shrunk_cosine_without_the_diagonal(
    interactions: sp.csr_matrix, use_weights: bool
) -> None:
    shrink = 2.0
    model = ItemKNN(ItemKNNParams(neighbours=100, shrink=shrink), use_weights=use_weights).fit(interactions)
    x = interactions.toarray().astype(np.float64)
    if not use_weights:
        x = (x > 0).astype(np.float64)
    norms = np.linalg.norm(x, axis=0)
    expected = x.T @ x / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.similarity.toarray(), expected, rtol=1e-5)
    np.testing.assert_allclose(model.score(ALL_USERS), x @ expected, rtol=1e-5, atol=1e-6)


def test_itemknn_keeps_only_the_nearest_neighbours(interactions: sp.csr_matrix) -> None:
    full = ItemKNN(ItemKNNParams(neighbours=100, shrink=0.0)).fit(interactions).similarity.toarray()
    pruned = ItemKNN(ItemKNNParams(neighbours=2, shrink=0.0)).fit(interactions).similarity.toarray()
    assert np.all((pruned > 0).sum(axis=1) <= 2)
    for row_full, row_pruned in zip(full, pruned, strict=True):
        kept = row_pruned > 0
        assert np.all(row_pruned[kept] == row_full[kept])
        if kept.any():
            assert row_full[~kept].max(initial=0.0) <= row_pruned[kept].min()


def test_ease_matches_the_closed_form(interactions: sp.csr_matrix) -> None:
    l2 = 3.0
    x = (interactions.toarray() > 0).astype(np.float64)
    precision = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    weights = np.eye(x.shape[1]) - precision / np.diag(precision)
    np.testing.assert_allclose(np.diag(weights), 0.0, atol=1e-12)
    model = EASE(EaseParams(l2=l2, min_item_users=1)).fit(interactions)
    np.testing.assert_allclose(model.score(ALL_USERS), x @ weights, rtol=1e-4, atol=1e-5)


def test_ease_ranks_unmodelled_items_below_every_modelled_one(interactions: sp.csr_matrix) -> None:
    model = EASE(EaseParams(l2=1.0, min_item_users=4)).fit(interactions)
    users_per_item = np.diff(interactions.tocsc().indptr)
    np.testing.assert_array_equal(model.kept_items, np.flatnonzero(users_per_item >= 4))
    scores = model.score(ALL_USERS)
    dropped = np.setdiff1d(np.arange(interactions.shape[1]), model.kept_items)
    assert dropped.size > 0
    assert np.all(scores[:, dropped].max(axis=1) < scores[:, model.kept_items].min(axis=1))
    # Among themselves the unmodelled items follow popularity.
    most_popular_dropped = dropped[np.argmax(users_per_item[dropped])]
    assert np.all(np.argmax(scores[:, dropped], axis=1) == np.flatnonzero(dropped == most_popular_dropped))


def test_ease_says_when_no_item_is_frequent_enough(interactions: sp.csr_matrix) -> None:
    with pytest.raises(ValueError, match="min_item_users"):
        EASE(EaseParams(l2=1.0, min_item_users=100)).fit(interactions)
