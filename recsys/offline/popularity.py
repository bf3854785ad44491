"""Popularity bias per user group: who gets recommendations more mainstream than their own taste."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from recsys.models.scorer import MISSING

PAD_ITEM = MISSING
"""Filler in a top-k array when a user has fewer than k candidate items; never a real item (the scorer's
:data:`recsys.models.scorer.MISSING`)."""


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


def user_groups(
    mainstreaminess_scores: np.ndarray, names: Sequence[str] = ("niche", "medium", "mainstream")
) -> dict[str, np.ndarray]:
    """Split users into equal-size quantile groups of mainstreaminess, lowest first.

    Users whose score is NaN (no interactions) belong to no group. Users are ordered by score and then
    by index, so equal scores at a boundary are split deterministically and group sizes differ by at
    most one.

    Parameters
    ----------
    mainstreaminess_scores
        One score per user (see :func:`mainstreaminess`).
    names
        Group names from least to most mainstream (``params.evaluate.groups``).

    Returns
    -------
    dict[str, np.ndarray]
        Group name -> sorted user indices (int64).

    Examples
    --------
    >>> groups = user_groups(np.array([0.9, np.nan, 0.1, 0.5, 0.2]), names=("low", "high"))
    >>> {name: members.tolist() for name, members in groups.items()}
    {'low': [2, 4], 'high': [0, 3]}
    """
    if not names or len(set(names)) != len(names):
        raise ValueError(f"group names must be non-empty and distinct, got {list(names)}")
    scores = np.asarray(mainstreaminess_scores, dtype=np.float64)
    known = np.flatnonzero(~np.isnan(scores))
    order = known[np.argsort(scores[known], kind="stable")]
    parts = np.array_split(order, len(names))
    return {name: np.sort(part).astype(np.int64) for name, part in zip(names, parts, strict=True)}


def mainstreaminess_groups(
    interactions: sp.csr_matrix, names: Sequence[str] = ("niche", "medium", "mainstream")
) -> dict[str, np.ndarray]:
    """Users of ``interactions`` in equal-size groups by mainstreaminess: the groups every metric uses.

    The evaluate and bias stages, the gate's re-measured champion and the retraining flow all group
    users through here (:func:`user_groups` of :func:`mainstreaminess`).
    """
    return user_groups(mainstreaminess(interactions), names)


def mean_list_value(top_k_items: np.ndarray, item_values: np.ndarray) -> np.ndarray:
    """Per user: the mean of ``item_values`` over the user's recommended items (NaN for an empty list).

    Padding entries (``PAD_ITEM``) are ignored.

    Examples
    --------
    >>> mean_list_value(np.array([[0, 2], [1, -1], [-1, -1]]), np.array([1.0, 4.0, 3.0])).tolist()
    [2.0, 4.0, nan]
    """
    valid = top_k_items != PAD_ITEM
    values = np.where(valid, item_values[np.where(valid, top_k_items, 0)], 0.0)
    counts = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, values.sum(axis=1) / counts, np.nan)


def popularity_lift(top_k_items: np.ndarray, train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Per user: mean popularity of the recommended items / mean popularity of the user's training items.

    Popularity is the number of training users of an item. A lift above 1 means the recommendations are
    more mainstream than the user's own taste (popularity bias amplified); NaN when the user has no
    training items or no recommendations.

    Parameters
    ----------
    top_k_items
        ``(len(users), k)`` recommended item indices, padded with ``PAD_ITEM``.
    train
        ``(n_users, n_items)`` training interactions.
    users
        Row of ``train`` for each row of ``top_k_items``.

    Examples
    --------
    >>> train = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 0]]))
    >>> popularity_lift(np.array([[0], [2]]), train, np.array([0, 1])).tolist()
    [1.3333333333333333, 0.6666666666666666]
    """
    popularity = item_popularity(train)
    recommended = mean_list_value(top_k_items, popularity)
    own_rows = (sp.csr_matrix(train)[users] > 0).astype(np.float64)
    counts = np.asarray(own_rows.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(counts > 0, (own_rows @ popularity) / counts, np.nan)
        return recommended / own


def popularity_lift_summary(
    lift: np.ndarray, users: np.ndarray, groups: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float | int]]:
    """Summarise per-user popularity lift within each user group.

    Parameters
    ----------
    lift
        One value per entry of ``users`` (see :func:`popularity_lift`); NaN values are ignored.
    users
        User index of each entry of ``lift``.
    groups
        Group name -> user indices (see :func:`user_groups`).

    Returns
    -------
    dict
        Group name -> ``{"mean", "median", "share_above_one", "n_users"}``; a group with no finite
        lift value holds only ``{"n_users": 0}``.
    """
    summary: dict[str, dict[str, float | int]] = {}
    for name, members in groups.items():
        values = lift[np.isin(users, members) & np.isfinite(lift)]
        if values.size == 0:
            summary[name] = {"n_users": 0}
            continue
        summary[name] = {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "share_above_one": float((values > 1.0).mean()),
            "n_users": int(values.size),
        }
    return summary


