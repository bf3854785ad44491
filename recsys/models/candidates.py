"""The first stage of the two-stage ranker: candidates from several generators, and what is known of each
(listener, candidate) pair.

Each generator (any fitted :class:`~recsys.models.base.Recommender`, plus :class:`ContentNeighbours` for
items nobody has played) proposes its top ``n`` items a listener has not played; a listener's candidates
are the union. A pair's features are scale-free on purpose (a generator fitted on train for the ranker's
labels and refitted on train + valid for test scores on other scales): per generator the score
standardised over the listener's unplayed items and the rank in its top ``n`` (``n`` when absent); then
the item's popularity and cold flag, the listener's activity and mainstreaminess, how far the item's
popularity is from the listener's usual, the cosine of the item's features with the listener's profile
per feature group (tags, audio, lyrics, genre), and in how many generators' lists the item is. A ranker that
learned with sessions also reads the listener's session (:class:`SessionItems`: items liked and skipped since
the model was packaged; :func:`session_columns`): how often the item is listened with the liked and with the
skipped items (co-listening cosines) and the cosine of its features with the liked ones; missing (NaN) without
such events.

Memory is bounded: listeners are processed in batches of at most :data:`CELLS` scores of all generators.

Examples
--------
>>> x = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.float32))
>>> from recsys.models.baselines import MostPopular
>>> context = PairContext.of(x, None, None)
>>> pairs = candidate_pairs({"most_popular": MostPopular().fit(x)}, context, np.array([0, 1]), n=1)
>>> pairs.items.tolist(), pairs.offsets.tolist()
([2, 0], [0, 1, 2])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from recsys.models.base import (
    NotFittedError,
    Recommender,
    check_interactions,
    check_users,
    sparse_from_arrays,
    sparse_to_arrays,
)
from recsys.models.scorer import best_k

CELLS = 1 << 24
"""Scores held at once (all generators of a batch of listeners): 64 MB of float32."""

CONTENT_GROUPS: tuple[str, ...] = ("tags", "audio", "lyrics", "genre")
"""The feature groups a listener's profile is compared with (identity says nothing of a new item)."""

PAIR_FEATURES: tuple[str, ...] = (
    "item_log_popularity",
    "item_popularity_percentile",
    "item_cold",
    "user_log_activity",
    "user_mainstreaminess",
    "popularity_gap",
    "in_lists",
)
"""The pair features besides each generator's (``<generator>_z``, ``<generator>_rank``) and the content
cosines (``cosine_<group>``)."""

SESSION_FEATURES: tuple[str, ...] = ("session_like_colisten", "session_skip_colisten", "session_like_content")
"""The last columns of a session-aware ranker's pairs (:func:`session_columns`)."""


@dataclass(frozen=True)
class SessionItems:
    """A listener's session as the ranker reads it: the items (model indices) they liked or played, and the
    ones they skipped or disliked."""

    liked: np.ndarray
    skipped: np.ndarray

    @classmethod
    def of(cls, items: np.ndarray, weights: np.ndarray) -> SessionItems:
        """A served session's events (``items`` and their ``weights``): an item is liked when its weights sum
        above 0, skipped below (a play then a dislike: skipped), each once.

        >>> SessionItems.of(np.array([3, 5, 3, 7]), np.array([0.5, 1.0, -1.0, -0.3])).liked.tolist()
        [5]
        """
        unique, inverse = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
        total = np.bincount(inverse, weights=np.asarray(weights, dtype=np.float64), minlength=len(unique))
        return cls(unique[total > 0], unique[total < 0])


NO_SESSION = SessionItems(np.empty(0, np.int64), np.empty(0, np.int64))


