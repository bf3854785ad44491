"""Everything one loaded model serves with, precomputed once: the pure core of the service.

A :class:`ServingState` is immutable after construction, so the service can build a new one beside the
old (a reload) and swap a single reference: a request keeps the state it started with.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from recsys.models.candidates import SessionItems
from recsys.models.ranker import TwoStageRanker
from recsys.models.scorer import MISSING, top_k_from_scores
from recsys.offline.metrics import head_items
from recsys.offline.popularity import popularity_variants
from recsys.registry import ServingArtifact
from recsys.serving import exploration
from recsys.serving.name_search import NameIndex, normalise
from recsys.serving.session import Session, SessionEvent, adapt, params_of, session_of

SHARED_TAGS = 3
"""Tags named in a "shares tags" reason."""
FALLBACK_REASON = "popular with similar listeners"
ANCHOR_MIN_SIMILARITY = 0.5
"""Cosine similarity of item embeddings above which a recommendation is explained by the listener's nearest
item ("because you like X"); below it, a nearest item would be a guess."""
COLD_REASON = "popular with many listeners"
MAX_PROFILES = 100_000
CACHED_TOP = 200
"""Items kept per known user, ranked on the user's first request: later requests filter this list instead of
scoring again."""
CACHED_MASKS = 64
"""Filter masks kept (least recently used dropped first): a mask is a byte per item, 150 KB at 150k items."""
_NO_ITEMS = np.empty(0, dtype=np.int64)
CACHED_USERS = 50_000
"""Known users whose ranked lists are kept (least recently used dropped first): 200 items x 12 bytes each,
at most ~120 MB, whatever the number of users the model knows."""

BIAS_STRENGTH_ENV = "RECSYS_BIAS_STRENGTH"
"""Overrides the popularity re-ranking strength of every model the service loads (float >= 0; 0 = off).

