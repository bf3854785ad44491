"""Fast top-k ranking: one dot product per item, partial sort of only the k best.

Factor models score a user-item pair as ``u . v + b_u + b_i``. :class:`TopKScorer` folds both biases
into the vectors, user row ``[u, b_u, 1]`` and item row ``[v, 1, b_i]``, so a whole score matrix is a
single matrix product and any nearest-neighbour index over the item rows ranks the same way. The user
bias is kept (it does not change one user's ranking) so that scores equal ``LightFM.predict`` exactly.

Excluded items (already listened) get the score ``-inf``. When fewer than ``k`` items remain, the
missing slots of a row hold the index ``-1`` with the score ``-inf``: an excluded item is never returned.

Examples
--------
>>> scores = np.array([[0.1, 0.9, 0.5, 0.3]], dtype=np.float32)
>>> listened = sp.csr_matrix(np.array([[0, 1, 0, 0]], dtype=np.float32))
>>> top_k_from_scores(scores, 2, listened)[0].tolist()
[[2, 3]]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

MISSING = -1
"""Index returned in a top-k slot that no allowed item fills."""


def _exclude_mask(scores: np.ndarray, exclude_rows: sp.spmatrix | sp.sparray) -> np.ndarray:
    """Return a float32 copy of ``scores`` with the nonzero cells of ``exclude_rows`` set to -inf."""
    if exclude_rows.shape != scores.shape:
        raise ValueError(
            f"exclude_rows has shape {exclude_rows.shape}, expected one row per score row {scores.shape}"
        )
    masked = np.array(scores, dtype=np.float32, copy=True)
    coo = sp.coo_matrix(exclude_rows)
    listened = coo.data != 0
    masked[coo.row[listened], coo.col[listened]] = -np.inf
    return masked


def top_k_from_scores(
    scores: np.ndarray, k: int, exclude_rows: sp.spmatrix | sp.sparray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` items of every row of a dense score matrix, best first.

    Parameters
    ----------
    scores : np.ndarray
        Dense ``(n_rows, n_items)`` scores; higher is better.
    k : int
        Number of items per row (clipped to ``n_items``).
    exclude_rows : sparse matrix, optional
        Same shape as ``scores`` (row ``i`` belongs to score row ``i``); its nonzero cells are never
        returned.

    Returns
    -------
    tuple of np.ndarray
        ``(indices, scores)``, both ``(n_rows, k)``: int64 item indices (``-1`` where no allowed item is
        left) and their float32 scores (``-inf`` there).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = np.atleast_2d(scores)
    if exclude_rows is not None:
        scores = _exclude_mask(scores, exclude_rows)
    n_items = scores.shape[1]
    k = min(k, n_items)
    candidates = best_k(scores, k)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # Best score first; equal scores keep the lower item index first.
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    indices = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    ordered = np.take_along_axis(candidate_scores, order, axis=1)
    missing = np.isneginf(ordered)
    indices[missing] = MISSING
    # A float64 caller's extreme real scores stay finite in float32 (only missing slots are -inf).
    finite = np.finfo(np.float32)
    clipped = np.clip(ordered, finite.min, finite.max) if ordered.dtype != np.float32 else ordered
    return indices, np.where(missing, -np.inf, clipped).astype(np.float32)


def best_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` best items (every item when ``k >= n_items``), unordered; of the items tied with
    the row's ``k``-th best score, the lowest indices are taken, so the set never depends on how it was
    found.

    Examples
    --------
    >>> np.sort(best_k(np.array([[0.0, 2.0, 0.0, 0.0, 1.0, 0.0]]), 3)).tolist()
    [[0, 1, 4]]
    """
    if k >= scores.shape[1]:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    candidates = _select(scores, k)
    kept = np.take_along_axis(scores, candidates, axis=1)
    kth = kept.min(axis=1, keepdims=True)
    tied = np.count_nonzero(scores == kth, axis=1)
    for row in np.flatnonzero(tied > np.count_nonzero(kept == kth, axis=1)):
        above = np.flatnonzero(scores[row] > kth[row])
        candidates[row] = np.concatenate([above, np.flatnonzero(scores[row] == kth[row])[: k - len(above)]])
    return candidates


