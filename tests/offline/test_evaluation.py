"""Offline evaluation: hand-computed metrics, invariants, a per-user reference and the real Last.fm data."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.offline.evaluation import cold_start_evaluate, evaluate
from recsys.offline.metrics import (
    average_recommendation_popularity,
    catalogue_coverage,
    head_items,
    intra_list_diversity,
    long_tail_share,
    novelty,
    ranking_metrics,
)
from recsys.offline.popularity import PAD_ITEM, item_popularity, mainstreaminess, user_groups
from recsys.offline.ranking import auc_per_user, rank_top_k

# Hand case: 3 users x 6 items.
#   user 0: train {0},    test {1, 3}; scores 0.9 0.8 0.7 0.6 0.5 0.4 -> ranking 1 2 3 4 5
#   user 1: train {2, 3}, test {5};    scores 0.1 0.5 0.9 0.9 0.3 0.2 -> ranking 1 4 5 0
#   user 2: train {},     test {0, 4}; scores 0.5 0.9 0.8 0.1 0.1 0.3 -> ranking 1 2 0 5 3|4 (3, 4 tie)
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.5, 0.9, 0.9, 0.3, 0.2],
        [0.5, 0.9, 0.8, 0.1, 0.1, 0.3],
    ],
    dtype=np.float32,
)
TRAIN = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [0, 0, 3, 2, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=float))
TEST = sp.csr_matrix(np.array([[0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 1, 0]], dtype=float))
USERS = np.arange(3)
LOG2_3 = math.log2(3)


def hand_scores(users: np.ndarray) -> np.ndarray:
    return SCORES[users]


def test_rank_top_k_hand_case_excludes_train_items() -> None:
    top = rank_top_k(hand_scores, USERS, 3, TRAIN)
    assert top.tolist() == [[1, 2, 3], [1, 4, 5], [1, 2, 0]]


def test_rank_top_k_pads_when_too_few_candidates() -> None:
    exclude = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 0]]))
    top = rank_top_k(hand_scores, np.array([0]), 3, exclude)
    assert top.tolist() == [[5, PAD_ITEM, PAD_ITEM]]
    # k larger than the catalogue takes the no-partition path and still pads.
    assert rank_top_k(hand_scores, np.array([2]), 8, TRAIN).tolist() == [[1, 2, 0, 5, 3, 4, -1, -1]]


def test_rank_top_k_candidates_as_mask_or_indices() -> None:
    by_index = rank_top_k(hand_scores, USERS, 3, TRAIN, candidates=np.array([3, 4, 5]))
    mask = np.zeros(6, dtype=bool)
    mask[[3, 4, 5]] = True
    by_mask = rank_top_k(hand_scores, USERS, 3, TRAIN, candidates=mask)
    # user 1 has item 3 in train, so only 4 (0.3) and 5 (0.2) remain.
    assert by_index.tolist() == by_mask.tolist() == [[3, 4, 5], [4, 5, PAD_ITEM], [5, 3, 4]]


def test_rank_top_k_keeps_model_minus_inf_items_and_breaks_ties_by_index() -> None:
    scores = np.array([[-np.inf, 1.0, 2.0, 1.0]])
    top = rank_top_k(lambda u: scores[u], np.array([0]), 4, sp.csr_matrix((1, 4)))
    assert top.tolist() == [[2, 1, 3, 0]]


def test_rank_top_k_rejects_bad_scores() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_top_k(lambda u: np.full((len(u), 6), np.nan), USERS, 2, TRAIN)
    with pytest.raises(ValueError, match="shape"):
        rank_top_k(lambda u: np.zeros((len(u), 5)), USERS, 2, TRAIN)


def test_ranking_metrics_hand_case() -> None:
    metrics = ranking_metrics(np.array([[1, 2, 3], [1, 4, 5], [1, 2, 0]]), TEST, USERS, [1, 3])
    # hits@3: u0 [1, 0, 1] (2 relevant), u1 [0, 0, 1] (1 relevant), u2 [0, 0, 1] (2 relevant)
    assert metrics["precision@3"] == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert metrics["recall@3"] == pytest.approx([1.0, 1.0, 1 / 2])
    # F1 = 2PR / (P + R): u0 2*(2/3)/(5/3) = 0.8; u1 (2/3)/(4/3) = 0.5; u2 (1/3)/(5/6) = 0.4
    assert metrics["f1@3"] == pytest.approx([0.8, 0.5, 0.4])
    # AP@3 = sum of precision at each hit / min(3, n_rel): u0 (1 + 2/3)/2; u1 (1/3)/1; u2 (1/3)/2
    assert metrics["map@3"] == pytest.approx([5 / 6, 1 / 3, 1 / 6])
    # DCG: u0 1 + 1/log2(4) = 1.5, IDCG 1 + 1/log2(3); u1 0.5 / 1; u2 0.5 / (1 + 1/log2(3))
    ideal_two = 1 + 1 / LOG2_3
    assert metrics["ndcg@3"] == pytest.approx([1.5 / ideal_two, 0.5, 0.5 / ideal_two])
    assert metrics["hit_rate@3"] == pytest.approx([1.0, 1.0, 1.0])
    # @1 only user 0's first item (1) is relevant.
    assert metrics["precision@1"] == pytest.approx([1.0, 0.0, 0.0])
    assert metrics["recall@1"] == pytest.approx([0.5, 0.0, 0.0])
    assert metrics["map@1"] == pytest.approx([1.0, 0.0, 0.0])
    assert metrics["ndcg@1"] == pytest.approx([1.0, 0.0, 0.0])
    assert metrics["hit_rate@1"] == pytest.approx([1.0, 0.0, 0.0])


def test_ranking_metrics_no_relevant_items_and_bad_k() -> None:
    top = np.array([[0, PAD_ITEM]])
    metrics = ranking_metrics(top, sp.csr_matrix((1, 6)), np.array([0]), [2])
    assert metrics["precision@2"][0] == 0.0
    assert np.isnan(metrics["ndcg@2"][0]) and np.isnan(metrics["recall@2"][0])
    with pytest.raises(ValueError, match="every k"):
        ranking_metrics(top, TEST, np.array([0]), [3])


def test_auc_hand_case() -> None:
    auc = auc_per_user(hand_scores, USERS, TRAIN, TEST)
    # u0: positives 1 (0.8), 3 (0.6) vs negatives 2 (0.7), 4 (0.5), 5 (0.4): 3 + 2 wins of 6 pairs
    # u1: positive 5 (0.2) vs 0 (0.1), 1 (0.5), 4 (0.3): 1 win of 3
    # u2: positives 0 (0.5), 4 (0.1) vs 1 (0.9), 2 (0.8), 3 (0.1), 5 (0.3): 2 wins + 1 tie of 8 pairs
    assert auc == pytest.approx([5 / 6, 1 / 3, 2.5 / 8])


def test_auc_is_nan_without_negatives() -> None:
    test = sp.csr_matrix(np.array([[0, 1, 1, 1, 1, 1]]))
    assert np.isnan(auc_per_user(hand_scores, np.array([0]), TRAIN[:1], test)[0])


def test_beyond_accuracy_hand_cases() -> None:
    assert catalogue_coverage(np.array([[0, 1], [1, PAD_ITEM]]), 5) == pytest.approx(2 / 5)
    # per user mean popularity: (4 + 2) / 2 = 3 and 1 (padding ignored) -> 2
    popularity = np.array([4.0, 2.0, 1.0, 0.0])
    assert average_recommendation_popularity(np.array([[0, 1], [2, PAD_ITEM]]), popularity) == 2.0
    # -log2(pop / 4): item 0 -> 0, item 1 -> 1, item 2 -> 2, item 3 (cold, counted as 1 user) -> 2
    assert novelty(np.array([[0, 1], [2, 3]]), popularity, 4) == pytest.approx((0.5 + 2.0) / 2)


def test_head_items_is_smallest_prefix_holding_the_share() -> None:
    popularity = np.array([5.0, 3.0, 2.0])
    assert head_items(popularity, 0.5).tolist() == [True, False, False]
    assert head_items(popularity, 0.51).tolist() == [True, True, False]
    # u0 [0, 1] has one tail item of two, u1 [2] is all tail: (0.5 + 1) / 2
    assert long_tail_share(np.array([[0, 1], [2, PAD_ITEM]]), popularity, 0.5) == pytest.approx(0.75)


@pytest.mark.parametrize("sparse", [False, True])
def test_intra_list_diversity_hand_case(sparse: bool) -> None:
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    lists = np.array([[0, 1], [0, 2], [0, 3], [1, PAD_ITEM]])
    # distances: identical direction 0, orthogonal 1, zero vector 1; a one-item list is skipped
    features = sp.csr_matrix(vectors) if sparse else vectors
    assert intra_list_diversity(lists, features) == pytest.approx(2 / 3)


def test_evaluate_hand_case_overall_and_groups() -> None:
    params = EvaluateParams(ks=(1, 3), head_share=0.5)
    result = evaluate(
        hand_scores, TRAIN, TEST, params, user_groups={"a": np.array([0]), "b": np.array([1, 2])}
    )
    metrics = result.metrics
    assert metrics["n_users"] == 3
    assert metrics["precision@3"] == pytest.approx(4 / 9)
    assert metrics["auc"] == pytest.approx((5 / 6 + 1 / 3 + 2.5 / 8) / 3)
    # lists@3 {1,2,3} | {1,4,5} | {1,2,0} cover all 6 items; lists@1 are all item 1
    assert metrics["coverage@3"] == 1.0
    assert metrics["coverage@1"] == pytest.approx(1 / 6)
    # train popularity [1, 0, 1, 1, 0, 0]: per-user ARP@3 2/3, 0, 2/3
    assert metrics["arp@3"] == pytest.approx(4 / 9)
    # 3 interactions, head = {0, 2} (first two items by popularity reach 1.5): tail shares 2/3, 1, 1/3
    assert metrics["long_tail_share@3"] == pytest.approx(2 / 3)
    # every item has at most one of 3 training users -> -log2(1/3)
    assert metrics["novelty@3"] == pytest.approx(LOG2_3)
    assert result.groups["a"]["precision@3"] == pytest.approx(2 / 3)
    assert result.groups["a"]["coverage@3"] == pytest.approx(3 / 6)
    assert result.groups["b"]["n_users"] == 2
    assert result.groups["b"]["map@3"] == pytest.approx((1 / 3 + 1 / 6) / 2)


def test_evaluate_skips_users_without_test_items_and_empty_groups() -> None:
    test = TEST.tolil()
    test[2, :] = 0
    result = evaluate(hand_scores, TRAIN, test.tocsr(), EvaluateParams(), user_groups={"g": np.array([2])})
    assert result.metrics["n_users"] == 2
    assert result.groups == {"g": {"n_users": 0}}


def test_cold_start_ranks_only_cold_items() -> None:
    n_items = 8
    scores = np.tile(np.linspace(1.0, 0.1, n_items), (3, 1))
    train = sp.csr_matrix(np.eye(3, n_items))
    cold_test = sp.lil_matrix((3, n_items))
    cold_test[0, 6] = 1  # beats the other cold item 7 -> AUC 1
    cold_test[1, 7] = 1  # loses to cold item 6 -> AUC 0
    cold_test[1, 3] = 1  # a warm item: not a candidate, ignored
    result = cold_start_evaluate(
        lambda u: scores[u], train, cold_test.tocsr(), np.array([6, 7]), EvaluateParams(ks=(1,))
    )
    assert result.metrics["n_users"] == 2
    assert result.metrics["auc"] == pytest.approx(0.5)
    assert result.metrics["precision@1"] == pytest.approx(0.5)
    assert result.metrics["coverage@1"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="empty"):
        cold_start_evaluate(
            lambda u: scores[u], train, cold_test.tocsr(), np.array([], int), EvaluateParams()
        )


def random_split(
    n_users: int, n_items: int, seed: int, density: float = 0.08
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Disjoint random train/test matrices; every user has at least one test item."""
    rng = np.random.default_rng(seed)
    draw = rng.random((n_users, n_items))
    train = (draw < density * 0.7).astype(float)
    test = ((draw >= density * 0.7) & (draw < density)).astype(float)
    forced = (np.arange(n_users), rng.integers(0, n_items, n_users))
    test[forced], train[forced] = 1.0, 0.0
    return sp.csr_matrix(train), sp.csr_matrix(test)


