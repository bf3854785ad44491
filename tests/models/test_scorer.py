from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import recsys.models.scorer as scorer
from recsys.models.scorer import MISSING, TopKScorer, best_k, top_k_from_scores


def random_scores(n_rows: int, n_items: int, seed: int = 0) -> np.ndarray:
    return (
        np.random.default_rng(seed).permutation(n_rows * n_items).reshape(n_rows, n_items).astype(np.float32)
    )


@pytest.mark.parametrize("k", [1, 3, 9, 10])
def test_top_k_equals_a_full_sort(k: int) -> None:
    scores = random_scores(6, 10)
    indices, top = top_k_from_scores(scores, k)
    expected = np.argsort(-scores, axis=1)[:, :k]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(top, np.take_along_axis(scores, expected, axis=1))
    assert top.dtype == np.float32


def test_equal_scores_keep_the_lower_item_first_within_the_k() -> None:
    # Three score levels over 40 items: many ties, and argpartition returns the chosen ones in no order.
    scores = np.random.default_rng(0).integers(0, 3, size=(50, 40)).astype(np.float32)
    indices, top = top_k_from_scores(scores, 10)
    for row, chosen, values in zip(scores, indices, top, strict=True):
        np.testing.assert_array_equal(values, row[chosen])
        order = np.lexsort((chosen, -values))
        np.testing.assert_array_equal(order, np.arange(10))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("distinct", [0.0, 0.05, 1.0])
def test_the_k_best_are_a_full_sort_s_first_k_whichever_way_they_are_selected(
    dtype: type, distinct: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of mostly one value (a neighbourhood model's zeros) are selected the other way round; both ways
    take, of the items tied with the k-th best score, the lowest indices: a stable sort's first k."""
    rng = np.random.default_rng(int(distinct * 100))
    scores = np.zeros((40, 600), dtype=dtype)
    spread = rng.random(scores.shape) < distinct
    scores[spread] = rng.integers(1, 30, spread.sum())  # few levels: ties at the k-th score
    scores[rng.random(scores.shape) < 0.02] = -np.inf
    scores[5] = -np.inf  # a row with no allowed item
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :25]
    expected = np.where(np.isneginf(np.take_along_axis(scores, expected, axis=1)), MISSING, expected)
    for sampled in (512, 1):  # 512: every score sampled (repeats seen: negated); 1: one (the plain way)
        monkeypatch.setattr(scorer, "SAMPLED", sampled)
        np.testing.assert_array_equal(top_k_from_scores(scores, 25)[0], expected)
        chosen = best_k(scores, 25)
        assert [len(set(row)) for row in chosen] == [25] * 40


def test_a_float64_callers_lowest_real_score_is_not_taken_for_missing() -> None:
    scores = np.array([[np.finfo(np.float64).min, 1.0, 2.0]])
    indices, _ = top_k_from_scores(scores, 3)
    assert indices.tolist() == [[2, 1, 0]]


def test_excluded_items_are_never_returned_and_missing_slots_are_marked() -> None:
    scores = random_scores(2, 5)
    exclude = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    indices, top = top_k_from_scores(scores, 4, exclude)
    assert set(indices[0, :2].tolist()) == {3, 4}
    assert indices[0, 2:].tolist() == [MISSING, MISSING]
    assert np.all(np.isneginf(top[0, 2:]))
    np.testing.assert_array_equal(indices[1], np.argsort(-scores[1])[:4])
    assert scores[0, 0] != -np.inf  # the caller's array is left untouched


def test_explicit_zeros_in_exclude_do_not_exclude() -> None:
    scores = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
    exclude = sp.csr_matrix((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 3))
    assert top_k_from_scores(scores, 2, exclude)[0].tolist() == [[0, 2]]


def test_k_is_clipped_and_validated() -> None:
    scores = random_scores(2, 4)
    assert top_k_from_scores(scores, 50)[0].shape == (2, 4)
    with pytest.raises(ValueError, match="k must"):
        top_k_from_scores(scores, 0)
    with pytest.raises(ValueError, match="shape"):
        top_k_from_scores(scores, 2, sp.csr_matrix((3, 4)))


def make_scorer() -> tuple[TopKScorer, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(4, 3)), rng.normal(size=(7, 3))
    user_biases, item_biases = rng.normal(size=4), rng.normal(size=7)
    return (
        TopKScorer.from_factors(users, user_biases, items, item_biases),
        users,
        user_biases,
        items,
        item_biases,
    )


def test_folded_biases_give_the_full_score() -> None:
    scorer, users, user_biases, items, item_biases = make_scorer()
    expected = users @ items.T + user_biases[:, None] + item_biases[None, :]
    np.testing.assert_allclose(scorer.score(np.arange(4)), expected, rtol=1e-5, atol=1e-5)
    assert (scorer.n_users, scorer.n_items) == (4, 7)


def test_top_k_takes_exclusions_from_the_rows_of_the_requested_users() -> None:
    scorer, *_ = make_scorer()
    exclude = sp.lil_matrix((4, 7), dtype=np.float32)
    best_of_user_2 = int(np.argmax(scorer.score(np.array([2]))[0]))
    exclude[2, best_of_user_2] = 1.0
    indices, _ = scorer.top_k(np.array([2, 0]), 7, exclude=exclude.tocsr())
    assert best_of_user_2 not in indices[0]
    assert indices[1].tolist() == np.argsort(-scorer.score(np.array([0]))[0]).tolist()
    with pytest.raises(ValueError, match="one row per known user"):
        scorer.top_k(np.array([0]), 2, exclude=sp.csr_matrix((1, 7)))


def test_top_k_for_vector_matches_a_known_user() -> None:
    scorer, users, *_ = make_scorer()
    by_user, user_scores = scorer.top_k(np.array([1]), 5)
    by_vector, vector_scores = scorer.top_k_for_vector(scorer.user_vectors[1], 5)
    np.testing.assert_array_equal(by_vector, by_user[0])
    np.testing.assert_allclose(vector_scores, user_scores[0], rtol=1e-6)
    # A bare embedding is folded with a zero user bias: same ranking.
    np.testing.assert_array_equal(scorer.top_k_for_vector(users[1], 5)[0], by_user[0])
    kept, _ = scorer.top_k_for_vector(users[1], 7, exclude_items=np.array([by_user[0, 0]]))
    assert by_user[0, 0] not in kept and kept[-1] == MISSING
    with pytest.raises(ValueError, match="components"):
        scorer.top_k_for_vector(np.ones(4), 3)
