"""Offline evaluation: rank every evaluated user, then the metrics of :mod:`recsys.offline.metrics`, overall,
per user group and for cold start.

Protocol (``DESIGN.md``): the items in a user's training row are excluded from that user's ranking and
every other item is a candidate; the cold-start protocol restricts candidates to the held-out items.
Users are scored in batches and ranked by :mod:`recsys.offline.ranking`, so the whole Last.fm matrix
(1,892 x 17,632) is evaluated in seconds.

Conventions
-----------
- A top-k array is ``(n_users, k)`` item indices, best first, padded with ``PAD_ITEM`` (-1) when a
  user has fewer than ``k`` candidate items. Padding is never relevant and never counted as an item.
- Any stored non-zero training entry excludes the item; a test entry is relevant when it is positive.
- Ties in the top-k are ordered by item index; of several items tied at the k-th place, the lowest
  indices are kept (:func:`recsys.models.scorer.best_k`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.offline.batches import BATCH_SIZE, ScoreFn, each_batch, masked, offset, row_chunks, shape_checked
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
from recsys.offline.ranking import candidate_mask, rank_and_auc, top_k_padded

Ranker = Callable[[np.ndarray, sp.csr_matrix, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``(users, relevant, mask, k_max) -> (top_k, auc)``: what :func:`rank_and_auc` computes for
:func:`evaluate`, elsewhere (e.g. shards of users on Dask workers: :mod:`recsys.offline.sharding`)."""

Metrics = dict[str, float | int]


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics averaged over evaluated users, overall and per user group.

    ``metrics`` maps ``"<name>@<k>"`` (precision, recall, f1, map, ndcg, hit_rate, coverage, arp,
    long_tail_share, novelty and, with item vectors, ild), ``"auc"`` and ``"n_users"`` to Python
    numbers; ``groups`` maps a group name to the same keys over its users (only ``{"n_users": 0}`` for a
    group with no evaluated user). ``users`` are the evaluated user indices and ``per_user`` each ranking
    metric's value per evaluated user, in that order (for paired comparisons:
    :mod:`recsys.offline.uncertainty`); neither is written to the report.
    """

    metrics: Metrics
    groups: dict[str, Metrics] = field(default_factory=dict)
    users: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), compare=False, repr=False)
    per_user: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The overall metrics plus a ``"groups"`` entry: plain JSON-serialisable data."""
        return {**self.metrics, "groups": {name: dict(values) for name, values in self.groups.items()}}


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
    600 MB float64 array per strength per batch cost about as much as ranking it.

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
                top[at] = top_k_padded(scores, k_max)
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
    return EvaluationResult(metrics=overall, groups=summaries, users=users, per_user=per_user)


def relevant_entries(train: sp.csr_matrix, test: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """Binary positive test entries that are candidates and not training items of the same user."""
    positive = (sp.csr_matrix(test) > 0).astype(np.float64)
    in_train = positive.multiply(sp.csr_matrix(train) != 0)
    relevant = sp.csr_matrix((positive - in_train).multiply(mask[None, :].astype(np.float64)))
    relevant.eliminate_zeros()
    return relevant