def rerank_popularity(scores: np.ndarray, popularity: np.ndarray, strength: float) -> np.ndarray:
    """Penalise popular items: ``z(scores) - strength * z(log1p(popularity))``.

    Both terms are standardised (scores per user row over its finite entries, log-popularity over the
    catalogue), so ``strength`` means the same for every model whatever the scale of its scores: one
    unit of strength trades one standard deviation of score for one standard deviation of
    log-popularity. ``strength=0`` returns a positive affine transform of each row, so the ranking is
    unchanged. Non-finite scores (e.g. ``-inf`` for excluded items) are kept as they are.

    Parameters
    ----------
    scores
        ``(n_items,)`` or ``(n_users, n_items)`` scores, higher is better.
    popularity
        ``(n_items,)`` number of training users per item (see :func:`item_popularity`).
    strength
        Penalty weight, ``>= 0``.

    Returns
    -------
    np.ndarray
        Adjusted float64 scores of the same shape as ``scores``.

    Examples
    --------
    >>> adjusted = rerank_popularity(np.array([3.0, 2.0, 1.0]), np.array([100.0, 1.0, 1.0]), 2.0)
    >>> adjusted.argsort()[::-1].tolist()
    [1, 2, 0]
    """
    values = np.asarray(scores, dtype=np.float64)
    ((_, adjusted),) = popularity_variants(popularity, [strength])(values)
    return adjusted.reshape(values.shape)


def reranked_scores(
    score_fn: Callable[[np.ndarray], np.ndarray], popularity: np.ndarray, strength: float
) -> Callable[[np.ndarray], np.ndarray]:
    """``score_fn`` as served at ``strength``: its scores through :func:`rerank_popularity` (unchanged at 0).

    The gate measures a model packaged with a strength through this, as the service ranks it.
    """
    if strength == 0:
        return score_fn
    return lambda users: rerank_popularity(score_fn(users), popularity, strength)


def popularity_variants(
    popularity: np.ndarray, strengths: Sequence[float]
) -> Callable[[np.ndarray], Iterator[tuple[float, np.ndarray]]]:
    """:func:`rerank_popularity` at each of ``strengths`` in turn: a function of a score matrix that yields
    ``(strength, adjusted)``, standardising the scores once per call and the popularity penalty once here;
    one adjusted float64 array at a time, identical to ``rerank_popularity(scores, popularity, strength)``.

    Row-wise (each adjusted row depends only on its own row of scores), so the trade-off curve applies it
    to a few rows at a time (:func:`recsys.offline.evaluation.evaluate_variants`) with the same numbers.

    Raises
    ------
    ValueError
        When a strength is negative or not finite.

    Examples
    --------
    >>> variants = popularity_variants(np.array([9.0, 1.0]), [0, 9])
    >>> [(s, a.argmax()) for s, a in variants(np.array([3.0, 2.0]))]
    [(0.0, np.int64(0)), (9.0, np.int64(1))]
    """
    for strength in strengths:
        if not np.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    penalty = _standardise(np.log1p(popularity))
    ordered = [float(strength) for strength in strengths]

    def variants(scores: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        rows = np.atleast_2d(np.asarray(scores, dtype=np.float64))
        if rows.shape[1] != len(popularity):
            raise ValueError(f"scores have {rows.shape[1]} items but popularity has {len(popularity)}")
        standardised = _standardise_rows(rows)
        for strength in ordered:
            yield strength, standardised - strength * penalty

    return variants


def _standardise(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def _standardise_rows(rows: np.ndarray) -> np.ndarray:
    finite = np.isfinite(rows)
    if finite.all():
        # The common case (raw model scores): the same arithmetic as below without the masking passes,
        # so the result is bit-identical, in a third of the time and memory.
        centred = rows - rows.sum(axis=1, keepdims=True) / rows.shape[1]
        std = np.sqrt((centred**2).sum(axis=1, keepdims=True) / rows.shape[1])
        centred /= np.where(std > 0, std, 1.0)
        return centred
    counts = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    filled = np.where(finite, rows, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / counts
    spread = np.where(finite, rows - mean, 0.0)
    std = np.sqrt((spread**2).sum(axis=1, keepdims=True) / counts)
    # A row of equal scores has no spread; centring it alone keeps it a (trivial) monotone transform.
    scale = np.where(std > 0, std, 1.0)
    return np.where(finite, (rows - mean) / scale, rows)
