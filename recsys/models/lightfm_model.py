"""LightFM (WARP by default) behind the :class:`~recsys.models.base.Recommender` interface.

Training feeds LightFM a binary interaction matrix and passes the confidence weights as
``sample_weight`` (a COO matrix with the very same ``row``/``col`` arrays, as LightFM requires), so a
heavily played artist weighs more in the loss without changing which items count as positives.
The ``warp-kos`` loss does not support sample weights and trains on the binary matrix alone.

Without item features the model is pure collaborative filtering (named ``lightfm_cf``); with them
(rows already normalised and including an identity block when wanted) it is the hybrid
(``lightfm_hybrid``), and items never seen in training can be scored from their feature rows.

Determinism: with ``num_threads=1`` the same seed gives bit-identical models; with more threads
LightFM's lock-free (Hogwild) updates make runs differ slightly.

A seed ensemble (``params.members`` > 1) trains that many LightFM models from seeds ``seed``, ``seed + 1``,
... in parallel threads (LightFM releases the GIL; each member keeps ``num_threads``, so one thread each
stays bit-identical) and scores with their mean: concatenated embeddings, the user side divided by the
number of members, mean biases, so scoring stays one dot product.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from recsys.config import LightFMParams
from recsys.memory import require
from recsys.models.base import (
    NotFittedError,
    Recommender,
    check_interactions,
    check_item_features,
    check_users,
    sparse_from_arrays,
    sparse_to_arrays,
)
from recsys.models.scorer import TopKScorer
from recsys.specs import CF, HYBRID

_MODEL_ARRAYS: tuple[str, ...] = tuple(
    f"{side}_{part}"
    for side in ("item", "user")
    for part in (
        "embeddings",
        "embedding_gradients",
        "embedding_momentum",
        "biases",
        "bias_gradients",
        "bias_momentum",
    )
)
"""Every array LightFM trains: with the random state, the complete state to resume training."""

VALIDATION_K = 10
"""Cut-off of the default validation score (precision@10) used when only ``valid`` is given."""

ValidationScore = Callable[["LightFMRecommender"], float]


class LightFMRecommender(Recommender):
    """LightFM with early stopping, warm starts, bias-folded scoring and new-listener fold-in.

    Parameters
    ----------
    params : LightFMParams
        Loss, size, learning schedule, regularisation, ``epochs``, ``eval_every`` and ``patience``.
    seed : int
        Seeds initialisation, shuffling and negative sampling; each :meth:`fit` restarts from it.
    num_threads : int
        LightFM threads; 1 makes training reproducible.
    name : str, optional
        Name in reports; by default ``lightfm_cf`` or ``lightfm_hybrid`` after fitting.

    Attributes
    ----------
    history : list of (int, float)
        ``(epoch, validation score)`` of every evaluation of the last :meth:`fit`.
    best_epoch : int
        Epoch whose state the last :meth:`fit` kept (``params.epochs`` without validation).
    epochs_trained : int
        Epochs behind the current state, including :meth:`fit_partial` calls.
    train_seconds : float
        Wall-clock seconds spent in LightFM training since the last :meth:`fit` (evaluations excluded),
        over ``epochs_run`` epochs (discarded ones after the best epoch included); not saved (0 after
        :meth:`load`), so the same fit saves the same bytes.

    Examples
    --------
    >>> x = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=np.float32))
    >>> params = LightFMParams.model_validate({"no_components": 4, "epochs": 3})
    >>> model = LightFMRecommender(params, seed=0).fit(x)
    >>> model.name, model.score(np.array([0, 1])).shape
    ('lightfm_cf', (2, 3))
    >>> model.recommend(np.array([0]), k=2, exclude=x)[0].tolist()
    [[2, -1]]
    """

    incremental = True

    def __init__(
        self, params: LightFMParams, seed: int, num_threads: int = 1, name: str | None = None
    ) -> None:
        self.params = params
        self.seed = seed
        self.num_threads = num_threads
        self._name = name
        self._models: list[Any] = []
        self._item_features: sp.csr_matrix | None = None
        self._shape: tuple[int, int] = (0, 0)
        self._scorer: TopKScorer | None = None
        self.history: list[tuple[int, float]] = []
        self.best_epoch = 0
        self.epochs_trained = 0
        self.train_seconds = 0.0
        self.epochs_run = 0

    @property
    def name(self) -> str:
        """The explicit name, else ``lightfm_hybrid`` with item features and ``lightfm_cf`` without."""
        if self._name:
            return self._name
        return HYBRID if self._item_features is not None else CF

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def n_items(self) -> int:
        """Number of training items."""
        self._fitted()
        return self._shape[1]

    @property
    def n_users(self) -> int:
        """Number of training users."""
        self._fitted()
        return self._shape[0]

    @property
    def item_features(self) -> sp.csr_matrix | None:
        """The training item-feature matrix (None for the pure collaborative model)."""
        return self._item_features

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall-clock training seconds per epoch since the last :meth:`fit` (evaluations excluded)."""
        return self.train_seconds / self.epochs_run if self.epochs_run else 0.0

    def _fitted(self) -> list[Any]:
        """The members' LightFM models (one unless ``params.members`` > 1)."""
        if not self._models:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")
        return self._models

    def _new_members(self) -> list[Any]:
        return [self._new_lightfm(self.seed + member) for member in range(self.params.members)]

    def _new_lightfm(self, seed: int) -> Any:
        p = self.params
        return LightFM(
            no_components=p.no_components,
            loss=p.loss,
            learning_schedule=p.learning_schedule,
            learning_rate=p.learning_rate,
            item_alpha=p.item_alpha,
            user_alpha=p.user_alpha,
            max_sampled=p.max_sampled,
            random_state=np.random.RandomState(seed),
        )

    def fit(
        self,
        interactions: sp.csr_matrix,
        item_features: sp.csr_matrix | None = None,
        valid: sp.csr_matrix | None = None,
        validation_score: ValidationScore | None = None,
    ) -> Self:
        """Train from scratch for up to ``params.epochs`` epochs, optionally with early stopping.

        Parameters
        ----------
        interactions : csr_matrix
            ``(n_users, n_items)`` confidence weights, > 0 where the user listened.
        item_features : csr_matrix, optional
            ``(n_items, n_features)``; None trains the pure collaborative model.
        valid : csr_matrix, optional
            Held-out interactions of the same shape. Alone, it turns on early stopping on
            precision@10 (training items excluded from the ranking).
        validation_score : callable, optional
            ``f(model) -> float``, higher is better; turns on early stopping with this score.

        Notes
        -----
        With early stopping the model is scored every ``params.eval_every`` epochs (and after the
        last), the best state is kept (copied), and training stops once ``max(params.patience, 1)``
        evaluations in a row did not improve on the best. ``history`` and ``best_epoch`` record it.
        """
        matrix = check_interactions(interactions)
        self._reset(matrix.shape, check_item_features(item_features, matrix.shape[1]))
        if validation_score is None and valid is not None:
            validation_score = _precision_scorer(matrix, check_interactions(valid), VALIDATION_K)
        if validation_score is None:
            self._run_epochs(matrix, self.params.epochs)
            self.best_epoch = self.epochs_trained
        else:
            self._fit_with_early_stopping(matrix, validation_score)
        return self

    def _reset(self, shape: tuple[int, int], item_features: sp.csr_matrix | None) -> None:
        rows = shape[0] + (shape[1] if item_features is None else item_features.shape[1])
        require(
            lightfm_bytes(rows, self.params.no_components, self.params.members),
            f"LightFM ({self.params.members} x {self.params.no_components} components) on {shape[0]:,} users "
            f"and {rows - shape[0]:,} item or feature columns",
            "lower no_components or members, or cap the feature vocabulary",
        )
        # A new LightFM with a new RandomState: LightFM.fit alone would keep the old random stream.
        self._models = self._new_members()
        self._shape, self._item_features, self._scorer = shape, item_features, None
        self.history, self.best_epoch, self.epochs_trained = [], 0, 0
        self.train_seconds, self.epochs_run = 0.0, 0

    def _fit_with_early_stopping(self, matrix: sp.csr_matrix, validation_score: ValidationScore) -> None:
        best_score, best_state, misses = -np.inf, None, 0
        while self.epochs_trained < self.params.epochs:
            self._run_epochs(matrix, min(self.params.eval_every, self.params.epochs - self.epochs_trained))
            score = float(validation_score(self))
            self.history.append((self.epochs_trained, score))
            if score > best_score:
                best_score, best_state, misses = score, self._snapshot(), 0
                self.best_epoch = self.epochs_trained
                continue
            misses += 1
            if misses >= max(self.params.patience, 1):
                break
        if best_state is None:  # every score was NaN: keep the last state
            self.best_epoch = self.epochs_trained
        else:
            self._restore(best_state)

    def fit_partial(
        self, interactions: sp.csr_matrix, epochs: int = 1, item_features: sp.csr_matrix | None = None
    ) -> Self:
        """Continue training for ``epochs`` more epochs from the current state (warm start).

        Nothing is reset: embeddings, adagrad accumulators and the random stream carry on, so with
        one thread ``fit`` for ``a`` epochs then ``fit_partial`` for ``b`` equals ``fit`` for ``a + b``
        (without early stopping). The users and items must be the same as in :meth:`fit`; weights may
        change (e.g. new plays of known pairs). ``item_features`` defaults to the training ones and
        must keep their columns. On an unfitted model this starts from the seed. ``history`` and
        ``best_epoch`` keep describing the last :meth:`fit`; ``epochs_trained`` grows.
        """
        matrix = check_interactions(interactions)
        if not self._models:
            self._reset(matrix.shape, check_item_features(item_features, matrix.shape[1]))
        elif matrix.shape != self._shape:
            raise ValueError(
                f"fit_partial needs the training shape {self._shape}, got {matrix.shape}: refit with fit()"
            )
        elif item_features is not None:
            self._item_features = self._check_feature_columns(
                check_item_features(item_features, self._shape[1])
            )
        self._run_epochs(matrix, epochs)
        return self

    def _run_epochs(self, matrix: sp.csr_matrix, epochs: int) -> None:
        interactions, weights = _lightfm_inputs(matrix)
        sample_weight = None if self.params.loss == "warp-kos" else weights

        def train(model: Any) -> None:
            model.fit_partial(
                interactions,
                item_features=self._item_features,
                sample_weight=sample_weight,
                epochs=epochs,
                num_threads=self.num_threads,
            )

        start = time.perf_counter()
        if len(self._models) == 1:
            train(self._models[0])
        else:
            with ThreadPoolExecutor(len(self._models), thread_name_prefix="lightfm-member") as pool:
                list(pool.map(train, self._models))
        self.train_seconds += time.perf_counter() - start
        self.epochs_trained += epochs
        self.epochs_run += epochs
        self._scorer = None

    def _snapshot(self) -> dict[str, Any]:
        members = [
            {key: getattr(model, key).copy() for key in _MODEL_ARRAYS}
            | {"random_state": model.random_state.get_state()}
            for model in self._fitted()
        ]
        return {"members": members, "epochs_trained": self.epochs_trained}

    def _restore(self, state: dict[str, Any]) -> None:
        for model, member in zip(self._fitted(), state["members"], strict=True):
            for key in _MODEL_ARRAYS:
                setattr(model, key, member[key])
            model.random_state.set_state(member["random_state"])
        self.epochs_trained = state["epochs_trained"]
        self._scorer = None

    def _check_feature_columns(self, features: sp.csr_matrix | None) -> sp.csr_matrix | None:
        n_columns = self._fitted()[0].item_embeddings.shape[0]
        if features is not None and features.shape[1] != n_columns:
            raise ValueError(
                f"item_features have {features.shape[1]} columns, the model was trained with {n_columns}"
            )
        return features

    def item_representations(
        self, item_features: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(biases, embeddings)`` of items: float32 ``(n,)`` and ``(n, members * no_components)``.

        ``item_features`` (any number of rows, the training columns) describes the items to represent,
        e.g. cold-start items never seen in training; by default the training items. An ensemble's
        biases are the members' mean, its embeddings the members' side by side.
        """
        models = self._fitted()
        features = self._item_features if item_features is None else item_features
        if features is None:
            biases = [model.item_biases for model in models]
            embeddings = [model.item_embeddings for model in models]
        else:
            features = self._check_feature_columns(sp.csr_matrix(features, dtype=np.float32))
            biases = [features @ model.item_biases for model in models]
            embeddings = [features @ model.item_embeddings for model in models]
        return _mean_biases(biases), np.hstack(embeddings).astype(np.float32, copy=False)

    def user_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """``(biases, embeddings)`` of the training users (identity user features); an ensemble's
        embeddings are the members' side by side divided by their number, so a dot product with
        :meth:`item_representations` is the members' mean."""
        models = self._fitted()
        embeddings = np.hstack([model.user_embeddings for model in models])
        if len(models) > 1:
            embeddings /= np.float32(len(models))
        return _mean_biases([model.user_biases for model in models]), embeddings

    def scorer(self, item_features: sp.csr_matrix | None = None) -> TopKScorer:
        """A :class:`TopKScorer` of the training users over the training items (or ``item_features``' rows).

        Scores equal ``LightFM.predict`` (user and item biases included) up to float rounding.
        """
        if item_features is None and self._scorer is not None:
            return self._scorer
        scorer = TopKScorer.from_factors(
            *reversed(self.user_representations()), *reversed(self.item_representations(item_features))
        )
        if item_features is None:
            self._scorer = scorer
        return scorer

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Dense float32 scores of training users over all training items."""
        scorer = self.scorer()
        return scorer.score(check_users(user_indices, scorer.n_users))

    def fold_in_user(
        self, item_indices: np.ndarray, item_features: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """A scoring row ``[u, 0, 1]`` for a new listener from a few favourite items.

        ``u`` is the mean of the favourites' embeddings rescaled to the median norm of the trained
        users' embeddings. The mean points at the favourites' region of the space and is defined for
        a single favourite, where a least-squares fit with fewer items than components is
        underdetermined; the rescaling keeps the balance between taste (the dot product) and item
        popularity (the item bias) the same as for trained users. The user bias is 0 since it cannot
        change a ranking. Use the result with :meth:`TopKScorer.top_k_for_vector`.

        Parameters
        ----------
        item_indices : np.ndarray
            Favourite items: rows of ``item_features`` when given, else training item indices.
        item_features : csr_matrix, optional
            Feature rows of a catalogue that may include cold-start items (training columns).
        """
        favourites = np.asarray(item_indices, dtype=np.int64).ravel()
        if favourites.size == 0:
            raise ValueError("fold_in_user needs at least one favourite item")
        n_rows = self.n_items if item_features is None else item_features.shape[0]
        if favourites.min() < 0 or favourites.max() >= n_rows:
            raise IndexError(f"favourite item indices must lie in [0, {n_rows}), got {favourites}")
        features = self._item_features if item_features is None else item_features
        if features is None:
            embeddings = np.hstack([model.item_embeddings[favourites] for model in self._fitted()])
        else:
            embeddings = self.item_representations(sp.csr_matrix(features)[favourites])[1]
        direction = embeddings.mean(axis=0)
        norm = float(np.linalg.norm(direction))
        target = float(np.median(np.linalg.norm(self.user_representations()[1], axis=1)))
        vector = direction * (target / norm) if norm > 0 else direction
        return np.concatenate([vector, [0.0, 1.0]]).astype(np.float32)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {
            "name": self._name,
            "params": self.params.model_dump(),
            "seed": self.seed,
            "num_threads": self.num_threads,
            "shape": list(self._shape),
            "history": self.history,
            "best_epoch": self.best_epoch,
            "epochs_trained": self.epochs_trained,
            # Not the training time: the same fit must save the same bytes (a DVC output).
            "epochs_run": self.epochs_run,
        }
        arrays: dict[str, np.ndarray] = {}
        # Member 0 under the plain names (a one-member model saves what it always saved), the others
        # under "member<m>.".
        for member, model in enumerate(self._fitted()):
            prefix = f"member{member}." if member else ""
            _, keys, position, has_gauss, cached_gaussian = model.random_state.get_state()
            meta[f"{prefix}random_state"] = [int(position), int(has_gauss), float(cached_gaussian)]
            arrays |= {f"{prefix}{key}": getattr(model, key) for key in _MODEL_ARRAYS}
            arrays[f"{prefix}random_state.keys"] = keys
        if self._item_features is not None:
            arrays.update(sparse_to_arrays("item_features", self._item_features))
        return meta, arrays

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(
            LightFMParams.model_validate(meta["params"]), meta["seed"], meta["num_threads"], meta["name"]
        )
        model._models = model._new_members()
        for member, lightfm in enumerate(model._models):
            prefix = f"member{member}." if member else ""
            for key in _MODEL_ARRAYS:
                setattr(lightfm, key, arrays[f"{prefix}{key}"])
            position, has_gauss, cached_gaussian = meta[f"{prefix}random_state"]
            lightfm.random_state.set_state(
                ("MT19937", arrays[f"{prefix}random_state.keys"], position, has_gauss, cached_gaussian)
            )
        model._shape = (int(meta["shape"][0]), int(meta["shape"][1]))
        model._item_features = sparse_from_arrays("item_features", arrays)
        model.history = [(int(epoch), float(score)) for epoch, score in meta["history"]]
        model.best_epoch, model.epochs_trained = int(meta["best_epoch"]), int(meta["epochs_trained"])
        model.epochs_run = int(meta["epochs_run"])
        return model


def lightfm_bytes(rows: int, components: int, members: int) -> int:
    """Memory of the trained state: for every user and feature row, the embedding and bias with their
    adagrad gradients and momenta (float32, 3 arrays each), per member."""
    return members * rows * (components + 1) * 4 * 3


def _mean_biases(biases: list[np.ndarray]) -> np.ndarray:
    """The members' mean bias per row as float32 (a copy; one member's biases unchanged)."""
    if len(biases) == 1:
        return np.array(biases[0], dtype=np.float32)
    return np.asarray(np.mean(biases, axis=0, dtype=np.float64), dtype=np.float32)


def _lightfm_inputs(matrix: sp.csr_matrix) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """Binary interactions and the confidence weights as COO matrices sharing ``row``/``col``."""
    coo = matrix.tocoo()
    ones = np.ones_like(coo.data, dtype=np.float32)
    interactions = sp.coo_matrix((ones, (coo.row, coo.col)), shape=coo.shape)
    weights = sp.coo_matrix((coo.data.astype(np.float32), (coo.row, coo.col)), shape=coo.shape)
    return interactions, weights


def _precision_scorer(train: sp.csr_matrix, valid: sp.csr_matrix, k: int) -> ValidationScore:
    """A validation score: mean precision@k over users with validation items, training items excluded."""
    if valid.shape != train.shape:
        raise ValueError(f"valid has shape {valid.shape}, expected the training shape {train.shape}")
    users = np.flatnonzero(np.diff(valid.indptr))

    def precision(model: LightFMRecommender) -> float:
        scorer, hits = model.scorer(), 0
        for start in range(0, len(users), 512):
            batch = users[start : start + 512]
            indices, _ = scorer.top_k(batch, k, exclude=train)
            relevant = valid[batch].toarray() > 0
            found = np.take_along_axis(relevant, np.maximum(indices, 0), axis=1) & (indices >= 0)
            hits += int(found.sum())
        return hits / (k * len(users)) if len(users) else float("nan")

    return precision
