"""Offline evaluation: rank every evaluated user, then the metrics of :mod:`recsys.offline.metrics`, overall,
per user group and for cold start.

Protocol (``DESIGN.md``): the items in a user's training row are excluded from that user's ranking and
every other item is a candidate; the cold-start protocol restricts candidates to the held-out items.
Users are scored in batches, so the whole Last.fm matrix (1,892 x 17,632) is evaluated in seconds.

Conventions
-----------
- A top-k array is ``(n_users, k)`` item indices, best first, padded with ``PAD_ITEM`` (-1) when a
  user has fewer than ``k`` candidate items. Padding is never relevant and never counted as an item.
- Any stored non-zero training entry excludes the item; a test entry is relevant when it is positive.
- Ties in the top-k are ordered by item index; which of several items tied at the k-th place is kept
  is arbitrary but deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.models.scorer import top_k_from_scores
from recsys.offline.batches import (
    ScoreFn,
    each_batch,
    each_masked_chunk,
    masked,
    offset,
    row_chunks,
    shape_checked,
)
from recsys.offline.metrics import (
    auc_rows,
    average_recommendation_popularity,
    catalogue_coverage,
    intra_list_diversity,
    long_tail_share,
    nanmean,
    novelty,
    positive_counts,
    ranking_metrics,
)
from recsys.offline.popularity import PAD_ITEM, item_popularity

Ranker = Callable[[np.ndarray, sp.csr_matrix, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``(users, relevant, mask, k_max) -> (top_k, auc)``: what :func:`rank_and_auc` computes for
:func:`evaluate`, elsewhere (e.g. shards of users on Dask workers: :mod:`recsys.offline.sharding`)."""

BATCH_SIZE = 512


Metrics = dict[str, float | int]


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics averaged over evaluated users, overall and per user group.

    ``metrics`` maps ``"<name>@<k>"`` (precision, recall, f1, map, ndcg, hit_rate, coverage, arp,
    long_tail_share, novelty and, with item vectors, ild), ``"auc"`` and ``"n_users"`` to Python
    numbers; ``groups`` maps a group name to the same keys over its users (only ``{"n_users": 0}`` for a
    group with no evaluated user).
    """

    metrics: Metrics
    groups: dict[str, Metrics] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The overall metrics plus a ``"groups"`` entry: plain JSON-serialisable data."""
        return {**self.metrics, "groups": {name: dict(values) for name, values in self.groups.items()}}


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
        top[rows] = _item_indices(_top_k(scores, k_max), columns)

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


def evaluate(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    params: EvaluateParams,
    user_groups: Mapping[str, np.ndarray] | None = None,
    candidates: np.ndarray | None = None,
    item_vectors: np.ndarray | sp.spmatrix | None = None,
    batch_size: int = BATCH_SIZE,
    ranker: Ranker | None = None,
) -> EvaluationResult:
    """Every metric at every k in ``params.ks``, overall and per user group.

    Users with at least one relevant test item are evaluated: a positive test entry that is not a
    training item of that user and is a candidate. Coverage is relative to the candidate set;
    popularity (ARP, long tail, novelty) counts training users.

    Parameters
    ----------
    score_fn
        Model scores for a batch of user indices.
    train, test
        ``(n_users, n_items)`` interactions; train items are excluded from each user's ranking.
    params
        ``ks`` and ``head_share``.
    user_groups
        Group name -> user indices (see :func:`recsys.offline.popularity.user_groups`).
    candidates
        Boolean item mask or item indices to rank among; None = every item.
    item_vectors
        ``(n_items, d)`` item features; when given, intra-list diversity (``ild@k``) is reported.
    batch_size
        Users scored at once.
    ranker
        Computes the users' top-k lists and AUC instead of :func:`rank_and_auc` with ``score_fn`` here
        (then ``score_fn`` is unused): the same numbers, computed elsewhere.
    """
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} must have the same shape")
    mask = candidate_mask(candidates, train.shape[1])
    relevant = relevant_entries(train, test, mask)
    users = np.flatnonzero(positive_counts(relevant))
    if ranker is None:
        top_k, auc = rank_and_auc(score_fn, users, train, relevant, mask, max(params.ks), batch_size)
    else:
        top_k, auc = ranker(users, relevant, mask, max(params.ks))
    context = _ListContext(item_popularity(train), train.shape[0], int(mask.sum()), params, item_vectors)
    return _result(top_k, auc, relevant, users, context, user_groups)


