"""Baselines every candidate must beat: most popular, item-kNN (cosine) and EASE.

They score a user from the items in that user's training row, so each keeps its (binarised or
weighted) training matrix. None trains incrementally: ``fit_partial`` raises ``NotImplementedError``.
Item features are accepted for interface compatibility and ignored.

Examples
--------
>>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=np.float32))
>>> MostPopular().fit(x).score(np.array([0])).tolist()
[[3.0, 2.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from recsys.config import EaseParams, ItemKNNParams
from recsys.memory import require
from recsys.models.base import (
    NotFittedError,
    Recommender,
    check_interactions,
    check_users,
    sparse_from_arrays,
    sparse_to_arrays,
)


def binarize(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """The same sparsity pattern with every stored weight set to 1 (float32)."""
    binary = interactions.astype(np.float32, copy=True)
    binary.data[:] = 1.0
    return binary


def item_user_counts(interactions: sp.csr_matrix) -> np.ndarray:
    """Number of distinct users per item (stored nonzeros per column), as float32."""
    return np.bincount(interactions.indices, minlength=interactions.shape[1]).astype(np.float32)


def keep_top_per_row(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the ``n`` largest stored values of each row (ties: lower column first); sparse throughout."""
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    counts = np.diff(matrix.indptr)
    if matrix.nnz == 0 or counts.max() <= n:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-matrix.data, rows))
    rank = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    keep = np.sort(order[rank < n])
    indptr = np.concatenate([[0], np.cumsum(np.minimum(counts, n))])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


class MostPopular(Recommender):
    """Ranks items by their number of distinct training users, the same list for everyone."""

    def __init__(self, name: str = "most_popular") -> None:
        self.name = name
        self._popularity: np.ndarray | None = None
        self._n_users = 0

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Count the distinct users of every item; ``item_features`` is ignored."""
        matrix = check_interactions(interactions)
        self._popularity = item_user_counts(matrix)
        self._n_users = matrix.shape[0]
        return self

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self._fitted())

    def _fitted(self) -> np.ndarray:
        if self._popularity is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")
        return self._popularity

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Every user gets the popularity counts as scores."""
        popularity = self._fitted()
        users = check_users(user_indices, self._n_users)
        return np.tile(popularity, (len(users), 1))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"name": self.name, "n_users": self._n_users}, {"popularity": self._fitted()}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(name=meta["name"])
        model._popularity = arrays["popularity"]
        model._n_users = int(meta["n_users"])
        return model


