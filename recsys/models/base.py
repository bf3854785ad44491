"""The interface every recommender implements, input checks, and single-file persistence.

A saved model is ONE ``.npz`` file written atomically: its arrays plus a JSON header under the key
``__meta__`` (class name, settings, anything small). Nothing is pickled, so loading runs no code from
the file (``allow_pickle=False``). Sparse matrices are stored as their CSR parts.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from recsys.io import atomic_open
from recsys.models.scorer import top_k_from_scores

META_KEY = "__meta__"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type[Recommender]] = {}


class Recommender(abc.ABC):
    """A model that scores every item for known users; higher scores are better.

    Subclasses implement :meth:`fit`, :meth:`score`, :attr:`n_items`, :meth:`_state` and
    :meth:`_from_state`; the base class gives them :meth:`recommend`, :meth:`save` and :meth:`load`.
    ``fit`` always starts from scratch. ``fit_partial`` continues training where the model supports it
    (LightFM) and raises ``NotImplementedError`` otherwise.
    """

    name: str
    incremental: ClassVar[bool] = False
    """True when :meth:`fit_partial` continues training instead of raising."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every subclass is registered by name so a saved file can name the class that reads it.
        _REGISTRY[cls.__name__] = cls

    @abc.abstractmethod
    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None) -> Self:
        """Train from scratch on a ``(n_users, n_items)`` confidence matrix; returns ``self``."""

    def fit_partial(self, interactions: sp.csr_matrix, epochs: int = 1) -> Self:
        """Continue training; models without incremental training raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} has no incremental training: call fit() instead")

    @abc.abstractmethod
    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Dense float32 ``(len(user_indices), n_items)`` scores of training users; higher is better."""

    @property
    @abc.abstractmethod
    def n_items(self) -> int:
        """Number of items the model ranks."""

    @property
    def is_fitted(self) -> bool:
        """Whether the model can score (it was fitted or loaded)."""
        try:
            return self.n_items > 0
        except NotFittedError:
            return False

    def recommend(
        self, user_indices: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(indices, scores)`` for training users, never returning ``exclude``'s nonzero cells.

        ``exclude`` has one row per training user (usually the training matrix); see
        :func:`recsys.models.scorer.top_k_from_scores` for the output.
        """
        user_indices = np.asarray(user_indices, dtype=np.int64)
        rows = None if exclude is None else sp.csr_matrix(exclude)[user_indices]
        return top_k_from_scores(self.score(user_indices), k, rows)

    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-serialisable settings and the arrays that together rebuild the fitted model."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        """Rebuild a fitted model from :meth:`_state`'s output."""

    def save(self, path: str | Path) -> None:
        """Write the fitted model to one ``.npz`` file, atomically (a reader never sees half a file)."""
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: nothing to save")
        meta, arrays = self._state()
        header = {"class": type(self).__name__, "format": FORMAT_VERSION, **meta}
        payload: dict[str, Any] = {META_KEY: np.array(json.dumps(header)), **arrays}
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **payload)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a model written by :meth:`save`; the file must hold this class (or a subclass)."""
        meta, arrays = read_model_file(path)
        found = _REGISTRY.get(meta["class"])
        if found is None or not issubclass(found, cls):
            raise ValueError(f"{path}: holds a {meta['class']} model, not a {cls.__name__}")
        return found._from_state(meta, arrays)


class NotFittedError(RuntimeError):
    """A model was used before ``fit`` or ``load``."""


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read the JSON header and the arrays of a saved model file, without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if META_KEY not in arrays:
        raise ValueError(f"{path}: not a recsys model file (no {META_KEY} header)")
    meta: dict[str, Any] = json.loads(str(arrays.pop(META_KEY)[()]))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: model file format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return meta, arrays


def load_recommender(path: str | Path) -> Recommender:
    """Load any saved recommender, whichever class wrote it."""
    return Recommender.load(path)


def check_interactions(interactions: Any) -> sp.csr_matrix:
    """A canonical float32 CSR copy of an interaction matrix, or a ``ValueError`` saying what is wrong.

    Canonical means sorted indices, no duplicates and no stored zeros; every stored weight must be a
    finite number > 0 (a confidence of a listen).
    """
    if not sp.issparse(interactions) or interactions.ndim != 2:
        raise ValueError(f"interactions must be a 2-D scipy sparse matrix, got {type(interactions).__name__}")
    matrix = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError("interactions hold NaN or infinite weights")
    if matrix.nnz and matrix.data.min() < 0:
        raise ValueError(f"interaction weights must be > 0, found {matrix.data.min()}")
    if matrix.nnz == 0:
        raise ValueError(f"interactions of shape {matrix.shape} hold no listens")
    return matrix


def check_item_features(item_features: Any, n_items: int) -> sp.csr_matrix | None:
    """A float32 CSR copy of an ``(n_items, n_features)`` item-feature matrix (None stays None)."""
    if item_features is None:
        return None
    if not sp.issparse(item_features) or item_features.shape[0] != n_items:
        shape = getattr(item_features, "shape", None)
        raise ValueError(f"item_features must be a sparse matrix with {n_items} rows, got shape {shape}")
    features = sp.csr_matrix(item_features, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(features.data)):
        raise ValueError("item_features hold NaN or infinite values")
    return features


def check_users(user_indices: np.ndarray, n_users: int) -> np.ndarray:
    """User indices as int64, or an ``IndexError`` when one is not a training user."""
    users = np.asarray(user_indices, dtype=np.int64).ravel()
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise IndexError(f"user indices must lie in [0, {n_users}), got min {users.min()} max {users.max()}")
    return users


def sparse_to_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """The CSR parts of ``matrix`` under keys ``{prefix}.data`` etc., for :func:`numpy.savez`."""
    return {
        f"{prefix}.data": matrix.data,
        f"{prefix}.indices": matrix.indices,
        f"{prefix}.indptr": matrix.indptr,
        f"{prefix}.shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def sparse_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix | None:
    """Rebuild a CSR matrix stored by :func:`sparse_to_arrays` (None when absent)."""
    if f"{prefix}.data" not in arrays:
        return None
    shape = tuple(int(n) for n in arrays[f"{prefix}.shape"])
    parts = (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"])
    return sp.csr_matrix(parts, shape=shape)