def test_perfect_and_reversed_rankings() -> None:
    train, test = random_split(40, 120, seed=1)
    perfect = test.toarray()
    result = evaluate(lambda u: perfect[u], train, test, EvaluateParams())
    for k in (5, 10, 20):
        assert result.metrics[f"ndcg@{k}"] == pytest.approx(1.0)
        assert result.metrics[f"map@{k}"] == pytest.approx(1.0)
    assert result.metrics["auc"] == pytest.approx(1.0)
    assert np.nanmax(auc_per_user(lambda u: -perfect[u], np.arange(40), train, test)) == pytest.approx(0.0)


def test_random_scores_give_auc_near_half() -> None:
    train, test = random_split(300, 1000, seed=2)
    rng = np.random.default_rng(3)
    auc = auc_per_user(lambda u: rng.random((len(u), 1000)), np.arange(300), train, test)
    assert abs(np.nanmean(auc) - 0.5) < 0.02


def test_excluded_items_never_recommended_and_metrics_bounded() -> None:
    train, test = random_split(60, 150, seed=4, density=0.3)
    rng = np.random.default_rng(5)
    scores = rng.random((60, 150)).round(1)  # many ties
    top = rank_top_k(lambda u: scores[u], np.arange(60), 20, train)
    assert not train.toarray()[np.arange(60)[:, None], np.maximum(top, 0)][top >= 0].any()
    result = evaluate(lambda u: scores[u], train, test, EvaluateParams(), user_groups={"all": np.arange(60)})
    bounded = [key for key in result.metrics if key.split("@")[0] not in {"arp", "novelty", "n_users"}]
    assert all(0.0 <= result.metrics[key] <= 1.0 for key in bounded)
    assert result.groups["all"] == result.metrics
    json.dumps(result.to_dict(), allow_nan=False)