@dataclass(frozen=True)
class PairContext:
    """What pair features read besides the generators: the listens and the item features by group.

    Attributes
    ----------
    interactions : csr_matrix
        The listens the generators were fitted on: played items are never candidates.
    groups : dict of str to csr_matrix
        Each content group's item rows, L2-normalised (empty without item features).
    popularity, percentile : ndarray
        Listeners per item in ``interactions``, and its percentile among the items (0 to 1).
    mainstreaminess : ndarray
        Per listener, the mean percentile of their items.
    never_played : bool
        Whether items nobody in ``interactions`` played may be candidates (else no generator proposes them).
    """

    interactions: sp.csr_matrix
    groups: dict[str, sp.csr_matrix]
    popularity: np.ndarray
    percentile: np.ndarray
    mainstreaminess: np.ndarray
    never_played: bool = True

    @property
    def blocked(self) -> np.ndarray:
        """The items that are never candidates besides a listener's own (boolean, one per item)."""
        if self.never_played:
            return np.zeros(len(self.popularity), dtype=bool)
        return self.popularity == 0

    @classmethod
    def of(
        cls,
        interactions: sp.csr_matrix,
        item_features: sp.csr_matrix | None,
        feature_groups: Mapping[str, slice] | None,
        never_played: bool = True,
    ) -> PairContext:
        """The context of ``interactions`` and the item features (groups by their column slices; without
        slices the whole matrix is one group, ``content``); ``never_played``: see the attribute."""
        matrix = check_interactions(interactions)
        popularity = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float64)
        # Ties share their average rank: equally popular items never differ by their index.
        percentile = (rankdata(popularity, method="average") - 1) / max(1, len(popularity) - 1)
        binary = (matrix > 0).astype(np.float64)
        counts = np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1)
        mainstream = np.asarray(binary @ percentile).ravel() / counts
        groups: dict[str, sp.csr_matrix] = {}
        if item_features is not None:
            slices = (
                {g: feature_groups[g] for g in CONTENT_GROUPS if g in feature_groups}
                if feature_groups is not None
                else {"content": slice(0, item_features.shape[1])}
            )
            for group, cols in slices.items():
                block = sp.csr_matrix(item_features[:, cols], dtype=np.float32)
                if block.shape[1] and block.nnz:
                    groups[group] = _l2_rows(block)
        return cls(matrix, groups, popularity, percentile, mainstream, never_played)

    @cached_property
    def listeners(self) -> sp.csr_matrix:
        """One row per item: who listened to it (binary, L2-normalised), for the co-listening cosines."""
        binary = sp.csr_matrix(self.interactions.T, dtype=np.float32)
        binary.data[:] = 1.0
        return _l2_rows(binary)

    def profiles(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """Each group's profile of ``users``: the L2-normalised sum of their items' rows (dense)."""
        rows = self.interactions[users]
        return {
            group: _l2_dense(np.asarray((rows @ block).todense())) for group, block in self.groups.items()
        }


@dataclass(frozen=True)
class CandidatePairs:
    """Candidates of a batch of listeners: ``items[offsets[i]:offsets[i + 1]]`` are listener ``users[i]``'s
    (ascending), ``features`` one row per pair (columns: :func:`feature_names`)."""

    users: np.ndarray
    items: np.ndarray
    offsets: np.ndarray
    features: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """The position in ``users`` of each pair."""
        return np.repeat(np.arange(len(self.users)), np.diff(self.offsets))


def feature_names(generators: Mapping[str, Any], context: PairContext) -> list[str]:
    """The columns of :attr:`CandidatePairs.features`, in order."""
    per_generator = [f"{name}_{kind}" for name in generators for kind in ("z", "rank")]
    return [*per_generator, *PAIR_FEATURES, *(f"cosine_{group}" for group in context.groups)]


def candidate_pairs(
    generators: Mapping[str, Recommender],
    context: PairContext,
    users: np.ndarray,
    n: int,
    sessions: Sequence[SessionItems] | None = None,
    session_n: int | None = None,
) -> CandidatePairs:
    """The candidates of ``users`` (every generator's top ``n`` unplayed items) and their features; with
    ``sessions`` (one per listener), also the ``session_n`` (default ``n``) unplayed items most listened with
    each session's liked items (what the session says the generators, fitted before it, cannot)."""
    if sessions is not None and len(sessions) != len(users):
        raise ValueError(f"{len(sessions)} sessions for {len(users)} listeners")
    parts = []
    offset = 0
    for batch in _batches(users, len(generators) + 1, context):
        chosen = None if sessions is None else sessions[offset : offset + len(batch)]
        parts.append(
            _batch_pairs(generators, context, batch, n, chosen, n if session_n is None else session_n)
        )
        offset += len(batch)
    if not parts:
        width = len(feature_names(generators, context))
        return CandidatePairs(
            users, np.empty(0, np.int64), np.zeros(1, np.int64), np.empty((0, width), np.float32)
        )
    counts = np.concatenate([np.diff(part.offsets) for part in parts])
    return CandidatePairs(
        np.concatenate([part.users for part in parts]),
        np.concatenate([part.items for part in parts]),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.concatenate([part.features for part in parts]),
    )


def session_columns(
    context: PairContext, pairs: CandidatePairs, sessions: Sequence[SessionItems]
) -> np.ndarray:
    """The :data:`SESSION_FEATURES` of ``pairs`` (one session per listener of ``pairs.users``), float32, one
    row per pair: the mean co-listening cosine of the item with the liked and with the skipped items, and the
    mean over content groups of the cosine of its features with the liked items' (NaN: no such items).

    Memory: only listeners with a session are read, in batches whose dense co-listening profiles and whose
    candidates' listener rows each hold at most :data:`CELLS` values (a listener whose candidates alone hold
    more is read alone)."""
    if len(sessions) != len(pairs.users):
        raise ValueError(f"{len(sessions)} sessions for {len(pairs.users)} listeners")
    out = np.full((len(pairs.items), len(SESSION_FEATURES)), np.nan, dtype=np.float32)
    active = np.array([i for i, s in enumerate(sessions) if len(s.liked) or len(s.skipped)], dtype=np.int64)
    if not len(active):
        return out
    by_item = context.listeners
    n_items, n_users = by_item.shape
    read = np.bincount(pairs.rows, weights=np.diff(by_item.indptr)[pairs.items], minlength=len(sessions))
    for batch in _session_batches(active, read, max(1, CELLS // max(1, n_users))):
        counts = np.diff(pairs.offsets)[batch]
        where = np.concatenate([np.arange(pairs.offsets[i], pairs.offsets[i + 1]) for i in batch])
        local = np.repeat(np.arange(len(batch)), counts)
        items = pairs.items[where]
        rows_read = by_item[items]
        for column, side in enumerate(("liked", "skipped")):
            chosen = [getattr(sessions[i], side) for i in batch]
            has = np.array([len(c) > 0 for c in chosen])
            if not has.any():
                continue
            mean = _mean_rows(chosen, n_items)
            profile = np.asarray((mean @ by_item).todense(), dtype=np.float32)
            out[where, column] = np.where(has[local], _row_dots(profile, local, rows_read), np.nan)
            if side == "liked" and context.groups:
                cosines = np.zeros(len(items))
                for block in context.groups.values():
                    liked_profile = _l2_dense(np.asarray((mean @ block).todense()))
                    cosines += _row_dots(liked_profile, local, block[items])
                out[where, 2] = np.where(has[local], cosines / len(context.groups), np.nan)
    return out


def _session_batches(listeners: np.ndarray, read: np.ndarray, most: int) -> Iterator[np.ndarray]:
    """``listeners`` in order, in batches of at most ``most`` whose ``read`` values sum to at most
    :data:`CELLS` (one listener at least)."""
    start, total = 0, 0.0
    for end, listener in enumerate(listeners.tolist()):
        if end > start and (end - start >= most or total + read[listener] > CELLS):
            yield listeners[start:end]
            start, total = end, 0.0
        total += read[listener]
    yield listeners[start:]


def _mean_rows(chosen: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """A (listeners x items) matrix whose row ``i`` averages the indicator rows of ``chosen[i]``."""
    counts = np.array([len(c) for c in chosen], dtype=np.int64)
    columns = (
        np.concatenate([np.asarray(c, dtype=np.int64) for c in chosen])
        if len(chosen)
        else np.empty(0, np.int64)
    )
    weights = np.repeat(1.0 / np.maximum(counts, 1), counts)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((weights, columns, indptr), shape=(len(chosen), n_items), dtype=np.float32)


def _batches(users: np.ndarray, n_generators: int, context: PairContext) -> Iterator[np.ndarray]:
    n_items = context.interactions.shape[1]
    size = max(1, CELLS // max(1, n_generators * n_items))
    for start in range(0, len(users), size):
        yield np.asarray(users[start : start + size], dtype=np.int64)


def _batch_pairs(
    generators: Mapping[str, Recommender],
    context: PairContext,
    users: np.ndarray,
    n: int,
    sessions: Sequence[SessionItems] | None = None,
    session_n: int = 0,
) -> CandidatePairs:
    n_items = context.interactions.shape[1]
    played = context.interactions[users]
    played_rows = np.repeat(np.arange(len(users)), np.diff(played.indptr))
    blocked = context.blocked
    scores = {}
    for name, model in generators.items():
        batch = np.array(model.score(users), dtype=np.float32)
        batch[played_rows, played.indices] = -np.inf
        batch[:, blocked] = -np.inf
        scores[name] = batch
    n = min(n, n_items)
    tops = {name: _top(batch, n) for name, batch in scores.items()}
    chosen = np.zeros((len(users), n_items), dtype=bool)
    for top in tops.values():
        chosen[np.arange(len(users))[:, None], top] = True
    if session_n > 0 and sessions is not None and any(len(session.liked) for session in sessions):
        liked = _mean_rows([session.liked for session in sessions], n_items) @ context.listeners
        with_liked = np.asarray((liked @ context.listeners.T).todense(), dtype=np.float32)
        with_liked[played_rows, played.indices] = -np.inf
        with_liked[:, blocked] = -np.inf
        has = np.array([len(session.liked) > 0 for session in sessions])
        top = _top(with_liked[has], min(session_n, n_items))
        chosen[np.flatnonzero(has)[:, None], top] |= np.take_along_axis(with_liked[has], top, 1) > 0
    chosen[played_rows, played.indices] = False
    chosen[:, blocked] = False
    rows, items = np.nonzero(chosen)
    columns = []
    in_lists = np.zeros(len(rows), dtype=np.float32)
    for name, batch in scores.items():
        columns.append(_standardised(batch)[rows, items])
        rank = np.full((len(users), n_items), n, dtype=np.int32)
        rank[np.arange(len(users))[:, None], tops[name]] = np.arange(n)
        pair_rank = rank[rows, items]
        in_lists += pair_rank < n
        columns.append(pair_rank.astype(np.float32))
    columns += _context_columns(context, users, rows, items, in_lists)
    features = (
        np.column_stack(columns).astype(np.float32) if columns else np.empty((len(rows), 0), np.float32)
    )
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(users)))]).astype(np.int64)
    return CandidatePairs(users, items.astype(np.int64), offsets, features)


def _context_columns(
    context: PairContext, users: np.ndarray, rows: np.ndarray, items: np.ndarray, in_lists: np.ndarray
) -> list[np.ndarray]:
    activity = np.diff(context.interactions.indptr)[users]
    item_pop = context.popularity[items]
    mainstream = context.mainstreaminess[users][rows]
    columns = [
        np.log1p(item_pop),
        context.percentile[items],
        (item_pop == 0).astype(np.float64),
        np.log1p(activity)[rows],
        mainstream,
        context.percentile[items] - mainstream,
        in_lists,
    ]
    for group, profile in context.profiles(users).items():
        block = context.groups[group]
        columns.append(_row_dots(profile, rows, block[items]))
    return columns


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Each row's ``n`` best columns (the scorer's :func:`~recsys.models.scorer.best_k`: of items tied at the
    ``n``-th place the lowest columns), best first."""
    columns = np.array(best_k(scores, n))
    picked = np.take_along_axis(scores, columns, axis=1)
    return np.take_along_axis(columns, np.lexsort((columns, -picked), axis=1), axis=1)


def _standardised(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean over finite cells, over their standard deviation (1 when constant)."""
    finite = np.isfinite(scores)
    values = np.where(finite, scores, 0.0).astype(np.float64)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    mean = values.sum(axis=1, keepdims=True) / count
    spread = np.sqrt(np.where(finite, (values - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count)
    return ((values - mean) / np.where(spread > 0, spread, 1.0)).astype(np.float32)


def _row_dots(profiles: np.ndarray, rows: np.ndarray, items: sp.csr_matrix) -> np.ndarray:
    """Per pair ``p``, the dot product of ``profiles[rows[p]]`` with the sparse row ``items[p]``, reading only
    the sparse rows' non-zeros (never a dense pairs x columns array)."""
    pair = np.repeat(np.arange(items.shape[0]), np.diff(items.indptr))
    values = profiles[rows[pair], items.indices] * items.data
    return np.bincount(pair, weights=values, minlength=items.shape[0])


def _l2_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix, dtype=np.float32)


def _l2_dense(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class ContentNeighbours(Recommender):
    """Items like the listener's by their features: the cosine of the item's feature row (identity left
    out) with the sum of the listener's items' rows. The one generator that reaches items nobody played."""

    def __init__(self, name: str = "content") -> None:
        self.name = name
        self._history: sp.csr_matrix | None = None
        self._items: sp.csr_matrix | None = None

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Keep the listens and the L2-normalised feature rows (an empty profile without features)."""
        self._history = check_interactions(interactions)
        n_items = self._history.shape[1]
        features = item_features if item_features is not None else sp.csr_matrix((n_items, 1))
        self._items = _l2_rows(sp.csr_matrix(features, dtype=np.float32))
        return self

    def fit_groups(
        self,
        interactions: sp.csr_matrix,
        item_features: sp.csr_matrix | None,
        groups: Mapping[str, slice] | None,
    ) -> Self:
        """:meth:`fit` on the content groups' columns only (all columns without ``groups``)."""
        if item_features is not None and groups is not None:
            kept = [groups[g] for g in CONTENT_GROUPS if g in groups and groups[g].stop > groups[g].start]
            if kept:
                item_features = sp.hstack([item_features[:, cols] for cols in kept], format="csr")
        return self.fit(interactions, item_features)

    @property
    def n_items(self) -> int:
        return int(self._fitted()[1].shape[0])

    def _fitted(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        if self._history is None or self._items is None:
            raise NotFittedError("ContentNeighbours is not fitted: call fit() or load()")
        return self._history, self._items

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Cosine of each item's features with the listener's profile."""
        history, items = self._fitted()
        users = check_users(user_indices, history.shape[0])
        profile = _l2_dense(np.asarray((history[users] @ items).todense()))
        return np.asarray(sp.csr_matrix(items) @ profile.T, dtype=np.float32).T.copy()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        history, items = self._fitted()
        return {"name": self.name}, sparse_to_arrays("history", history) | sparse_to_arrays("items", items)

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(name=meta.get("name", "content"))
        model._history = sparse_from_arrays("history", arrays)
        model._items = sparse_from_arrays("items", arrays)
        return model
