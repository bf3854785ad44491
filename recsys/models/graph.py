"""RP3beta (Paudel et al., 2017): a three-step random walk user -> item -> user -> item, popularity-damped.

``W[i, j] = sum_u P_iu^alpha P_uj^alpha / deg(j)^beta`` with ``P_ui`` the user's row of the binarised
matrix normalised to sum 1 and ``P_iu`` the item's column normalised the same way; each row ``i`` keeps its
``neighbours`` largest entries (diagonal removed) and a user scores ``x_u @ W``. ``beta`` > 0 lowers
popular items; ``alpha`` sharpens or flattens the walk. Among the strongest simple models on Last.fm
(Dacrema et al., RecSys 2019), which is why it is a competitor here.

Examples
--------
>>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32))
>>> RP3beta(RP3betaParams(alpha=1.0, beta=0.0, neighbours=2)).fit(x).score(np.array([0])).round(3).tolist()
[[0.25, 0.25, 0.5]]
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from recsys.config import RP3betaParams
from recsys.models.base import (
    check_interactions,
    sparse_from_arrays,
    sparse_to_arrays,
)
from recsys.models.baselines import (
    ITEM_BLOCK_ENTRIES,
    ItemItemRecommender,
    binarize,
    blockwise_top,
    item_user_counts,
)


class RP3beta(ItemItemRecommender):
    """The random-walk item-item model RP3beta on the binarised matrix (see the module docstring).

    Parameters
    ----------
    params : RP3betaParams
        ``alpha``, ``beta`` and ``neighbours``.
    name : str
        Name in reports.
    """

    def __init__(self, params: RP3betaParams, name: str = "rp3beta") -> None:
        self.params = params
        self.name = name
        self._history: sp.csr_matrix | None = None
        self._matrix: sp.csr_matrix | None = None

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Build the pruned walk matrix; ``item_features`` is ignored."""
        history = binarize(check_interactions(interactions))
        self._matrix = rp3beta_weights(history, self.params.alpha, self.params.beta, self.params.neighbours)
        self._history = history
        return self

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        history, weights = self._fitted()
        meta = {"name": self.name, "params": self.params.model_dump()}
        return meta, {**sparse_to_arrays("history", history), **sparse_to_arrays("weights", weights)}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(RP3betaParams.model_validate(meta["params"]), name=meta["name"])
        model._history = sparse_from_arrays("history", arrays)
        model._matrix = sparse_from_arrays("weights", arrays)
        return model


def rp3beta_weights(
    binary: sp.csr_matrix, alpha: float, beta: float, neighbours: int, max_entries: int = ITEM_BLOCK_ENTRIES
) -> sp.csr_matrix:
    """The pruned RP3beta item-item matrix (float32, zero diagonal) of a binary user-item matrix, built
    :func:`~recsys.models.baselines.blockwise_top` (``max_entries`` at a time)."""
    user_item = _row_normalised_power(binary, alpha)
    item_user = _row_normalised_power(sp.csr_matrix(binary.T), alpha)
    degree = item_user_counts(binary).astype(np.float64)
    damping = np.zeros_like(degree)
    seen = degree > 0
    damping[seen] = degree[seen] ** -beta

    def damped(block: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
        walk = sp.csr_matrix(block, dtype=np.float64)
        walk.data *= damping[walk.indices]
        walk.data[walk.indices == np.repeat(rows, np.diff(walk.indptr))] = 0.0
        walk.eliminate_zeros()
        return walk

    weights = blockwise_top(item_user, user_item, neighbours, damped, max_entries)
    return sp.csr_matrix(weights, dtype=np.float32)


def _row_normalised_power(matrix: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """Each row scaled to sum 1 (empty rows stay empty), then every stored value raised to ``alpha``."""
    sums = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    scaled = sp.csr_matrix(sp.diags(scale) @ matrix, dtype=np.float64)
    scaled.data **= alpha
    return scaled
