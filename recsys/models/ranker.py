"""The two-stage ranker: every generator's candidates, ordered by a LightGBM ``lambdarank`` model.

Trained the leak-free way (:meth:`TwoStageRanker.fit`): the generators are fitted on the listens without
the validation part, propose candidates for the validation listeners, and the ranker learns which of them
are the listeners' validation items from the pairs' features (:mod:`recsys.models.candidates`), for a fixed
number of boosting rounds (early stopping on a fifth of the validation listeners stopped anywhere between
24 and 463 rounds on artists: their nDCG@10 is too noisy to stop on, and the ranker lost those listeners).
Scoring uses generators fitted on every listen (the ``train`` stage's own models), so test items were never
seen by the ranker.

Scores: a candidate's score is the ranker's; every other item scores 1 to 3 below the listener's lowest
candidate, in the order of the first generator's standardised score (finite, always below every
candidate), so a top-k list is the ranker's order of the candidates and the rest keeps the hybrid's order.
The ranker's work per listener is bounded by the candidates (at most ``candidates`` x generators items).

A caveat measured on the real data (``docs/benchmarks.md``): an item with no training listens is mostly
someone's held-out item in the offline protocol (the catalogue is built from the listens), and the ranker
learns that from its popularity features: about 15 % of its gain on artists, most of its score on songs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import scipy.sparse as sp

from recsys.errors import RecsysError
from recsys.models.base import (
    _REGISTRY,
    NotFittedError,
    Recommender,
    check_interactions,
    check_item_features,
    check_users,
    sparse_from_arrays,
    sparse_to_arrays,
)
from recsys.models.candidates import (
    NO_SESSION,
    SESSION_FEATURES,
    CandidatePairs,
    ContentNeighbours,
    PairContext,
    SessionItems,
    _standardised,
    candidate_pairs,
    feature_names,
    session_columns,
)
from recsys.specs import HYBRID, model_spec

if TYPE_CHECKING:
    from recsys.config import Params, RankerParams


CONTENT = "content"

RECALL_LISTENERS = 2048
"""Listeners whose candidates :meth:`TwoStageRanker.candidate_recall` builds at once (memory bound)."""


class TwoStageRanker(Recommender):
    """Candidates from several generators, ordered by LightGBM ``lambdarank``.

    Parameters
    ----------
    params : Params
        Every setting: ``train.ranker`` and the generators' own sections.
    seed, threads : int
        The booster's seed and threads (1 makes it bit-identical on one machine).
    name : str
        Its name in reports.
    """

    def __init__(self, params: Params, seed: int = 0, threads: int = 1, name: str = "ranker") -> None:
        self.params = params
        self.seed = seed
        self.threads = threads
        self.name = name
        self.generators: dict[str, Recommender] = {}
        self.importance: dict[str, float] = {}
        self.best_rounds = 0
        self.session_aware = False
        """Whether its booster reads :data:`~recsys.models.candidates.SESSION_FEATURES` (``score``'s
        ``sessions``)."""
        self._booster: Any = None
        self._context: PairContext | None = None
        self._matrix: sp.csr_matrix | None = None
        self._features: sp.csr_matrix | None = None
        self._groups: dict[str, slice] | None = None

    @property
    def settings(self) -> RankerParams:
        return self.params.train.ranker

    def fit(
        self,
        interactions: sp.csr_matrix,
        item_features: sp.csr_matrix | None = None,
        holdout: sp.csr_matrix | None = None,
        generators: Mapping[str, Recommender] | None = None,
        feature_groups: Mapping[str, slice] | None = None,
    ) -> Self:
        """:meth:`learn`, then :meth:`use_generators` (``generators`` fitted on all of ``interactions``;
        those not given are fitted here)."""
        self.learn(interactions, item_features, holdout, feature_groups)
        return self.use_generators(generators or {})

    def learn(
        self,
        interactions: sp.csr_matrix,
        item_features: sp.csr_matrix | None = None,
        holdout: sp.csr_matrix | None = None,
        feature_groups: Mapping[str, slice] | None = None,
    ) -> Self:
        """Learn the ranker on ``holdout`` (default: a per-listener carve of ``interactions``) with generators
        fitted on the rest. ``feature_groups`` are the item features' column groups (tags, audio, ...).
        Scoring needs :meth:`use_generators` next (the ``train`` stage learns while its hybrid trains)."""
        import lightgbm as lgb

        matrix = check_interactions(interactions)
        features = check_item_features(item_features, matrix.shape[1])
        holdout = self._carve(matrix) if holdout is None else sp.csr_matrix(holdout, dtype=np.float32)
        learn_on = _without(matrix, holdout)
        groups = dict(feature_groups) if feature_groups is not None else None
        fresh = self._fit_generators(learn_on, features, groups, cheaper=True)
        context = PairContext.of(learn_on, features, groups, self.settings.never_played)
        self.session_aware = self.settings.session_share > 0
        train_set = self._dataset(fresh, context, holdout, self._listeners(holdout))
        booster = lgb.train(self._booster_params(), train_set, num_boost_round=self.settings.rounds)
        self.best_rounds = self.settings.rounds
        names = self._names(fresh, context)
        gains = booster.feature_importance("gain", iteration=self.best_rounds)
        total = float(gains.sum()) or 1.0
        self.importance = {
            name: round(float(gain) / total, 4) for name, gain in zip(names, gains, strict=True)
        }
        self._booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=self.best_rounds))
        self._matrix, self._features, self._groups = matrix, features, groups
        return self

    def use_generators(self, generators: Mapping[str, Recommender]) -> Self:
        """Score with ``generators`` fitted on every listen the ranker learned from (the ``train`` stage's
        models); the ones it needs and was not given are fitted here."""
        if self._matrix is None or self._booster is None:
            raise NotFittedError("TwoStageRanker has not learned yet: call learn() or fit()")
        wanted = self.settings.generators
        given = {name: model for name, model in generators.items() if name in wanted}
        missing = [name for name in wanted if name not in given]
        if missing:
            given |= self._fit_generators(self._matrix, self._features, self._groups, only=missing)
        self.generators = {name: given[name] for name in wanted}
        self._context = PairContext.of(self._matrix, self._features, self._groups, self.settings.never_played)
        return self

    def refitted(self, interactions: sp.csr_matrix, generators: Mapping[str, Recommender]) -> TwoStageRanker:
        """The same booster over generators fitted on ``interactions`` (the same items; listeners and listens
        may be more: listener feedback). ``generators`` are used as given (the retrained hybrid); the others
        are fitted here. The pairs' features are scale-free, so the booster ranks the refitted generators'
        candidates as it ranks the ``train`` stage's. This ranker is unchanged."""
        matrix = check_interactions(interactions)
        if self._booster is None or matrix.shape[1] != self.n_items:
            raise ValueError(
                f"a ranker of {self.n_items if self._booster is not None else 0} items cannot rank "
                f"interactions of {matrix.shape[1]} items"
            )
        clone = copy.copy(self)
        clone.generators, clone._context, clone._matrix = {}, None, matrix
        return clone.use_generators(generators)

    def _carve(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """A random ``holdout_fraction`` of each listener's items (at least one stays), seeded."""
        rng = np.random.default_rng(self.seed)
        coo = matrix.tocoo()
        take = rng.random(coo.nnz) < self.settings.holdout_fraction
        counts = np.bincount(coo.row[~take], minlength=matrix.shape[0])
        take &= counts[coo.row] > 0
        return sp.csr_matrix((coo.data[take], (coo.row[take], coo.col[take])), shape=matrix.shape)

    def _listeners(self, holdout: sp.csr_matrix) -> np.ndarray:
        """The listeners with a held-out item, at most ``max_listeners`` of them (a seeded draw)."""
        users = np.flatnonzero(np.diff(holdout.indptr))
        if len(users) <= self.settings.max_listeners:
            return users
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(users, size=self.settings.max_listeners, replace=False))

    def _dataset(
        self,
        generators: Mapping[str, Recommender],
        context: PairContext,
        holdout: sp.csr_matrix,
        users: np.ndarray,
    ) -> Any:
        import lightgbm as lgb

        pairs = candidate_pairs(generators, context, users, self.settings.candidates)
        in_session = np.zeros(len(pairs.items), dtype=bool)
        matrix = None
        if self.session_aware:
            # The sessions are drawn from the listeners' candidates, which then grow by the sessions' own (the
            # first pairs are freed before the second are built: only their first generator's ranks are kept).
            first = feature_names(generators, context).index(f"{next(iter(generators))}_rank")
            first_rank = pairs.features[:, first].copy()
            sessions = self._simulated_sessions(pairs, holdout, first_rank)
            del first_rank, pairs
            pairs = candidate_pairs(
                generators,
                context,
                users,
                self.settings.candidates,
                sessions,
                self.settings.session_candidates,
            )
            matrix = np.hstack([pairs.features, session_columns(context, pairs, sessions)])
            in_session = _session_pairs(pairs, sessions, context.interactions.shape[1])
        else:
            matrix = pairs.features
        labels = np.zeros(len(pairs.items), dtype=np.float32)
        if len(pairs.items):
            labels = np.asarray(holdout[pairs.users[pairs.rows], pairs.items] > 0).ravel().astype(np.float32)
        labels[in_session] = 0.0
        # A listener none of whose items is a candidate teaches the ranker nothing.
        useful = np.bincount(pairs.rows, weights=labels, minlength=len(pairs.users)) > 0
        if not useful.any():
            raise RecsysError(
                f"the ranker has nothing to learn from: none of the {len(users)} listeners with held-out "
                "items has one among their candidates (raise train.ranker.candidates, or check the "
                "validation part)"
            )
        keep = useful[pairs.rows] & ~in_session
        sizes = np.bincount(pairs.rows[keep], minlength=len(pairs.users))[useful]
        names = self._names(generators, context)
        return lgb.Dataset(
            matrix[keep],
            labels[keep],
            group=sizes,
            feature_name=names,
            free_raw_data=True,
        )

    def _simulated_sessions(
        self, pairs: CandidatePairs, holdout: sp.csr_matrix, first_rank: np.ndarray
    ) -> list[SessionItems]:
        """A seeded share (``session_share``) of the listeners get a session: the list they were shown is
        their first generator's best ``session_shown`` candidates; they liked its held-out items (one at least
        stays to learn from) and skipped the rest, and liked up to ``session_likes`` more held-out items met
        elsewhere (the page, a search)."""
        settings = self.settings
        rng = np.random.default_rng(self.seed + 1)
        sessions: list[SessionItems] = []
        for row, user in enumerate(pairs.users.tolist()):
            held = holdout.indices[holdout.indptr[user] : holdout.indptr[user + 1]]
            if rng.random() >= settings.session_share or len(held) < 2:
                sessions.append(NO_SESSION)
                continue
            start, stop = pairs.offsets[row], pairs.offsets[row + 1]
            order = np.argsort(first_rank[start:stop], kind="stable")
            shown = pairs.items[start:stop][order[: settings.session_shown]]
            hits = shown[np.isin(shown, held)]
            if len(hits) >= len(held):
                hits = hits[: len(held) - 1]
            rest = np.setdiff1d(held, hits)
            n_more = int(rng.integers(0, min(settings.session_likes, len(rest) - 1) + 1))
            more = rng.choice(rest, size=n_more, replace=False)
            liked = np.unique(np.concatenate([hits, more])).astype(np.int64)
            skipped = np.setdiff1d(shown, held).astype(np.int64)
            sessions.append(SessionItems(liked, skipped) if len(liked) or len(skipped) else NO_SESSION)
        return sessions

    def _names(self, generators: Mapping[str, Any], context: PairContext) -> list[str]:
        names = feature_names(generators, context)
        return [*names, *SESSION_FEATURES] if self.session_aware else names

    def _booster_params(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": settings.learning_rate,
            "num_leaves": settings.num_leaves,
            "min_child_samples": settings.min_child_samples,
            "lambda_l2": settings.lambda_l2,
            "feature_fraction": settings.feature_fraction,
            "feature_fraction_seed": self.seed,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbosity": -1,
        }

    def _fit_generators(
        self,
        matrix: sp.csr_matrix,
        features: sp.csr_matrix | None,
        groups: Mapping[str, slice] | None,
        cheaper: bool = False,
        only: list[str] | None = None,
    ) -> dict[str, Recommender]:
        """The generators fitted on ``matrix`` (``cheaper``: the hybrid with ``hybrid_members`` and at most
        ``hybrid_epochs``, for learning)."""
        fitted: dict[str, Recommender] = {}
        for name in only or list(self.settings.generators):
            if name == CONTENT:
                fitted[name] = ContentNeighbours().fit_groups(matrix, features, groups)
                continue
            spec = model_spec(name)
            params = self.params
            if name == HYBRID and cheaper:
                epochs = min(self.settings.hybrid_epochs, params.train.lightfm.epochs)
                update = {"members": self.settings.hybrid_members, "epochs": epochs}
                lightfm = params.train.lightfm.model_copy(update=update)
                train = params.train.model_copy(update={"lightfm": lightfm})
                params = params.model_copy(update={"train": train})
            model = spec.configured(params, threads=self.threads)
            fitted[name] = model.fit(matrix, features if spec.takes_features else None)
        return fitted

    @property
    def n_items(self) -> int:
        return int(self._fitted().interactions.shape[1])

    @property
    def n_users(self) -> int:
        """The listeners it ranks (the rows of the listens its generators were fitted on)."""
        return int(self._fitted().interactions.shape[0])

    def _fitted(self) -> PairContext:
        if self._context is None or self._booster is None:
            raise NotFittedError("TwoStageRanker is not fitted: call fit() or load()")
        return self._context

    def score(self, user_indices: np.ndarray, sessions: Sequence[SessionItems] | None = None) -> np.ndarray:
        """The ranker's scores of every listener's candidates; below them, the rest in the first generator's
        order. ``sessions`` (one per listener) are their sessions, for a :attr:`session_aware` ranker: the
        items most listened with a session's likes join its listener's candidates, and every candidate gets
        the session's features; items of a session stay candidates (the caller leaves out what it wants)."""
        context = self._fitted()
        users = check_users(user_indices, context.interactions.shape[0])
        chosen = None
        if self.session_aware:
            chosen = list(sessions) if sessions is not None else [NO_SESSION] * len(users)
        pairs = candidate_pairs(
            self.generators,
            context,
            users,
            self.settings.candidates,
            chosen,
            self.settings.session_candidates,
        )
        first = next(iter(self.generators.values())).score(users)
        features = pairs.features
        if chosen is not None:
            features = np.hstack([features, session_columns(context, pairs, chosen)])
        predicted = self._booster.predict(features, num_threads=self.threads) if len(pairs.items) else []
        lowest = np.zeros(len(users))
        if len(pairs.items):
            lowest = np.full(len(users), np.inf)
            np.minimum.at(lowest, pairs.rows, predicted)
            lowest[~np.isfinite(lowest)] = 0.0
        # Below the row's lowest candidate by 1 to 3, in the first generator's order (standardised, so the
        # float32 steps stay fine whatever its scale).
        out = (lowest[:, None] - 2.0 + np.tanh(_standardised(first))).astype(np.float32)
        if len(pairs.items):
            out[pairs.rows, pairs.items] = predicted
        return out

    def candidates_of(self, user_indices: np.ndarray) -> list[np.ndarray]:
        """Each listener's candidate items (ascending): the ceiling of what the ranker can reach."""
        context = self._fitted()
        pairs = candidate_pairs(self.generators, context, np.asarray(user_indices), self.settings.candidates)
        return [
            pairs.items[start:stop] for start, stop in zip(pairs.offsets[:-1], pairs.offsets[1:], strict=True)
        ]

    def candidate_recall(self, relevant: sp.csr_matrix) -> dict[str, Any]:
        """The ceiling the ranker can reach: per generator and for the union of their lists, the mean
        share of a listener's ``relevant`` items (rows: listeners) among their candidates.

        ``{"candidates": n, "listeners", "mean_candidates", "recall": {generator: r, ..., "union": r}}``.
        """
        context = self._fitted()
        relevant = sp.csr_matrix(relevant)
        users = np.flatnonzero(np.diff(relevant.indptr))
        n = self.settings.candidates
        names = feature_names(self.generators, context)
        wanted = np.diff(relevant.indptr)[users].astype(np.float64)
        found = {name: np.zeros(len(users)) for name in [*self.generators, "union"]}
        n_candidates = 0
        # A bounded number of listeners' pairs at a time: only their hits are kept.
        for start in range(0, len(users), RECALL_LISTENERS):
            batch = users[start : start + RECALL_LISTENERS]
            pairs = candidate_pairs(self.generators, context, batch, n)
            n_candidates += len(pairs.items)
            hit = np.asarray(relevant[pairs.users[pairs.rows], pairs.items] > 0).ravel()
            rows = pairs.rows + start
            for name in self.generators:
                in_list = pairs.features[:, names.index(f"{name}_rank")] < n
                found[name] += np.bincount(rows[hit & in_list], minlength=len(users))
            found["union"] += np.bincount(rows[hit], minlength=len(users))
        recall = {
            name: float((hits / wanted).mean()) if len(users) else float("nan")
            for name, hits in found.items()
        }
        return {
            "candidates": n,
            "listeners": len(users),
            "mean_candidates": round(n_candidates / len(users), 1) if len(users) else 0.0,
            "recall": {name: round(value, 4) for name, value in recall.items()},
        }

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        context = self._fitted()
        generators: list[dict[str, Any]] = []
        arrays: dict[str, np.ndarray] = {}
        for name, model in self.generators.items():
            meta, parts = model._state()
            generators.append({"name": name, "class": type(model).__name__, "meta": meta})
            arrays |= {f"generator.{name}.{key}": value for key, value in parts.items()}
        meta = {
            "name": self.name,
            "seed": self.seed,
            "threads": self.threads,
            "params": self.params.model_dump(mode="json"),
            "generators": generators,
            "importance": self.importance,
            "best_rounds": self.best_rounds,
            "session_aware": self.session_aware,
            "groups": None
            if self._groups is None
            else {g: [s.start, s.stop] for g, s in self._groups.items()},
        }
        arrays |= sparse_to_arrays("interactions", context.interactions)
        if self._features is not None:
            arrays |= sparse_to_arrays("item_features", self._features)
        arrays["booster"] = np.array(self._booster.model_to_string())
        return meta, arrays

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        import lightgbm as lgb

        from recsys.config import Params

        model = cls(Params.model_validate(meta["params"]), meta["seed"], meta["threads"], name=meta["name"])
        for entry in meta["generators"]:
            prefix = f"generator.{entry['name']}."
            parts = {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
            model.generators[entry["name"]] = _REGISTRY[entry["class"]]._from_state(entry["meta"], parts)
        model.importance = dict(meta.get("importance", {}))
        model.best_rounds = int(meta.get("best_rounds", 0))
        model.session_aware = bool(meta.get("session_aware", False))
        groups = meta.get("groups")
        model._groups = None if groups is None else {g: slice(a, b) for g, (a, b) in groups.items()}
        model._features = sparse_from_arrays("item_features", arrays)
        interactions = sparse_from_arrays("interactions", arrays)
        if interactions is None:
            raise ValueError("a two-stage ranker file without its interactions")
        model._matrix = interactions
        model._context = PairContext.of(
            interactions, model._features, model._groups, model.settings.never_played
        )
        model._booster = lgb.Booster(model_str=str(arrays["booster"][()]))
        return model


def _session_pairs(pairs: CandidatePairs, sessions: list[SessionItems], n_items: int) -> np.ndarray:
    """Which pairs are of an item of their listener's session (they leave the list, as on the service)."""
    codes = [row * n_items + np.concatenate([s.liked, s.skipped]) for row, s in enumerate(sessions)]
    taken = np.concatenate(codes) if codes else np.empty(0, np.int64)
    return np.isin(pairs.rows.astype(np.int64) * n_items + pairs.items, taken)


def _without(matrix: sp.csr_matrix, holdout: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` without the cells ``holdout`` holds."""
    kept = matrix - matrix.multiply(sp.csr_matrix(holdout, dtype=bool).astype(np.float32))
    kept = sp.csr_matrix(kept, dtype=np.float32)
    kept.eliminate_zeros()
    return kept


def _finite(scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    return np.where(np.isfinite(values), values, 0.0)