@dataclass(frozen=True)
class RankedEvaluation:
    """One variant's :class:`EvaluationResult` with the lists it was computed from.

    ``top_k`` is ``(len(users), max(ks))`` item indices, best first, padded with ``PAD_ITEM``.
    """

    result: EvaluationResult
    users: np.ndarray
    top_k: np.ndarray


Variants = Callable[[np.ndarray], Iterator[tuple[Hashable, np.ndarray]]]
"""Maps a batch's raw scores to ``(key, scores)`` pairs, one variant at a time (e.g. re-ranking strengths)."""


def evaluate_variants(
    score_fn: ScoreFn,
    variants: Variants,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    params: EvaluateParams,
    user_groups: Mapping[str, np.ndarray] | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[Hashable, RankedEvaluation]:
    """:func:`evaluate` of several transforms of one model's scores from a single scoring pass.

    Each batch of users is scored once and ``variants`` turns those raw scores into every variant in
    turn, a chunk of rows (:data:`recsys.offline.batches.CHUNK_CELLS` scores) at a time, so ``variants``
    must be row-wise: each row of a variant depends only on the same row of raw scores. Each variant is
    then masked, ranked and measured exactly as :func:`evaluate` would measure a model scoring like it
    (every item a candidate). Memory is the batch's raw scores (planned as :func:`evaluate` plans them)
    and a few chunk-sized arrays, never a batch-sized one per variant: at 150k items the curve's fresh
    600 MB float64 array per strength per batch cost more than ranking it.

    Examples
    --------
    >>> scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])
    >>> train, test = sp.csr_matrix([[0, 0, 0], [1, 0, 0]]), sp.csr_matrix([[0, 1, 0], [0, 0, 1]])
    >>> flip = lambda raw: iter([("as is", raw), ("negated", -raw)])
    >>> out = evaluate_variants(lambda u: scores[u], flip, train, test, EvaluateParams(ks=[1]))
    >>> {key: ranked.top_k.ravel().tolist() for key, ranked in out.items()}
    {'as is': [0, 1], 'negated': [1, 2]}
    """
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} must have the same shape")
    n_items, k_max = train.shape[1], max(params.ks)
    mask = candidate_mask(None, n_items)
    relevant = relevant_entries(train, test, mask)
    users = np.flatnonzero(positive_counts(relevant))
    relevant_rows, exclude = relevant[users], sp.csr_matrix(train)
    tops: dict[Hashable, np.ndarray] = {}
    aucs: dict[Hashable, np.ndarray] = {}
    created = threading.Lock()

    def outputs(key: Hashable) -> tuple[np.ndarray, np.ndarray]:
        # Every batch meets the variants in the same order, so the dicts keep that order on any thread.
        with created:
            if key not in tops:
                tops[key] = np.full((len(users), k_max), PAD_ITEM, dtype=np.int64)
                aucs[key] = np.full(len(users), np.nan)
            return tops[key], aucs[key]

    def one_batch(rows: slice) -> None:
        batch = users[rows]
        raw = shape_checked(score_fn(batch), batch, n_items)
        excluded = exclude[batch]
        for part in row_chunks(len(batch), n_items):
            at = offset(part, rows.start)
            for key, variant in variants(raw[part]):
                top, auc = outputs(key)
                scores = masked(shape_checked(variant, batch[part], n_items), batch[part], excluded[part])
                top[at] = _top_k(scores, k_max)
                auc[at] = auc_rows(scores, relevant_rows[at])

    each_batch(len(users), batch_size, n_items, one_batch)
    context = _ListContext(item_popularity(train), train.shape[0], n_items, params, None)
    return {
        key: RankedEvaluation(_result(top, aucs[key], relevant, users, context, user_groups), users, top)
        for key, top in tops.items()
    }


