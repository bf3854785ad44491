"""Popularity bias per user group: who gets recommendations more mainstream than their own taste."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def item_popularity(interactions: sp.csr_matrix) -> np.ndarray:
    """Number of distinct users per item (column), as float64."""
    return np.asarray((interactions > 0).sum(axis=0), dtype=np.float64).ravel()


def popularity_percentile(popularity: np.ndarray) -> np.ndarray:
    """Each item's popularity as a percentile rank in [0, 1] (ties share the mean rank)."""
    order = popularity.argsort(kind="stable")
    ranks = np.empty(len(popularity), dtype=np.float64)
    ranks[order] = np.arange(len(popularity), dtype=np.float64)
    # Average the ranks of tied items so equally popular items get equal percentiles.
    _, inverse, counts = np.unique(popularity, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    mean_ranks = sums / counts
    return mean_ranks[inverse] / max(len(popularity) - 1, 1)


def mainstreaminess(interactions: sp.csr_matrix) -> np.ndarray:
    """Per user: the mean popularity percentile of the items they interacted with (NaN when none).

    A user near 1 listens almost only to the most popular artists; near 0, only to rare ones.

    Examples
    --------
    >>> m = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]]))
    >>> mainstreaminess(m).round(2).tolist()
    [0.62, 1.0, 0.25]
    """
    binary = (interactions > 0).astype(np.float64).tocsr()
    percentile = popularity_percentile(item_popularity(binary))
    counts = np.asarray(binary.sum(axis=1)).ravel()
    totals = binary @ percentile
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.nan)