Unset, each model is served with the strength it was packaged with (its metadata's ``bias_strength``: the one
``recsys bias`` chose and the gate measured it at, see ``bias.serve``), so what the gate measured is what
listeners get; the variable is for an operator who must change it without retraining.
"""

Item = dict[str, Any]


def bias_strength_from_env() -> float | None:
    """The re-ranking strength in ``RECSYS_BIAS_STRENGTH``; None when unset or blank.

    Raises
    ------
    ValueError
        When the value is not a finite number ``>= 0``.
    """
    raw = os.environ.get(BIAS_STRENGTH_ENV, "").strip()
    if not raw:
        return None
    try:
        strength = float(raw)
    except ValueError:
        strength = float("nan")
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"{BIAS_STRENGTH_ENV} must be a finite number >= 0, got {raw!r}")
    return strength


class UnknownFilterError(ValueError):
    """A genre or tag filter names a value the catalogue does not have."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ServingState:
    """Scorer, id maps, popularity, tags, unit embeddings and name index of one model.

    Parameters
    ----------
    artifact : ServingArtifact
        A model loaded from the registry.
    bias_strength : float, optional
        Popularity re-ranking strength (:func:`recsys.offline.popularity.rerank_popularity`) applied to every
        model ranking (known and new listeners; not cold-start popularity lists or similar items).
        None: ``RECSYS_BIAS_STRENGTH`` when set, else the model's own (packaged) strength; 0 turns it off.
        With a positive strength, response scores are the re-ranked (standardised) scores.
    """

    def __init__(self, artifact: ServingArtifact, bias_strength: float | None = None) -> None:
        if bias_strength is not None:
            self.bias_strength, self.bias_source = float(bias_strength), "argument"
        elif (from_env := bias_strength_from_env()) is not None:
            self.bias_strength, self.bias_source = from_env, BIAS_STRENGTH_ENV
        else:
            self.bias_strength, self.bias_source = artifact.bias_strength, "model"
        if not np.isfinite(self.bias_strength) or self.bias_strength < 0:
            raise ValueError(f"bias_strength must be a finite number >= 0, got {bias_strength}")
        self.version = artifact.tag
        self.metadata = artifact.metadata
        self.calibration = artifact.calibration
        """The calibrated re-ranking the model was packaged (and measured) with; None: not calibrated."""
        self.session_params = params_of(artifact.metadata)
        """How a listener's events since packaging move their vector (the model's ``session`` settings)."""
        self.packaged_at = _timestamp(artifact.metadata.get("created_at"))
        self.feedback_users = artifact.feedback_users
        self.hidden_users: frozenset[str] = frozenset()
        """Listeners answered as unknown: erased, while this model still holds their feedback."""
        self._feedback_pseudonyms: dict[str, str] | None = None
        self._hidden_for = 0
        self._model = artifact.model
        self._ranker = artifact.ranker
        # Lists ranked when the model was packaged, at its packaged strength: only valid at that strength.
        packaged = self.bias_strength == artifact.bias_strength
        self._ranked_ahead = artifact.ranked if packaged else None
        self.served_model = artifact.served_model
        """The model whose order known listeners get: ``lightfm_hybrid``, or the two-stage ``ranker`` over the
        hybrid and the other generators it was packaged with (new listeners and similar items: the hybrid)."""
        self.scorer = artifact.model.scorer()
        self.item_vectors = self.scorer.item_vectors
        self.user_vectors = self.scorer.user_vectors
        self.item_ids = list(artifact.item_ids)
        self.names = list(artifact.names)
        self.tags = [list(tags) for tags in artifact.tags]
        self.user_index = dict(artifact.user_index)
        self.item_index = dict(artifact.item_index)
        known = artifact.known.tocsr()
        known.sort_indices()
        self._known_indptr, self._known_items = known.indptr, known.indices.astype(np.int64)
        self.popularity = np.asarray(known.getnnz(axis=0), dtype=np.int64)
        self.popular_order = np.argsort(-self.popularity, kind="stable")
        head_share = ((artifact.metadata.get("params") or {}).get("evaluate") or {}).get("head_share", 0.2)
        self.long_tail = ~head_items(self.popularity, float(head_share))
        """Artists outside the head (the most listened, holding ``head_share`` of listens): explored ones."""
        self.explore_params = exploration.params_of(artifact.metadata)
        self.user_ids = list(artifact.user_ids)
        self._n_users = max(len(artifact.user_ids), 1)
        embeddings = self.item_vectors[:, :-2]
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.unit_embeddings = np.ascontiguousarray(embeddings / np.maximum(norms, 1e-12), dtype=np.float32)
        self.names_index = NameIndex(self.names, self.popularity)
        self.twins = self.names_index.twins()
        """Items never listed: another, more listened item has the same display name (one song, two ids)."""
        self._columns = _feature_columns(artifact.item_features.names)
        self._tag_items = _items_by_tag(self.tags)
        self._features = artifact.item_features.matrix.tocsc()
        self._categories = (
            self.calibration.categories(artifact.item_features.names, self._features, self.popularity)
            if self.calibration is not None
            else None
        )
        self._mask_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._mask_lock = threading.Lock()
        self._profiles: dict[int, Counter[str]] = {}
        self._known = known
        self._ranked: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._ranked_lock = threading.Lock()
        # A listener's list moved by their session, until their next event (the key changes with it).
        # One entry a listener (their row): the session's key and its list, replaced by their next event.
        self._session_ranked: OrderedDict[int, tuple[int, np.ndarray, np.ndarray]] = OrderedDict()
        # The re-ranking's popularity penalty, computed once (rerank_popularity's formula, row by row).
        self._variants = popularity_variants(self.popularity, [self.bias_strength])

    def ranked_top(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """A known user's best ``CACHED_TOP`` unlistened items and scores, ranked on first use and kept in
        a least-recently-used cache of ``CACHED_USERS`` users.

        Nothing is ranked at load, so a model of any number of users starts (and a new champion serves)
        at once; a user's first request pays one product over every item (about 1-3 ms at 150k items).
        With a popularity re-ranking strength the list is the top of the *re-ranked* full row (the same
        formula :meth:`rank` applies), not a re-ordering of the unmitigated top list: re-ranking can
        promote items far below the unmitigated top ``CACHED_TOP``, so the cache stays exact. Dislikes and
        filters are applied to the list per request, so they never invalidate it. A two-stage ranker's lists
        were ranked when it was packaged (``ranked.npz``): they are read, never ranked here, unless a
        re-ranking strength other than the packaged one is served.
        """
        if self._ranked_ahead is not None:
            indices, scores = self._ranked_ahead
            return indices[user].astype(np.int64), scores[user]
        with self._ranked_lock:
            cached = self._ranked.get(user)
            if cached is not None:
                self._ranked.move_to_end(user)
                return cached
        batch = np.array([user])
        if self._ranker is not None or self.bias_strength > 0:
            indices, scores = top_k_from_scores(
                self._adjusted(self.known_scores(user)[np.newaxis, :]), CACHED_TOP, self._known[batch]
            )
        else:
            indices, scores = self.scorer.top_k(batch, CACHED_TOP, self._known)
        ranked = (indices[0], scores[0])
        with self._ranked_lock:
            self._ranked[user] = ranked
            while len(self._ranked) > CACHED_USERS:
                self._ranked.popitem(last=False)
        return ranked

    def known_scores(self, user: int) -> np.ndarray:
        """A known listener's score of every item (float32): the served model's, before any re-ranking.

        With a two-stage ranker its candidates (at most ``candidates`` x generators items, each generator
        scoring the catalogue once) are ordered by the booster and every other item keeps the hybrid's order
        below them.
        """
        if self._ranker is not None:
            return np.asarray(self._ranker.score(np.array([user]))[0], dtype=np.float32)
        return np.asarray(self.scorer.score(np.array([user]))[0], dtype=np.float32)

    def session(self, events: Sequence[SessionEvent]) -> Session:
        """The listener's events that count for this model (:func:`recsys.serving.session.session_of`)."""
        return session_of(events, self.item_index, self.session_params, self.packaged_at)

    def adapted(self, vector: np.ndarray, session: Session, listened: int) -> np.ndarray:
        """A scoring row moved by a session (:func:`recsys.serving.session.adapt`): each event weighs like
        ``step`` of the ``listened`` items the vector stands for."""
        step = self.session_params.step / max(listened, 1)
        return adapt(vector, self.unit_embeddings, session.items, session.weights, step)

    def rank_session(
        self,
        user: int,
        session: Session,
        k: int,
        exclude: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rank_known` of a known listener moved by their ``session`` (items with an event and listened
        items left out): the hybrid's vector moved (:meth:`adapted`), or a session-aware two-stage ranker's
        scores with the session's features (:meth:`session_scores`). The best ``CACHED_TOP`` are ranked once
        per session (its ``key``, which their next event changes) and kept, one list a listener, in a
        least-recently-used cache of ``CACHED_USERS``; dislikes and filters apply per request, a full ranking
        when they leave fewer than ``k``. A ranker without session features keeps its order: only the items
        with an event leave the list."""
        if self._ranker is not None and not self.session_ranker:
            reacted = session.exclude if exclude is None else np.concatenate([exclude, session.exclude])
            return self.rank_known(user, k, reacted, allowed)
        with self._ranked_lock:
            cached = self._session_ranked.get(user)
            if cached is not None and cached[0] == session.key:
                self._session_ranked.move_to_end(user)
            else:
                cached = None
        listened = np.concatenate([self.known_items(user), session.exclude])
        if cached is None:
            cached = (
                session.key,
                *self.rank_scores(self.session_scores(user, session), CACHED_TOP, listened),
            )
            with self._ranked_lock:
                self._session_ranked[user] = cached
                self._session_ranked.move_to_end(user)
                while len(self._session_ranked) > CACHED_USERS:
                    self._session_ranked.popitem(last=False)
        _, indices, scores = cached
        keep = np.ones(len(indices), dtype=bool)
        if exclude is not None and exclude.size:
            keep &= ~np.isin(indices, exclude)
        if allowed is not None:
            keep &= allowed[indices]
        if int(keep.sum()) >= k:
            return indices[keep][:k], scores[keep][:k]
        full_exclude = listened if exclude is None else np.concatenate([listened, exclude])
        return self.rank_scores(self.session_scores(user, session), k, full_exclude, allowed)

    @property
    def session_ranker(self) -> bool:
        """Whether the served two-stage ranker reads session features: one that learned with sessions,
        packaged with ``session.ranker_features`` on."""
        return (
            isinstance(self._ranker, TwoStageRanker)
            and self._ranker.session_aware
            and self.session_params.ranker_features
        )

    def session_scores(self, user: int, session: Session) -> np.ndarray:
        """A known listener's score of every item within their ``session``, before any re-ranking: a
        session-aware ranker's (:attr:`session_ranker`) with the session's features (every generator scores
        the catalogue once, the booster its candidates), a ranker's without them as trained
        (:meth:`known_scores`), else the hybrid's with their vector moved (:meth:`adapted`)."""
        if self.session_ranker and isinstance(self._ranker, TwoStageRanker):
            items = SessionItems.of(session.items, session.weights)
            return np.asarray(self._ranker.score(np.array([user]), [items])[0], dtype=np.float32)
        if self._ranker is not None:
            return self.known_scores(user)
        moved = self.adapted(self.user_vectors[user], session, len(self.known_items(user)))
        return np.asarray(self.item_vectors @ moved, dtype=np.float32)

    def forget_session(self, user_id: str) -> None:
        """Drop a listener's adapted list (their erasure through this worker)."""
        row = self.user_index.get(user_id)
        if row is not None:
            with self._ranked_lock:
                self._session_ranked.pop(row, None)

    def depth(self, k: int) -> int:
        """How many ranked items a list of ``k`` is chosen from: ``k``, or the calibration's candidates."""
        return max(k, self.calibration.candidates) if self.calibration is not None else k

    def calibrated(
        self, history: np.ndarray, indices: np.ndarray, scores: np.ndarray, k: int, hybrid: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` of the ranked ``indices`` a calibrated model serves to a listener of ``history`` (its
        genre mix kept, :mod:`recsys.offline.calibration`); the first ``k`` when not calibrated, or for the
        ``hybrid``'s own list beside a ranker (:attr:`mitigates_hybrid`)."""
        beside_ranker = hybrid and not self.mitigates_hybrid
        if self.calibration is None or self._categories is None or len(indices) <= 1 or beside_ranker:
            return indices[:k], scores[:k]
        chosen = self.calibration.order(indices, scores, self._categories, history, k)
        position = {int(item): row for row, item in enumerate(indices.tolist())}
        rows = np.array([position[int(item)] for item in chosen.tolist()], dtype=np.int64)
        return indices[rows], scores[rows]

    def hide_erased(self, erased: frozenset[str], pseudonym: Callable[[str], str]) -> None:
        """Answer as unknown the listeners of ``erased`` (pseudonyms) whose feedback this model trained on;
        drop the adapted lists (:meth:`rank_session`) of every erased listener.

        Until a model without their feedback replaces this one, their recommendations must not come from
        their own history. Which users the model trained on feedback of is its record (every user for a
        retrained model packaged before models kept one; none for a model of the training flow); their
        pseudonyms are computed once per model, on the first erasure. ``erased`` only grows, so a call with
        no new erasure costs nothing.
        """
        if len(erased) == self._hidden_for:
            return
        if self._feedback_pseudonyms is None:
            users = self.feedback_users
            if users is None:
                users = (
                    frozenset(self.user_index)
                    if "feedback_users" in self.metadata.get("metrics", {})
                    else frozenset()
                )
            self._feedback_pseudonyms = {pseudonym(user): user for user in users}
        known = self._feedback_pseudonyms
        self.hidden_users = frozenset(known[p] for p in erased if p in known)
        self._hidden_for = len(erased)
        # Adapted lists are derived from the erased listeners' events: none is kept (one pseudonym a cached
        # listener, computed only when an erasure is new).
        with self._ranked_lock:
            rows = list(self._session_ranked)
        ids = [self.user_ids[row] for row in rows]
        gone = [row for row, user in zip(rows, ids, strict=True) if pseudonym(user) in erased]
        with self._ranked_lock:
            for row in gone:
                self._session_ranked.pop(row, None)

    def row_of(self, user_id: str | None) -> int | None:
        """The model's row of a listener, None when unknown or hidden (:meth:`hide_erased`)."""
        if user_id is None or user_id in self.hidden_users:
            return None
        return self.user_index.get(user_id)

    @property
    def cached_users(self) -> int:
        """Known users whose ranked list is cached now."""
        return len(self._ranked)

    def _adjusted(self, scores: np.ndarray) -> np.ndarray:
        """Scores after popularity re-ranking; the full row is standardised before any masking.

        Standardising before exclusions and filters keeps one user's adjusted scores independent of the
        request, which is what makes the cached list and a full ranking agree.
        """
        if self.bias_strength == 0:
            return scores
        ((_, adjusted),) = self._variants(scores)
        return adjusted.reshape(np.shape(scores))

    @property
    def n_items(self) -> int:
        """Number of rankable items."""
        return len(self.item_ids)

    def known_items(self, user: int) -> np.ndarray:
        """Item indices a known user listened to (sorted)."""
        return self._known_items[self._known_indptr[user] : self._known_indptr[user + 1]]

    def indices_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """Indices of the given item ids; ids the model does not know are dropped."""
        index = self.item_index
        return np.fromiter((index[i] for i in item_ids if i in index), dtype=np.int64)

    def resolve(self, name_or_id: str) -> int | None:
        """Item index of an item id, else of an exact (case-insensitive) artist name, else None."""
        found = self.item_index.get(name_or_id)
        return found if found is not None else self.names_index.exact(name_or_id)

    def fold_in(self, favourites: np.ndarray) -> np.ndarray:
        """A scoring row for a new listener from favourite item indices (the model's fold-in)."""
        return self._model.fold_in_user(favourites)

    def allowed(self, genre: str | None, tag: str | None) -> np.ndarray | None:
        """Boolean mask of the items passing the genre and tag filters (None: no filter).

        Raises
        ------
        UnknownFilterError
            When the catalogue has no such genre or tag.
        """
        mask: np.ndarray | None = None
        for field, value in (("genre", genre), ("tag", tag)):
            if value is not None:
                part = self._mask(field, normalise(value))
                mask = part if mask is None else mask & part
        return mask

    def rank(
        self, vector: np.ndarray, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(indices, scores)`` of a hybrid scoring row (a new listener's folded vector); excluded
        and filtered-out items never appear.

        Scores are popularity re-ranked first when ``bias_strength`` is positive and :attr:`mitigates_hybrid`.
        """
        return self.rank_scores(self.item_vectors @ vector, k, exclude, allowed, self.mitigates_hybrid)

    @property
    def mitigates_hybrid(self) -> bool:
        """Whether the hybrid's own lists (new listeners' folded vectors) carry the model's mitigation: only
        when the hybrid is the served model. A ranker's strength or calibration was chosen on the ranker's
        lists (``metrics/bias.json`` ``model``), so beside a ranker the hybrid's lists are unmitigated."""
        return self._ranker is None

    def rank_scores(
        self,
        scores: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        mitigated: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rank` of a row of scores (one per item), e.g. a known listener's :meth:`known_scores`."""
        scores = np.array(scores, dtype=np.float32)
        scores = self._adjusted(scores) if mitigated else scores
        if exclude is not None and exclude.size:
            scores[exclude] = -np.inf
        if allowed is not None:
            scores[~allowed] = -np.inf
        indices, top = top_k_from_scores(scores[np.newaxis, :], k)
        keep = indices[0] != MISSING
        return indices[0][keep], top[0][keep]

    def rank_known(
        self, user: int, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` unlistened items of a known user, as :meth:`rank` would give them, from the cached list.

        Falls back to :meth:`rank` when dislikes or filters leave fewer than ``k`` cached items.
        """
        indices, scores = self.ranked_top(user)
        keep = indices != MISSING
        if exclude is not None and exclude.size:
            keep &= ~np.isin(indices, exclude)
        if allowed is not None:
            keep &= allowed[np.where(keep, indices, 0)]
        if int(keep.sum()) >= k:
            return indices[keep][:k], scores[keep][:k]
        listened = self.known_items(user)
        full_exclude = listened if exclude is None else np.concatenate([listened, exclude])
        return self.rank_scores(self.known_scores(user), k, full_exclude, allowed)

    def popular(self, k: int, exclude: np.ndarray | None, allowed: np.ndarray | None) -> np.ndarray:
        """The ``k`` most listened items (cold start), skipping ``exclude`` and filtered-out items."""
        order = self.popular_order
        if allowed is not None:
            order = order[allowed[order]]
        if exclude is not None and exclude.size:
            order = order[~np.isin(order, exclude)]
        return order[:k]

    def similar(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items whose embeddings have the highest cosine similarity with ``item``'s."""
        scores = self.unit_embeddings @ self.unit_embeddings[item]
        scores[item] = -np.inf
        indices, top = top_k_from_scores(scores[np.newaxis, :], k)
        keep = indices[0] != MISSING
        return indices[0][keep], top[0][keep]

    def user_profile(self, user: int) -> Counter[str]:
        """:meth:`tag_profile` of a known user's listened items, computed once per user."""
        profile = self._profiles.get(user)
        if profile is None:
            if len(self._profiles) >= MAX_PROFILES:
                self._profiles.clear()
            profile = self._profiles[user] = self.tag_profile(self.known_items(user))
        return profile

    def tag_profile(self, items: Sequence[int] | np.ndarray) -> Counter[str]:
        """How many of ``items`` carry each top tag: the listener's taste, for reasons."""
        return Counter(tag for item in items for tag in self.tags[int(item)])

    def reason(self, item: int, profile: Counter[str], anchor: int | None = None) -> str:
        """Why ``item``: ``"because you like X"`` for the listener's item ``anchor`` nearest to it, then
        ``"shares tags: a, b"`` with its tags most common in ``profile``; a fallback when neither applies."""
        shared = sorted((tag for tag in self.tags[item] if tag in profile), key=lambda t: -profile[t])
        parts = [f"because you like {self.names[anchor]}"] if anchor is not None else []
        if shared:
            parts.append(f"shares tags: {', '.join(shared[:SHARED_TAGS])}")
        return "; ".join(parts) if parts else FALLBACK_REASON

    def anchors(self, indices: np.ndarray, liked: np.ndarray) -> list[int | None]:
        """For each of ``indices``, the most similar of ``liked`` (cosine of item embeddings), or None
        when none reaches :data:`ANCHOR_MIN_SIMILARITY`."""
        if len(indices) == 0 or len(liked) == 0:
            return [None] * len(indices)
        similarity = self.unit_embeddings[indices] @ self.unit_embeddings[liked].T
        best = similarity.argmax(axis=1)
        close = similarity[np.arange(len(indices)), best] >= ANCHOR_MIN_SIMILARITY
        return [int(liked[b]) if ok else None for b, ok in zip(best.tolist(), close.tolist(), strict=True)]

    def every_favourite(
        self, indices: np.ndarray, scores: np.ndarray, favourites: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
        """The top ``k`` of ranked candidates such that every favourite explains at least one of them.

        A favourite whose nearest items all rank below the first ``k`` had no visible influence (a third
        favourite among two similar ones): its best-ranked candidate at least
        :data:`ANCHOR_MIN_SIMILARITY` similar to it takes the place of the lowest-ranked item of a
        favourite that explains several. Returns the items in score order and each one's anchor.
        """
        top = min(k, len(indices))
        if len(favourites) < 2 or len(indices) <= top:
            return indices[:top], scores[:top], self.anchors(indices[:top], favourites)
        similarity = self.unit_embeddings[indices] @ self.unit_embeddings[favourites].T
        best = similarity.argmax(axis=1)
        anchors = [
            int(favourites[b]) if similarity[row, b] >= ANCHOR_MIN_SIMILARITY else None
            for row, b in enumerate(best.tolist())
        ]
        chosen = list(range(top))
        for column, favourite in enumerate(favourites.tolist()):
            if any(anchors[row] == favourite for row in chosen):
                continue
            close = np.flatnonzero(similarity[top:, column] >= ANCHOR_MIN_SIMILARITY)
            counts = Counter(anchors[row] for row in chosen)
            spare = [row for row in reversed(chosen) if anchors[row] is not None and counts[anchors[row]] > 1]
            if close.size == 0 or not spare:
                continue
            chosen.remove(spare[0])
            row = top + int(close[0])
            anchors[row] = favourite
            chosen.append(row)
        chosen.sort()
        rows = np.array(chosen, dtype=np.int64)
        return indices[rows], scores[rows], [anchors[row] for row in chosen]

    def items(
        self,
        indices: np.ndarray,
        scores: np.ndarray,
        profile: Counter[str],
        liked: np.ndarray | None = None,
        anchors: list[int | None] | None = None,
    ) -> list[Item]:
        """Response entries for ranked items with reasons from ``profile`` and the listener's ``liked``
        (or the given ``anchors``: the liked item each one is explained by)."""
        if anchors is None:
            anchors = self.anchors(indices, liked) if liked is not None else [None] * len(indices)
        return [
            {
                "item_id": self.item_ids[i],
                "name": self.names[i],
                "score": round(float(s), 6),
                "reason": self.reason(i, profile, anchor),
            }
            for i, s, anchor in zip(indices.tolist(), scores.tolist(), anchors, strict=True)
        ]

    def popular_items(self, indices: np.ndarray) -> list[Item]:
        """Response entries for cold-start items, scored by their share of listeners."""
        return [
            {
                "item_id": self.item_ids[i],
                "name": self.names[i],
                "score": round(float(self.popularity[i]) / self._n_users, 6),
                "reason": COLD_REASON,
            }
            for i in indices.tolist()
        ]

    def _mask(self, field: str, value: str) -> np.ndarray:
        key = (field, value)
        with self._mask_lock:
            mask = self._mask_cache.get(key)
            if mask is not None:
                self._mask_cache.move_to_end(key)
                return mask
        mask = self._build_mask(field, value)
        with self._mask_lock:
            self._mask_cache[key] = mask
            while len(self._mask_cache) > CACHED_MASKS:  # a catalogue may hold many thousand tags
                self._mask_cache.popitem(last=False)
        return mask

    def _build_mask(self, field: str, value: str) -> np.ndarray:
        mask = np.zeros(self.n_items, dtype=bool)
        column = self._columns[field].get(value)
        if column is not None:
            start, stop = self._features.indptr[column], self._features.indptr[column + 1]
            rows = self._features.indices[start:stop][self._features.data[start:stop] > 0]
            mask[rows] = True
        if field == "tag":
            mask[self._tag_items.get(value, _NO_ITEMS)] = True  # a lookup, never a scan of the catalogue
        if column is None and not mask.any():
            known = sorted(self._columns[field])
            hint = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
            raise UnknownFilterError(field, f"unknown {field} {value!r}; known values include: {hint}")
        return mask


def _timestamp(created_at: Any) -> float:
    """Seconds since the epoch of a model's ``created_at`` (ISO 8601); 0 when missing or unreadable: then
    every stored event counts as the session's."""
    try:
        return datetime.fromisoformat(str(created_at)).timestamp()
    except ValueError:
        return 0.0


def _items_by_tag(tags: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Item indices of each (normalised) top tag: what a tag filter reads besides the feature columns."""
    grouped: dict[str, list[int]] = {}
    for item, item_tags in enumerate(tags):
        for tag in {normalise(tag) for tag in item_tags}:
            grouped.setdefault(tag, []).append(item)
    return {tag: np.asarray(items, dtype=np.int64) for tag, items in grouped.items()}


def _feature_columns(names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Feature column of each genre and tag by normalised value, e.g. ``{"genre": {"rock": 17}}``."""
    columns: dict[str, dict[str, int]] = {"genre": {}, "tag": {}}
    for position, name in enumerate(names):
        group, _, value = name.partition(":")
        if group in columns and value:
            columns[group].setdefault(normalise(value), position)
    return columns
