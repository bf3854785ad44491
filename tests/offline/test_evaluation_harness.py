"""The evaluation harness's speed machinery changes no number: chunks, threads and the two ways to place a
test item among a row's scores give the same bytes; its memory bound and thread setting fail clearly."""

from __future__ import annotations

from collections.abc import Hashable, Iterator

import numpy as np
import pytest
import scipy.sparse as sp

import recsys.offline.batches as batches
import recsys.offline.metrics as metrics
from recsys.config import EvaluateParams
from recsys.errors import RecsysError
from recsys.memory import MEMORY_LIMIT_ENV, MemoryBoundError
from recsys.offline.batches import THREADS_ENV, evaluation_threads
from recsys.offline.evaluation import RankedEvaluation, evaluate, evaluate_variants, relevant_entries
from recsys.offline.metrics import below_and_tied, counting_is_cheaper
from recsys.offline.ranking import auc_per_user, rank_and_auc
from tests.offline.test_evaluation import random_split, reference_auc


def tied_scores(n_users: int, n_items: int, seed: int) -> np.ndarray:
    """Scores rounded to two decimals (many ties), a few of them a model's own ``-inf``."""
    scores = np.random.default_rng(seed).random((n_users, n_items)).round(2).astype(np.float32)
    scores[:, ::97] = -np.inf
    return scores


@pytest.mark.parametrize("n_items", [1, 7, 2_000, 30_000])
def test_counting_and_sorting_place_values_alike(n_items: int) -> None:
    rng = np.random.default_rng(n_items)
    row = rng.integers(0, 50, n_items).astype(np.float32)
    row[rng.random(n_items) < 0.1] = -np.inf
    values = np.concatenate([row[rng.integers(0, n_items, 25)], [-np.inf, 51.0, -1.0]])
    counted = (
        [np.count_nonzero(row < value) for value in values],
        [np.count_nonzero(row == value) for value in values],
    )
    ordered = np.sort(row)
    searched = np.searchsorted(ordered, values, "left"), np.searchsorted(ordered, values, "right")
    for few in (values[:1], values[:3], values):
        lower, tied = below_and_tied(row, few)
        assert lower.tolist() == counted[0][: len(few)]
        assert tied.tolist() == counted[1][: len(few)]
        assert lower.tolist() == searched[0][: len(few)].tolist()
        assert (lower + tied).tolist() == searched[1][: len(few)].tolist()


def test_both_ways_are_taken_at_the_sizes_that_matter() -> None:
    assert counting_is_cheaper(5, 150_000) and counting_is_cheaper(8, 17_632)
    assert not counting_is_cheaper(30, 150_000) and not counting_is_cheaper(20, 17_632)
    assert not counting_is_cheaper(2, 500)


def test_auc_matches_the_pairwise_reference_when_counting_and_when_sorting() -> None:
    # 3,000 items: users with one or two test items are placed by counting, the others (5-40) by sorting.
    rng = np.random.default_rng(11)
    n_users, n_items = 12, 3_000
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.01).astype(float))
    test = np.zeros((n_users, n_items))
    for user, n_test in enumerate([1, 2, 5, 40] * 3):
        unseen = np.setdiff1d(np.arange(n_items), train[user].indices)
        test[user, rng.choice(unseen, n_test, replace=False)] = 1.0
    counts = (test > 0).sum(axis=1)
    assert {counting_is_cheaper(int(c), n_items) for c in counts} == {True, False}
    scores = tied_scores(n_users, n_items, seed=12)
    scores[scores == -np.inf] = 0.5  # the reference knows no masked items: real scores only
    auc = auc_per_user(lambda u: scores[u], np.arange(n_users), train, sp.csr_matrix(test))
    for user in range(n_users):
        expected = reference_auc(scores[user], set(train[user].indices), set(np.flatnonzero(test[user])))
        assert auc[user] == pytest.approx(expected, abs=1e-12)


def test_chunks_and_threads_give_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = random_split(90, 400, seed=13)
    scores = tied_scores(90, 400, seed=14)
    mask = np.ones(400, dtype=bool)
    mask[::3] = False  # candidates only: the cold-start path (columns ranked alone)
    relevant = relevant_entries(train, test, mask)
    users = np.flatnonzero(np.diff(relevant.indptr))

    def run(threads: int) -> tuple[np.ndarray, np.ndarray]:
        return rank_and_auc(
            lambda u: scores[u], users, train, relevant, mask, 20, batch_size=8, threads=threads
        )

    whole = run(1)
    monkeypatch.setattr(batches, "CHUNK_CELLS", 3 * 400)  # three rows a chunk: batches cut in pieces
    for threads in (1, 3):
        top, auc = run(threads)
        assert np.array_equal(top, whole[0])
        assert np.array_equal(auc, whole[1], equal_nan=True)
    assert (whole[0] >= 0).all() and mask[whole[0]].all()