def test_batch_size_does_not_change_results() -> None:
    train, test = random_split(50, 80, seed=6)
    scores = np.random.default_rng(7).random((50, 80)).astype(np.float32)
    groups = {"even": np.arange(0, 50, 2), "odd": np.arange(1, 50, 2)}
    small = evaluate(lambda u: scores[u], train, test, EvaluateParams(), groups, batch_size=7)
    large = evaluate(lambda u: scores[u], train, test, EvaluateParams(), groups, batch_size=512)
    assert small == large
    assert small.groups["even"]["n_users"] + small.groups["odd"]["n_users"] == small.metrics["n_users"]


def reference_metrics(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook per-user metrics, one item at a time."""
    hits = [1.0 if item in relevant else 0.0 for item in ranked[:k]]
    precision = sum(hits) / k
    recall = sum(hits) / len(relevant)
    f1 = 2 * precision * recall / (precision + recall) if sum(hits) else 0.0
    average_precision = sum(hits[i] * sum(hits[: i + 1]) / (i + 1) for i in range(k)) / min(k, len(relevant))
    dcg = sum(hits[i] / math.log2(i + 2) for i in range(k))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "map": average_precision,
        "ndcg": dcg / ideal,
        "hit_rate": float(sum(hits) > 0),
    }


def reference_auc(scores: np.ndarray, train: set[int], relevant: set[int]) -> float:
    negatives = [j for j in range(len(scores)) if j not in train and j not in relevant]
    wins = sum(
        1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0
        for p in relevant
        for n in negatives
    )
    return wins / (len(relevant) * len(negatives))


def test_against_per_user_reference() -> None:
    train, test = random_split(50, 200, seed=8)
    scores = np.random.default_rng(9).random((50, 200))
    users = np.arange(50)
    top = rank_top_k(lambda u: scores[u], users, 20, train)
    metrics = ranking_metrics(top, test, users, [5, 20])
    tied = scores.round(1)
    auc = auc_per_user(lambda u: tied[u], users, train, test)
    for user in users:
        seen = set(train[user].indices)
        relevant = set(test[user].indices)
        expected_order = [int(j) for j in np.argsort(-scores[user], kind="stable") if j not in seen][:20]
        assert top[user].tolist() == expected_order
        for k in (5, 20):
            expected = reference_metrics(expected_order, relevant, k)
            for name, value in expected.items():
                assert metrics[f"{name}@{k}"][user] == pytest.approx(value), (user, name, k)
        assert auc[user] == pytest.approx(reference_auc(tied[user], seen, relevant))


RAW_USER, RAW_ITEM = "userID", "artistID"  # columns of the raw HetRec user_artists.dat


def lastfm_holdout(data_dir: Path, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Seeded per-user 80/20 holdout of Last.fm users with at least 5 artists."""
    frame = pd.read_csv(data_dir / "hetrec2011-lastfm-2k" / "user_artists.dat", sep="\t")
    user, _ = pd.factorize(frame[RAW_USER])
    item, _ = pd.factorize(frame[RAW_ITEM])
    shape = (user.max() + 1, item.max() + 1)
    order = np.random.default_rng(seed).permutation(len(frame))
    position = np.empty(len(frame), dtype=np.int64)
    position[order] = pd.Series(user[order]).groupby(user[order]).cumcount().to_numpy()
    n_per_user = np.bincount(user)
    n_test = np.where(n_per_user >= 5, np.round(0.2 * n_per_user), 0)
    is_test = position < n_test[user]
    ones = np.ones(len(frame))
    train = sp.csr_matrix((ones[~is_test], (user[~is_test], item[~is_test])), shape=shape)
    test = sp.csr_matrix((ones[is_test], (user[is_test], item[is_test])), shape=shape)
    return train, test


@pytest.mark.slow
@pytest.mark.realdata
def test_most_popular_beats_random_on_lastfm(real_data_dir: Path) -> None:
    train, test = lastfm_holdout(real_data_dir, seed=42)
    n_users, n_items = train.shape
    params = EvaluateParams()
    groups = user_groups(mainstreaminess(train), params.groups)
    popularity = item_popularity(train).astype(np.float32)
    rng = np.random.default_rng(0)

    started = time.perf_counter()
    popular = evaluate(lambda u: np.broadcast_to(popularity, (len(u), n_items)), train, test, params, groups)
    elapsed = time.perf_counter() - started
    random = evaluate(lambda u: rng.random((len(u), n_items), dtype=np.float32), train, test, params, groups)

    print(f"\nLast.fm {n_users} users x {n_items} items; full evaluation of most-popular: {elapsed:.2f} s")
    for name, result in (("most-popular", popular), ("random", random)):
        m = result.metrics
        print(
            f"{name}: P@10 {m['precision@10']:.4f} nDCG@10 {m['ndcg@10']:.4f} AUC {m['auc']:.4f} "
            f"coverage@10 {m['coverage@10']:.4f} ARP@10 {m['arp@10']:.1f} "
            f"long-tail@10 {m['long_tail_share@10']:.4f} novelty@10 {m['novelty@10']:.2f} "
            f"users {m['n_users']}"
        )
        print("  nDCG@10 by group: " + ", ".join(f"{g} {v['ndcg@10']:.4f}" for g, v in result.groups.items()))
    assert popular.metrics["ndcg@10"] > 5 * random.metrics["ndcg@10"]
    assert popular.metrics["auc"] > random.metrics["auc"] + 0.2
    assert abs(random.metrics["auc"] - 0.5) < 0.02
    assert sum(int(g["n_users"]) for g in popular.groups.values()) == popular.metrics["n_users"]
    assert popular.metrics["coverage@10"] < random.metrics["coverage@10"]


def test_ranking_among_candidates_equals_ranking_with_the_others_at_minus_inf() -> None:
    # The candidates' columns are ranked alone (faster for cold start); the lists, AUC and metrics must
    # be those of the full rows with every other item masked.
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((40, 300))
    train = sp.random(40, 300, density=0.05, random_state=1, format="csr")
    test = sp.random(40, 300, density=0.05, random_state=2, format="csr")
    candidates = rng.random(300) < 0.15
    masked = np.where(candidates, scores, -np.inf)
    params = EvaluateParams(ks=[5, 10])
    users = np.arange(40)

    restricted = rank_top_k(lambda u: scores[u], users, 10, train, candidates=candidates)
    assert np.array_equal(restricted, rank_top_k(lambda u: masked[u], users, 10, train))
    assert set(restricted[restricted != PAD_ITEM].tolist()) <= set(np.flatnonzero(candidates).tolist())
    assert np.allclose(
        auc_per_user(lambda u: scores[u], users, train, test, candidates=candidates),
        auc_per_user(lambda u: masked[u], users, train, test, candidates=candidates),
        equal_nan=True,
    )
    cold = cold_start_evaluate(lambda u: scores[u], train, test, np.flatnonzero(candidates), params)
    assert cold.metrics["n_users"] > 0 and cold.metrics["ndcg@10"] > 0
    assert cold.metrics == evaluate(lambda u: masked[u], train, test, params, candidates=candidates).metrics