class ItemItemRecommender(Recommender):
    """A model that scores a user as their history row times an item-item matrix (item-kNN, RP3beta)."""

    _history: sp.csr_matrix | None = None
    _matrix: sp.csr_matrix | None = None

    @property
    def n_items(self) -> int:
        """Number of items."""
        return int(self._fitted()[0].shape[1])

    def _fitted(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        if self._history is None or self._matrix is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")
        return self._history, self._matrix

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Each item's weights summed over the user's history items: ``x_u @ M``."""
        history, matrix = self._fitted()
        users = check_users(user_indices, history.shape[0])
        return np.asarray((history[users] @ matrix).toarray(), dtype=np.float32)


class ItemKNN(ItemItemRecommender):
    """Item-item cosine neighbours: ``score = user row @ S``.

    ``S[i, j] = x_i . x_j / (|x_i| |x_j| + shrink)`` over the item columns ``x`` of the binarised matrix
    (or the weighted one when ``use_weights``), without the diagonal; each row ``i`` keeps only its
    ``neighbours`` largest entries, so a history item votes for its nearest neighbours only. The shrink
    term damps similarities resting on few co-listeners.

    Parameters
    ----------
    params : ItemKNNParams
        ``neighbours`` and ``shrink``.
    use_weights : bool
        Use the confidence weights instead of 0/1, both for the similarity and for scoring.
    name : str
        Name in reports.
    """

    def __init__(self, params: ItemKNNParams, use_weights: bool = False, name: str = "itemknn") -> None:
        self.params = params
        self.use_weights = use_weights
        self.name = name
        self._history: sp.csr_matrix | None = None
        self._matrix: sp.csr_matrix | None = None

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Compute the pruned item-item similarity; ``item_features`` is ignored."""
        matrix = check_interactions(interactions)
        history = matrix if self.use_weights else binarize(matrix)
        self._matrix = cosine_neighbours(history, self.params.neighbours, self.params.shrink)
        self._history = history
        return self

    @property
    def similarity(self) -> sp.csr_matrix:
        """The pruned ``(n_items, n_items)`` similarity matrix (row = history item)."""
        return self._fitted()[1]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        history, similarity = self._fitted()
        meta = {"name": self.name, "params": self.params.model_dump(), "use_weights": self.use_weights}
        return meta, {**sparse_to_arrays("history", history), **sparse_to_arrays("similarity", similarity)}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(
            ItemKNNParams.model_validate(meta["params"]), use_weights=meta["use_weights"], name=meta["name"]
        )
        model._history = sparse_from_arrays("history", arrays)
        model._matrix = sparse_from_arrays("similarity", arrays)
        return model


ITEM_BLOCK_ENTRIES = 20_000_000
"""Upper bound of the stored entries of one block of item-item rows before pruning (~250 MB with their
indices). Item-kNN and RP3beta build their matrices a block of rows at a time, so their memory follows the
kept neighbours, not the full co-occurrence matrix (6.9 GB for item-kNN at 100k users x 150k items when it
was built whole)."""


def blockwise_top(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    neighbours: int,
    finish: Callable[[sp.csr_matrix, np.ndarray], sp.csr_matrix],
    max_entries: int = ITEM_BLOCK_ENTRIES,
) -> sp.csr_matrix:
    """``keep_top_per_row(finish(left @ right), neighbours)`` built a block of rows at a time.

    ``finish(block, rows)`` turns the product's rows ``rows`` into the values to prune (e.g. cosine from
    co-occurrence, diagonal removed). Blocks are cut so that each product holds at most ``max_entries``
    entries by an upper bound (a row's entries times the lengths of the right-hand rows it meets, capped by
    the number of columns), one row at least; each row is computed as in the whole product.
    """
    pattern = left.copy()
    pattern.data = np.ones_like(pattern.data, dtype=np.float64)
    bound = np.minimum(pattern @ np.diff(right.indptr).astype(np.float64), right.shape[1])
    parts, start = [], 0
    ends = np.cumsum(bound)
    while start < left.shape[0]:
        offset = ends[start - 1] if start else 0.0
        stop = max(int(np.searchsorted(ends, offset + max_entries, side="right")), start + 1)
        block = sp.csr_matrix(left[start:stop] @ right)
        parts.append(keep_top_per_row(finish(block, np.arange(start, stop)), neighbours))
        start = stop
    if not parts:
        return sp.csr_matrix((left.shape[0], right.shape[1]), dtype=np.float32)
    return sp.csr_matrix(sp.vstack(parts, format="csr"))


def cosine_neighbours(
    matrix: sp.csr_matrix, neighbours: int, shrink: float, max_entries: int = ITEM_BLOCK_ENTRIES
) -> sp.csr_matrix:
    """Shrunk cosine similarity of the columns of ``matrix``, diagonal removed, top ``neighbours`` per row
    (built :func:`blockwise_top`, ``max_entries`` at a time)."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0), dtype=np.float64).ravel())

    def cosine(block: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
        co = block.tocoo()
        items = rows[co.row]
        off_diagonal = items != co.col
        row, col = co.row[off_diagonal], co.col[off_diagonal]
        values = co.data[off_diagonal] / (norms[items[off_diagonal]] * norms[col] + shrink)
        return sp.csr_matrix((values.astype(np.float32), (row, col)), shape=co.shape)

    return blockwise_top(sp.csr_matrix(matrix.T), sp.csr_matrix(matrix), neighbours, cosine, max_entries)


class EASE(Recommender):
    """Embarrassingly shallow autoencoder (Steck, 2019) on the binarised matrix.

    ``B = I - P / diag(P)`` (column-wise) with ``P = (X^T X + l2 I)^-1``, so ``diag(B) = 0`` and
    ``score = x_u @ B``. The dense inverse is cubic in the number of items (and its memory quadratic:
    :func:`ease_bytes`), so only items with at least ``min_item_users`` training users are modelled (about
    4.6k of 17.6k artists at 3 on Last.fm 2K), at most the ``max_items`` most listened of them (the
    bounded variant at scale); a catalogue that still does not fit is refused before allocating.
    Every other item scores strictly below every modelled item of the same user, ordered among
    themselves by popularity, so rankings stay total and finite.

    Parameters
    ----------
    params : EaseParams
        ``l2`` (ridge strength) and ``min_item_users``.
    name : str
        Name in reports.
    """

    def __init__(self, params: EaseParams, name: str = "ease") -> None:
        self.params = params
        self.name = name
        self._history: sp.csr_matrix | None = None
        self._weights: np.ndarray | None = None
        self._kept: np.ndarray | None = None
        self._popularity: np.ndarray | None = None

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Solve the closed form on the kept items; ``item_features`` is ignored."""
        history = binarize(check_interactions(interactions))
        popularity = item_user_counts(history)
        kept = np.flatnonzero(popularity >= self.params.min_item_users)
        if kept.size == 0:
            raise ValueError(
                f"no item has >= {self.params.min_item_users} training users: lower ease.min_item_users"
            )
        if kept.size > self.params.max_items:  # the bounded variant: the most listened items only
            kept = np.sort(kept[np.argsort(-popularity[kept], kind="stable")[: self.params.max_items]])
        require(
            ease_bytes(kept.size),
            f"EASE on {kept.size:,} items",
            "lower train.ease.max_items (EASE then models the most listened items only)",
        )
        self._weights = ease_weights(history[:, kept], self.params.l2)
        self._history, self._kept, self._popularity = history[:, kept].tocsr(), kept, popularity
        return self

    @property
    def n_items(self) -> int:
        """Number of items (modelled or not)."""
        return len(self._fitted()[3])

    @property
    def kept_items(self) -> np.ndarray:
        """Indices of the modelled items (>= ``min_item_users`` training users)."""
        return self._fitted()[2]

    def _fitted(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
        if self._history is None or self._weights is None or self._kept is None or self._popularity is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")
        return self._history, self._weights, self._kept, self._popularity

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """``x_u @ B`` on modelled items; the rest just below each user's lowest modelled score."""
        history, weights, kept, popularity = self._fitted()
        users = check_users(user_indices, history.shape[0])
        kept_scores = np.asarray(history[users] @ weights, dtype=np.float32)
        floor = kept_scores.min(axis=1, keepdims=True)
        # Popularity in [0, 1) orders the unmodelled items without lifting any above the floor.
        tie_break = popularity / (popularity.max() + 1.0)
        scores = np.asarray(floor - 1.0 + tie_break[np.newaxis, :], dtype=np.float32)
        scores[:, kept] = kept_scores
        return scores

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        history, weights, kept, popularity = self._fitted()
        arrays = {"weights": weights, "kept": kept, "popularity": popularity}
        return {"name": self.name, "params": self.params.model_dump()}, {
            **arrays,
            **sparse_to_arrays("history", history),
        }

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(EaseParams.model_validate(meta["params"]), name=meta["name"])
        model._history = sparse_from_arrays("history", arrays)
        model._weights, model._kept = arrays["weights"], arrays["kept"]
        model._popularity = arrays["popularity"]
        return model


def ease_bytes(n_items: int) -> int:
    """Peak memory of :func:`ease_weights` on ``n_items`` items: the float64 Gram matrix beside the
    inverse's working copy and result (3 x 8 bytes per cell), and LAPACK's workspace: 32 bytes per cell
    all told (measured: 12.5 GB peak RSS for 20,000 items, ``make bench-scale`` S10)."""
    return 32 * n_items * n_items


def ease_weights(binary: sp.csr_matrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` (float32, zero diagonal) of a binary user-item matrix."""
    gram = np.asarray((binary.T @ binary).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    del gram
    precision /= -np.diag(precision)[np.newaxis, :]  # in place: the peak stays at the inverse's
    precision[np.diag_indices_from(precision)] = 0.0
    return precision.astype(np.float32)
