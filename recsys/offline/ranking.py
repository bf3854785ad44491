"""Ranking for offline evaluation: every evaluated user's top-k list and AUC from one scoring pass, a
chunk of rows at a time (:mod:`recsys.offline.batches`), among every item or a candidate subset (cold
start). :mod:`recsys.offline.evaluation` turns the lists into metrics.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.models.scorer import top_k_from_scores
from recsys.offline.batches import BATCH_SIZE, ScoreFn, each_masked_chunk
from recsys.offline.metrics import auc_rows
from recsys.offline.popularity import PAD_ITEM


def candidate_mask(candidates: np.ndarray | None, n_items: int) -> np.ndarray:
    """A boolean item mask from a boolean mask, an index array, or None (every item is a candidate)."""
    if candidates is None:
        return np.ones(n_items, dtype=bool)
    values = np.asarray(candidates)
    if values.dtype == bool:
        if values.shape != (n_items,):
            raise ValueError(f"candidate mask has shape {values.shape}, expected ({n_items},)")
        return values.copy()
    if values.size and (values.min() < 0 or values.max() >= n_items):
        raise ValueError(f"candidate indices must lie in [0, {n_items}), got {values.min()}..{values.max()}")
    mask = np.zeros(n_items, dtype=bool)
    mask[values.astype(np.intp)] = True
    return mask


def rank_top_k(
    score_fn: ScoreFn,
    users: np.ndarray,
    k_max: int,
    exclude: sp.csr_matrix,
    candidates: np.ndarray | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """The ``k_max`` best-scored candidate items of each user, best first.

    Parameters
    ----------
    score_fn
        Model scores for a batch of user indices.
    users
        User (row) indices to rank for.
    k_max
        Length of each list.
    exclude
        ``(n_users, n_items)``; a user's stored non-zero items never appear in their list.
    candidates
        Boolean item mask or item indices restricting the ranking (cold start); None = all items.
    batch_size
        Users scored at once (memory is ``batch_size * n_items`` floats).

    Returns
    -------
    np.ndarray
        ``(len(users), k_max)`` int64 item indices padded with ``PAD_ITEM``.

    Examples
    --------
    >>> scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    >>> rank_top_k(lambda u: scores[u], np.array([0]), 3, sp.csr_matrix([[0, 1, 0, 0]])).tolist()
    [[3, 2, 0]]
    """
    mask = candidate_mask(candidates, exclude.shape[1])
    top = np.full((len(users), k_max), PAD_ITEM, dtype=np.int64)

    def visit(rows: slice, scores: np.ndarray, columns: np.ndarray | None) -> None:
        top[rows] = _item_indices(top_k_padded(scores, k_max), columns)

    each_masked_chunk(score_fn, np.asarray(users), exclude, mask, batch_size, visit)
    return top


def auc_per_user(
    score_fn: ScoreFn,
    users: np.ndarray,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    candidates: np.ndarray | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """Per user: the probability that a held-out item outscores a random non-interacted candidate.

    Training items are excluded from both sides; test items outside ``candidates`` are ignored; ties
    count 1/2. NaN for a user with no positive or no negative candidate.

    Examples
    --------
    >>> scores = np.array([[0.9, 0.8, 0.1, 0.5]])
    >>> train, test = sp.csr_matrix([[1, 0, 0, 0]]), sp.csr_matrix([[0, 0, 1, 1]])
    >>> auc_per_user(lambda u: scores[u], np.array([0]), train, test).tolist()
    [0.0]
    """
    users = np.asarray(users)
    mask = candidate_mask(candidates, train.shape[1])
    test_rows = sp.csr_matrix(test)[users]
    auc = np.full(len(users), np.nan)

    def visit(rows: slice, scores: np.ndarray, columns: np.ndarray | None) -> None:
        auc[rows] = auc_rows(scores, _columns_of(test_rows[rows], columns))

    each_masked_chunk(score_fn, users, train, mask, batch_size, visit)
    return auc


def rank_and_auc(
    score_fn: ScoreFn,
    users: np.ndarray,
    train: sp.csr_matrix,
    relevant: sp.csr_matrix,
    mask: np.ndarray,
    k_max: int,
    batch_size: int = BATCH_SIZE,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k lists and AUC of ``users`` from one scoring pass, ``batch_size`` users at a time on
    ``threads`` threads (default :func:`recsys.offline.batches.evaluation_threads`): each user's numbers
    depend only on the user's own row, so shards, batches and threads give the same bytes. ``relevant``
    and ``mask`` as :func:`recsys.offline.evaluation.evaluate` builds them
    (:func:`recsys.offline.evaluation.relevant_entries`)."""
    top = np.full((len(users), k_max), PAD_ITEM, dtype=np.int64)
    auc = np.full(len(users), np.nan)
    relevant_rows = relevant[users]

    def visit(rows: slice, scores: np.ndarray, columns: np.ndarray | None) -> None:
        top[rows] = _item_indices(top_k_padded(scores, k_max), columns)
        auc[rows] = auc_rows(scores, _columns_of(relevant_rows[rows], columns))

    each_masked_chunk(score_fn, users, train, mask, batch_size, visit, threads)
    return top, auc


def _columns_of(matrix: sp.csr_matrix, columns: np.ndarray | None) -> sp.csr_matrix:
    return matrix if columns is None else matrix[:, columns]


def _item_indices(top: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    """Top-k positions among ``columns`` -> item indices (padding kept)."""
    if columns is None:
        return top
    return np.where(top == PAD_ITEM, PAD_ITEM, columns[np.maximum(top, 0)])


def top_k_padded(scores: np.ndarray, k_max: int) -> np.ndarray:
    """:func:`recsys.models.scorer.top_k_from_scores` (the one top-k), padded to ``k_max`` columns."""
    top, _ = top_k_from_scores(scores, k_max)
    padding = np.full((len(scores), k_max - top.shape[1]), PAD_ITEM, dtype=np.int64)
    return np.hstack([top, padding])