def cold_start_evaluate(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    cold_test: sp.csr_matrix,
    cold_items: np.ndarray,
    params: EvaluateParams,
    user_groups: Mapping[str, np.ndarray] | None = None,
) -> EvaluationResult:
    """Evaluate ranking among the held-out cold items only, for users with a cold test item.

    Cold items have no training interactions, so only item features can rank them; AUC is the headline
    metric. Returns the same keys as :func:`evaluate` (ARP is 0 and the long-tail share 1 by design).
    """
    mask = candidate_mask(cold_items, train.shape[1])
    if not mask.any():
        raise ValueError("cold_items is empty: the cold-start protocol needs at least one held-out item")
    return evaluate(score_fn, train, cold_test, params, user_groups, candidates=mask)


@dataclass(frozen=True)
class _ListContext:
    popularity: np.ndarray
    n_train_users: int
    n_candidates: int
    params: EvaluateParams
    item_vectors: np.ndarray | sp.spmatrix | None


def _summarise(
    per_user: Mapping[str, np.ndarray], top_k: np.ndarray, rows: np.ndarray, context: _ListContext
) -> Metrics:
    if not rows.any():
        return {"n_users": 0}
    summary: Metrics = {name: nanmean(values[rows]) for name, values in per_user.items()}
    for k in context.params.ks:
        lists = top_k[:, :k]
        summary[f"coverage@{k}"] = catalogue_coverage(lists, context.n_candidates)
        summary[f"arp@{k}"] = average_recommendation_popularity(lists, context.popularity)
        summary[f"long_tail_share@{k}"] = long_tail_share(
            lists, context.popularity, context.params.head_share
        )
        summary[f"novelty@{k}"] = novelty(lists, context.popularity, context.n_train_users)
        if context.item_vectors is not None:
            summary[f"ild@{k}"] = intra_list_diversity(lists, context.item_vectors)
    summary["n_users"] = int(rows.sum())
    return summary


def _result(
    top_k: np.ndarray,
    auc: np.ndarray,
    relevant: sp.csr_matrix,
    users: np.ndarray,
    context: _ListContext,
    user_groups: Mapping[str, np.ndarray] | None,
) -> EvaluationResult:
    per_user = ranking_metrics(top_k, relevant, users, context.params.ks)
    per_user["auc"] = auc
    selected = {"overall": np.ones(len(users), dtype=bool)}
    selected |= {name: np.isin(users, members) for name, members in (user_groups or {}).items()}
    summaries = {name: _summarise(per_user, top_k[rows], rows, context) for name, rows in selected.items()}
    overall = summaries.pop("overall")
    return EvaluationResult(metrics=overall, groups=summaries)


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
    ``threads`` threads (default :func:`evaluation_threads`): each user's numbers depend only on the
    user's own row, so shards, batches and threads give the same bytes. ``relevant`` and ``mask`` as
    :func:`evaluate` builds them (:func:`relevant_entries`)."""
    top = np.full((len(users), k_max), PAD_ITEM, dtype=np.int64)
    auc = np.full(len(users), np.nan)
    relevant_rows = relevant[users]

    def visit(rows: slice, scores: np.ndarray, columns: np.ndarray | None) -> None:
        top[rows] = _item_indices(_top_k(scores, k_max), columns)
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


def _top_k(scores: np.ndarray, k_max: int) -> np.ndarray:
    """:func:`recsys.models.scorer.top_k_from_scores` (the one top-k), padded to ``k_max`` columns."""
    top, _ = top_k_from_scores(scores, k_max)
    padding = np.full((len(scores), k_max - top.shape[1]), PAD_ITEM, dtype=np.int64)
    return np.hstack([top, padding])


def relevant_entries(train: sp.csr_matrix, test: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """Binary positive test entries that are candidates and not training items of the same user."""
    positive = (sp.csr_matrix(test) > 0).astype(np.float64)
    in_train = positive.multiply(sp.csr_matrix(train) != 0)
    relevant = sp.csr_matrix((positive - in_train).multiply(mask[None, :].astype(np.float64)))
    relevant.eliminate_zeros()
    return relevant
