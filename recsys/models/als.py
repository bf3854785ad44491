"""Implicit-feedback ALS (Hu, Koren and Volinsky, 2008) through the ``implicit`` package.

Confidence ``c_ui = 1 + alpha * w_ui`` on the (log-damped) listen weights, preference 1 on every listened
pair; ``factors`` latent dimensions, ``regularization`` the L2 strength, ``iterations`` alternating
sweeps (conjugate gradient). With ``num_threads = 1`` and a seed the factors are the same every run.
A strong, well-known collaborative competitor for the hybrid on implicit data.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from recsys.config import ALSParams
from recsys.models.base import NotFittedError, Recommender, check_interactions, check_users


class ALS(Recommender):
    """Implicit ALS factor model: ``score = user_factors @ item_factors.T``.

    Parameters
    ----------
    params : ALSParams
        ``factors``, ``regularization``, ``alpha``, ``iterations``.
    seed : int
        Random state of the initial factors.
    num_threads : int
        Threads of the solver (1: the same factors every run).
    name : str
        Name in reports.
    """

    def __init__(self, params: ALSParams, seed: int, num_threads: int = 1, name: str = "als") -> None:
        self.params = params
        self.seed = seed
        self.num_threads = num_threads
        self.name = name
        self._users: np.ndarray | None = None
        self._items: np.ndarray | None = None

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Fit the factors on the weighted matrix; ``item_features`` is ignored."""
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as exc:  # pragma: no cover - a core dependency; the message says what to do
            raise ImportError("the ALS competitor needs the `implicit` package: run `make install`") from exc
        from threadpoolctl import threadpool_limits

        matrix = check_interactions(interactions)
        # implicit solves per user with its own threads; a multi-threaded BLAS under it only contends
        # (implicit warns about it when the model is built).
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.params.factors,
                regularization=self.params.regularization,
                alpha=self.params.alpha,
                iterations=self.params.iterations,
                num_threads=self.num_threads,
                random_state=self.seed,
            )
            model.fit(matrix, show_progress=False)
        self._users = np.asarray(model.user_factors, dtype=np.float32)
        self._items = np.asarray(model.item_factors, dtype=np.float32)
        return self

    @property
    def n_items(self) -> int:
        """Number of items."""
        return int(self._fitted()[1].shape[0])

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._users is None or self._items is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")
        return self._users, self._items

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Dot products of the users' factors with every item's."""
        users, items = self._fitted()
        rows = check_users(user_indices, users.shape[0])
        return np.asarray(users[rows] @ items.T, dtype=np.float32)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        users, items = self._fitted()
        meta = {"name": self.name, "params": self.params.model_dump(), "seed": self.seed}
        return meta | {"num_threads": self.num_threads}, {"user_factors": users, "item_factors": items}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(ALSParams.model_validate(meta["params"]), meta["seed"], meta["num_threads"], meta["name"])
        model._users, model._items = arrays["user_factors"], arrays["item_factors"]
        return model