def test_variants_on_threads_equal_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = random_split(70, 300, seed=15)
    scores = tied_scores(70, 300, seed=16)

    def variants(raw: np.ndarray) -> Iterator[tuple[Hashable, np.ndarray]]:
        for shift in (0.0, 0.3, 0.6):
            yield shift, raw - shift * np.arange(raw.shape[1], dtype=np.float32) / raw.shape[1]

    def run() -> dict[Hashable, RankedEvaluation]:
        return evaluate_variants(lambda u: scores[u], variants, train, test, EvaluateParams(), batch_size=6)

    monkeypatch.setenv(THREADS_ENV, "1")
    one = run()
    monkeypatch.setenv(THREADS_ENV, "3")
    monkeypatch.setattr(batches, "CHUNK_CELLS", 2 * 300)
    three = run()
    assert list(three) == [0.0, 0.3, 0.6]
    for key, ranked in one.items():
        assert np.array_equal(three[key].top_k, ranked.top_k)
        assert three[key].result == ranked.result
    assert one[0.0].result != one[0.6].result


def test_a_bad_batch_on_a_thread_fails_the_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = random_split(60, 50, seed=17)
    scores = np.random.default_rng(18).random((60, 50))
    scores[41, 3] = np.nan
    monkeypatch.setenv(THREADS_ENV, "2")
    with pytest.raises(ValueError, match=r"NaN scores for users \[41\]"):
        evaluate(lambda u: scores[u], train, test, EvaluateParams(), batch_size=8)


def test_the_thread_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert 1 <= evaluation_threads() <= 4
    monkeypatch.setenv(THREADS_ENV, "3")
    assert evaluation_threads() == 3
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(RecsysError, match=f"{THREADS_ENV} must be a positive whole number.*{bad!r}"):
            evaluation_threads()


def test_refuses_before_scoring_when_batches_do_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = random_split(30, 40, seed=19)
    scored: list[int] = []

    def score(users: np.ndarray) -> np.ndarray:
        scored.append(len(users))
        return np.zeros((len(users), 40))

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.000001")
    with pytest.raises(
        MemoryBoundError, match=f"evaluating 2 batch\\(es\\) of 16 users x 40 items.*{THREADS_ENV}=1"
    ):
        rank_and_auc(
            score,
            np.arange(30),
            train,
            relevant_entries(train, test, np.ones(40, bool)),
            np.ones(40, bool),
            5,
            16,
            2,
        )
    assert scored == []


def test_the_counting_rule_is_what_auc_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forcing either way through ``auc_rows`` gives the same AUC bytes (ties and masked items included)."""
    train, test = random_split(40, 2_500, seed=20, density=0.01)
    scores = tied_scores(40, 2_500, seed=21)
    users = np.arange(40)
    monkeypatch.setattr(metrics, "counting_is_cheaper", lambda n_values, n_items: True)
    counted = auc_per_user(lambda u: scores[u], users, train, test)
    monkeypatch.setattr(metrics, "counting_is_cheaper", lambda n_values, n_items: False)
    sorted_ = auc_per_user(lambda u: scores[u], users, train, test)
    assert np.array_equal(counted, sorted_, equal_nan=True)
    assert np.isfinite(counted).sum() >= 35


def test_variants_are_made_a_chunk_of_rows_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bias curve's variants never hold a batch-sized copy: ``variants`` sees a chunk of rows at a time,
    and the curve plans the memory of a plain evaluation."""
    import recsys.offline.batches as planned

    train, test = random_split(30, 40, seed=22)
    needed: list[int] = []
    seen: list[int] = []
    monkeypatch.setattr(planned, "require", lambda n_bytes, what, fix: needed.append(n_bytes))
    monkeypatch.setattr(planned, "CHUNK_CELLS", 3 * 40)
    monkeypatch.setenv(THREADS_ENV, "1")
    scores = np.random.default_rng(23).random((30, 40))

    def variants(raw: np.ndarray) -> Iterator[tuple[Hashable, np.ndarray]]:
        seen.append(len(raw))
        yield 0, raw

    evaluate(lambda u: scores[u], train, test, EvaluateParams(), batch_size=16)
    evaluate_variants(lambda u: scores[u], variants, train, test, EvaluateParams(), batch_size=16)
    assert needed == [16 * 40 * planned.BYTES_PER_BATCH_CELL] * 2
    assert max(seen) == 3 and sum(seen) == len(
        np.unique(relevant_entries(train, test, np.ones(40, bool)).nonzero()[0])
    )
