"""Popularity bias: item popularity, user groups, popularity lift and popularity re-ranking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.offline.popularity import (
    PAD_ITEM,
    item_popularity,
    mainstreaminess,
    mean_list_value,
    popularity_lift,
    popularity_lift_summary,
    popularity_percentile,
    popularity_variants,
    rerank_popularity,
    user_groups,
)
from recsys.offline.ranking import rank_top_k

# 3 users x 4 items; popularity (distinct users) = [3, 2, 1, 0]
TRAIN = sp.csr_matrix(np.array([[5, 1, 0, 0], [2, 0, 7, 0], [1, 4, 0, 0]], dtype=float))


def test_item_popularity_and_percentile() -> None:
    popularity = item_popularity(TRAIN)
    assert popularity.tolist() == [3.0, 2.0, 1.0, 0.0]
    assert popularity_percentile(np.array([5.0, 1.0, 1.0, 9.0])).tolist() == pytest.approx(
        [2 / 3, 1 / 6, 1 / 6, 1]
    )


def test_user_groups_partition_known_users_by_quantile() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(101).round(1)  # many ties across group boundaries
    scores[[3, 50]] = np.nan
    groups = user_groups(scores)
    members = np.concatenate(list(groups.values()))
    assert list(groups) == ["niche", "medium", "mainstream"]
    assert sorted(members.tolist()) == np.flatnonzero(~np.isnan(scores)).tolist()  # disjoint, all known users
    assert {len(g) for g in groups.values()} == {33}
    assert scores[groups["niche"]].max() <= scores[groups["medium"]].min()
    assert scores[groups["medium"]].max() <= scores[groups["mainstream"]].min()
    again = user_groups(scores)
    assert all(np.array_equal(groups[name], again[name]) for name in groups)


def test_user_groups_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="distinct"):
        user_groups(np.array([0.1, 0.2]), names=("a", "a"))
    with pytest.raises(ValueError, match="non-empty"):
        user_groups(np.array([0.1, 0.2]), names=())


def test_user_groups_from_mainstreaminess_of_matrix() -> None:
    # user 2 listens to nothing: no score, no group
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]))
    groups = user_groups(mainstreaminess(matrix), names=("low", "high"))
    # mainstreaminess: user 0 (1 + 0.25) / 2, user 1 0.25, user 3 1.0; 3 users split 2 + 1
    assert {name: g.tolist() for name, g in groups.items()} == {"low": [0, 1], "high": [3]}


def test_mean_list_value_ignores_padding() -> None:
    values = mean_list_value(
        np.array([[0, 3], [2, PAD_ITEM], [PAD_ITEM, PAD_ITEM]]), np.array([3.0, 2, 1, 0])
    )
    assert values[:2].tolist() == [1.5, 1.0]
    assert np.isnan(values[2])


def test_popularity_lift_hand_case() -> None:
    top = np.array([[0, 1], [3, PAD_ITEM], [2, 3]])
    lift = popularity_lift(top, TRAIN, np.array([0, 1, 2]))
    # user 0: recs (3 + 2) / 2 = 2.5 over own (3 + 2) / 2 = 2.5 -> 1
    # user 1: recs 0 over own (3 + 1) / 2 = 2 -> 0
    # user 2: recs (1 + 0) / 2 = 0.5 over own 2.5 -> 0.2
    assert lift == pytest.approx([1.0, 0.0, 0.2])


def test_popularity_lift_is_nan_without_training_items() -> None:
    train = sp.vstack([TRAIN, sp.csr_matrix((1, 4))]).tocsr()
    assert np.isnan(popularity_lift(np.array([[0, 1]]), train, np.array([3]))[0])


def test_popularity_lift_summary() -> None:
    lift = np.array([0.5, 2.0, 3.0, np.nan])
    groups = {"a": np.array([0, 1]), "b": np.array([2, 3]), "c": np.array([9])}
    summary = popularity_lift_summary(lift, np.arange(4), groups)
    assert summary["a"] == {"mean": 1.25, "median": 1.25, "share_above_one": 0.5, "n_users": 2}
    assert summary["b"] == {"mean": 3.0, "median": 3.0, "share_above_one": 1.0, "n_users": 1}
    assert summary["c"] == {"n_users": 0}


def test_rerank_strength_zero_keeps_ranking_and_excluded_items() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((20, 50)).astype(np.float32)
    scores[:, :5] = -np.inf
    adjusted = rerank_popularity(scores, rng.integers(0, 100, 50).astype(float), 0.0)
    assert np.array_equal(
        np.argsort(-adjusted, axis=1, kind="stable"), np.argsort(-scores, axis=1, kind="stable")
    )
    assert np.isneginf(adjusted[:, :5]).all()


def test_rerank_penalises_popular_items() -> None:
    rng = np.random.default_rng(2)
    popularity = rng.pareto(1.5, 300) * 10
    # scores correlated with popularity, as most models' are
    scores = np.log1p(popularity)[None, :] + rng.normal(0, 1.0, (40, 300))
    exclude = sp.csr_matrix((40, 300))
    arp = []
    for strength in (0.0, 0.5, 2.0):
        adjusted = rerank_popularity(scores, popularity, strength)
        top = rank_top_k(lambda u, a=adjusted: a[u], np.arange(40), 10, exclude)
        arp.append(mean_list_value(top, popularity).mean())
    assert arp[0] > arp[1] > arp[2]


def test_rerank_single_user_and_validation() -> None:
    adjusted = rerank_popularity(np.array([3.0, 2.0, 1.0]), np.array([100.0, 1.0, 1.0]), 2.0)
    assert adjusted.shape == (3,)
    assert int(adjusted.argmax()) == 1
    with pytest.raises(ValueError, match="strength"):
        rerank_popularity(np.zeros(3), np.ones(3), -1.0)
    with pytest.raises(ValueError, match="items"):
        rerank_popularity(np.zeros((2, 3)), np.ones(4), 1.0)


@pytest.mark.parametrize("masked", [False, True])
def test_popularity_variants_are_row_wise(masked: bool) -> None:
    """The bias curve re-ranks a few rows at a time: any cut of the rows gives the same bytes as the whole
    matrix and as rerank_popularity, with or without masked items."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(23, 400)).astype(np.float32)
    if masked:
        scores[rng.random(scores.shape) < 0.2] = -np.inf
    popularity = rng.pareto(1.5, 400) * 10
    variants = popularity_variants(popularity, [0.0, 0.1, 0.7])
    whole = dict(variants(scores))
    for step in (1, 5, 23):
        for start in range(0, 23, step):
            for strength, part in variants(scores[start : start + step]):
                assert np.array_equal(part, whole[strength][start : start + step])
    for strength, adjusted in whole.items():
        assert np.array_equal(adjusted, rerank_popularity(scores, popularity, strength))
    assert not np.array_equal(whole[0.0].argmax(axis=1), whole[0.7].argmax(axis=1))


def test_popularity_variants_check_the_strengths_when_built() -> None:
    with pytest.raises(ValueError, match="strength must be a finite number >= 0, got nan"):
        popularity_variants(np.ones(3), [0.1, float("nan")])