def _select(scores: np.ndarray, k: int) -> np.ndarray:
    """``k`` best items a row (ties at the boundary arbitrary). NumPy's selection of the ``k`` largest
    slows 10-30x on rows that are mostly one value (a neighbourhood model's zero scores, popularity
    counts: 3.4 ms against 0.15 ms a 150k-item row), where selecting the ``k`` smallest of the negated
    row stays fast (0.19-0.25 ms) but is slower on distinct float64 values (0.73 ms); a sample of each
    chunk's scores picks the way (``docs/benchmarks.md``, "Scale")."""
    n_items = scores.shape[1]
    sample = np.sort(scores[:, :: max(1, n_items // SAMPLED)], axis=1)
    if np.count_nonzero(sample[:, 1:] == sample[:, :-1]) > sample.size // 4:
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]


SAMPLED = 512
"""Scores a row sampled to tell a row of mostly repeated values (:func:`_select`)."""


class TopKScorer:
    """Bias-folded user and item vectors that rank all items with one matrix product.

    Parameters
    ----------
    user_vectors : np.ndarray
        ``(n_users, d + 2)`` rows ``[u, b_u, 1]``.
    item_vectors : np.ndarray
        ``(n_items, d + 2)`` rows ``[v, 1, b_i]``.

    Examples
    --------
    >>> scorer = TopKScorer.from_factors(
    ...     np.array([[1.0, 0.0]]), np.array([0.5]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.0, 0.25])
    ... )
    >>> scorer.score(np.array([0])).round(2).tolist()
    [[1.5, 0.75]]
    >>> scorer.top_k(np.array([0]), 1)[0].tolist()
    [[0]]
    """

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> None:
        if user_vectors.ndim != 2 or item_vectors.ndim != 2 or user_vectors.shape[1] != item_vectors.shape[1]:
            raise ValueError(
                f"user vectors {user_vectors.shape} and item vectors {item_vectors.shape} must be 2-D "
                "with the same number of columns"
            )
        self.user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)

    @classmethod
    def from_factors(
        cls,
        user_embeddings: np.ndarray,
        user_biases: np.ndarray,
        item_embeddings: np.ndarray,
        item_biases: np.ndarray,
    ) -> TopKScorer:
        """Fold ``u . v + b_u + b_i`` into rows ``[u, b_u, 1]`` and ``[v, 1, b_i]``."""
        users = np.column_stack([user_embeddings, user_biases, np.ones(len(user_embeddings))])
        items = np.column_stack([item_embeddings, np.ones(len(item_embeddings)), item_biases])
        return cls(users, items)

    @property
    def n_users(self) -> int:
        """Number of known users (rows of ``user_vectors``)."""
        return int(self.user_vectors.shape[0])

    @property
    def n_items(self) -> int:
        """Number of rankable items (rows of ``item_vectors``)."""
        return int(self.item_vectors.shape[0])

    def user_vector(self, embedding: np.ndarray, bias: float = 0.0) -> np.ndarray:
        """Fold an ad-hoc user embedding of length ``d`` into a scoring row ``[u, bias, 1]``."""
        embedding = np.asarray(embedding, dtype=np.float32).ravel()
        if embedding.shape[0] + 2 != self.item_vectors.shape[1]:
            expected = self.item_vectors.shape[1] - 2
            raise ValueError(f"user embedding has {embedding.shape[0]} components, expected {expected}")
        return np.concatenate([embedding, np.array([bias, 1.0], dtype=np.float32)])

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Dense float32 ``(len(user_indices), n_items)`` scores of known users."""
        user_indices = np.asarray(user_indices, dtype=np.int64)
        if user_indices.size and (user_indices.min() < 0 or user_indices.max() >= self.n_users):
            raise IndexError(f"user indices must lie in [0, {self.n_users}); got {user_indices}")
        return self.user_vectors[user_indices] @ self.item_vectors.T

    def top_k(
        self, user_indices: np.ndarray, k: int, exclude: sp.spmatrix | sp.sparray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items for known users, best first.

        Parameters
        ----------
        user_indices : np.ndarray
            Known user rows, e.g. a batch of ~512.
        k : int
            Items per user (clipped to ``n_items``).
        exclude : sparse matrix, optional
            One row per *known user* (e.g. the training matrix); rows ``user_indices`` are taken from it
            and their nonzero items are never returned.

        Returns
        -------
        tuple of np.ndarray
            ``(indices, scores)`` as in :func:`top_k_from_scores`.
        """
        user_indices = np.asarray(user_indices, dtype=np.int64)
        scores = self.score(user_indices)
        if exclude is not None:
            if exclude.shape != (self.n_users, self.n_items):
                raise ValueError(
                    f"exclude has shape {exclude.shape}, expected one row per known user "
                    f"{(self.n_users, self.n_items)}"
                )
            # Mask straight from the CSR arrays: slicing a scipy matrix per request costs more than scoring.
            csr = exclude if isinstance(exclude, sp.csr_matrix) else sp.csr_matrix(exclude)
            for row, user in enumerate(user_indices):
                start, end = csr.indptr[user], csr.indptr[user + 1]
                scores[row, csr.indices[start:end][csr.data[start:end] != 0]] = -np.inf
        return top_k_from_scores(scores, k)

    def top_k_for_vector(
        self, vector: np.ndarray, k: int, exclude_items: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items for one ad-hoc user vector (e.g. a new listener folded in).

        Parameters
        ----------
        vector : np.ndarray
            A scoring row ``[u, b_u, 1]`` of length ``d + 2``, or a bare embedding of length ``d``
            (folded with a zero bias by :meth:`user_vector`).
        k : int
            Number of items.
        exclude_items : np.ndarray, optional
            Item indices never to return (e.g. the listener's favourites).

        Returns
        -------
        tuple of np.ndarray
            ``(indices, scores)``, each of shape ``(k,)``.
        """
        vector = np.asarray(vector, dtype=np.float32).ravel()
        if vector.shape[0] != self.item_vectors.shape[1]:
            vector = self.user_vector(vector)
        scores = (self.item_vectors @ vector)[np.newaxis, :]
        if exclude_items is not None and len(exclude_items):
            scores[0, np.asarray(exclude_items, dtype=np.int64)] = -np.inf
        indices, top_scores = top_k_from_scores(scores, k)
        return indices[0], top_scores[0]
