"""Evaluation splits: held-out cold-start items, then a per-user random train/valid/test holdout.

Protocol
--------
1. Cold start: ``cold_item_fraction`` of the items that have interactions (rounded half up) are drawn at
   random; all their interactions go to ``cold`` and nowhere else, so only item features can rank them.
2. Per user, over the remaining (warm) interactions: a user with at least ``min_user_interactions`` gets
   ``round(test_fraction * n)`` random artists in ``test`` (at least 1), then ``round(valid_fraction * m)``
   of the ``m`` left in ``valid`` (at least 1 when ``m >= 2``); rounding is half up and at least one
   artist always stays in ``train``. Users below the minimum keep everything in ``train``.

The assignment depends only on the seed and the set of (user, item) pairs, not on the row order.

Examples
--------
>>> from recsys.config import SplitParams
>>> frame = pd.DataFrame(
...     {Col.USER: ["u"] * 5 + ["v"], Col.ITEM: list("abcde") + ["a"], Col.WEIGHT: [1.0] * 6}
... )
>>> split = make_split(frame, SplitParams(cold_item_fraction=0.0), seed=0, item_ids=list("abcde"))
>>> [split.train.nnz, split.valid.nnz, split.test.nnz, split.cold.nnz]
[4, 1, 1, 0]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import Col
from recsys.config import SplitParams
from recsys.errors import DataError
from recsys.io import atomic_open, write_json, write_parquet
from recsys.offline.popularity import item_popularity

PARTS: tuple[str, ...] = ("train", "valid", "test", "cold")
"""The disjoint parts of a split; together they hold every input interaction."""

USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
COLD_ITEMS_FILE = "cold_items.parquet"
SUMMARY_FILE = "split_summary.json"

_TRAIN, _VALID, _TEST, _COLD = range(4)


@dataclass(frozen=True)
class Split:
    """User x item matrices (float32 CSR of interaction weights) of each part of a split.

    Attributes
    ----------
    user_ids, item_ids : list of str
        External ids of the rows (sorted user ids) and columns (the items table order).
    train, valid, test : scipy.sparse.csr_matrix
        Warm interactions of each part.
    cold : scipy.sparse.csr_matrix
        Every interaction of the cold-start items.
    cold_items : numpy.ndarray
        Sorted column indices of the cold-start items.
    """

    user_ids: list[str]
    item_ids: list[str]
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    cold: sp.csr_matrix
    cold_items: np.ndarray

    @cached_property
    def train_full(self) -> sp.csr_matrix:
        """``train + valid``: the data the best configuration is refitted on before the test."""
        return sp.csr_matrix(self.train + self.valid, dtype=np.float32)

    def part(self, name: str) -> sp.csr_matrix:
        """The matrix of one of :data:`PARTS`, or ``"train_full"``."""
        if name not in (*PARTS, "train_full"):
            raise ValueError(f"unknown split part {name!r}; expected one of {[*PARTS, 'train_full']}")
        matrix: sp.csr_matrix = getattr(self, name)
        return matrix


def make_split(
    interactions: pd.DataFrame,
    params: SplitParams,
    seed: int,
    item_ids: list[str],
    release_dates: pd.Series | None = None,
) -> Split:
    """Split interactions into cold-start items and per-user train/valid/test holdouts.

    Parameters
    ----------
    interactions : pandas.DataFrame
        ``interactions.parquet``: unique (user, item) pairs with a positive weight.
    params : SplitParams
        Fractions and the minimum interactions of a user to get a holdout.
    seed : int
        Seed of both random draws (cold items, per-user holdouts).
    item_ids : list of str
        Column order of the matrices (the items table order, matching the feature matrix rows).
    release_dates : pandas.Series, optional
        ISO release date of each of ``item_ids`` (missing allowed); needed when ``params.cold_items`` is
        ``"newest"``: the cold items are then the share with the latest dates (new music, ranked by its
        features alone), ties and missing dates ordered by the seeded draw.

    Returns
    -------
    Split
        Disjoint parts whose union is ``interactions``; checked by :func:`validate_split`.
    """
    frame = _checked_interactions(interactions, item_ids)
    user_ids = sorted(frame[Col.USER].unique().tolist())
    users = pd.Index(user_ids).get_indexer(frame[Col.USER]).astype(np.int64)
    items = pd.Index(item_ids).get_indexer(frame[Col.ITEM]).astype(np.int64)
    cold_stream, holdout_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if params.cold_items == "newest":
        if release_dates is None:
            raise ValueError("split.cold_items 'newest' needs the items' release dates")
        cold_items = _newest_items(items, params.cold_item_fraction, release_dates, cold_stream)
    else:
        cold_items = _draw_cold_items(items, params.cold_item_fraction, cold_stream)
    # Keys for every row, drawn before removing cold rows, so that changing the cold fraction does not
    # reshuffle the holdout of the interactions that stay warm.
    keys = holdout_stream.random(len(frame))
    parts = np.full(len(frame), _COLD, dtype=np.int8)
    warm = ~np.isin(items, cold_items)
    parts[warm] = _holdout_parts(users[warm], keys[warm], len(user_ids), params)
    weights = frame[Col.WEIGHT].to_numpy(np.float32)
    shape = (len(user_ids), len(item_ids))
    matrices = [_part_matrix(users, items, weights, parts == code, shape) for code in range(len(PARTS))]
    split = _from_parts(user_ids, list(item_ids), matrices, cold_items)
    validate_split(split, n_interactions=len(frame))
    return split


def holdout_sizes(n_interactions: np.ndarray, params: SplitParams) -> tuple[np.ndarray, np.ndarray]:
    """Test and validation sizes for users with the given numbers of warm interactions.

    Examples
    --------
    >>> n_test, n_valid = holdout_sizes(np.array([3, 5, 12, 50]), SplitParams())
    >>> n_test.tolist(), n_valid.tolist()
    ([0, 1, 2, 10], [0, 1, 2, 8])
    """
    counts = np.asarray(n_interactions, dtype=np.int64)
    eligible = counts >= params.min_user_interactions
    n_test = np.minimum(np.maximum(_round_half_up(params.test_fraction * counts), 1), counts - 1)
    n_test = np.where(eligible, n_test, 0)
    left = counts - n_test
    n_valid = np.minimum(np.maximum(_round_half_up(params.valid_fraction * left), 1), left - 1)
    n_valid = np.where(eligible & (left >= 2), n_valid, 0)
    return n_test, n_valid


def validate_split(split: Split, n_interactions: int | None = None) -> None:
    """Raise ``ValueError`` unless the parts are disjoint, cold items are only in ``cold`` and (when
    ``n_interactions`` is given) the parts add up to that many interactions."""
    shape = (len(split.user_ids), len(split.item_ids))
    matrices = [split.part(name) for name in PARTS]
    bad_shapes = [name for name, m in zip(PARTS, matrices, strict=True) if m.shape != shape]
    if bad_shapes:
        raise ValueError(f"split parts {bad_shapes} do not have shape {shape}")
    overlap = sum((m != 0).astype(np.int32) for m in matrices)
    if overlap.nnz and overlap.max() > 1:
        raise ValueError(f"split parts overlap on {int((overlap > 1).sum())} (user, item) pairs")
    is_cold = np.zeros(shape[1], dtype=bool)
    is_cold[split.cold_items] = True
    for name, matrix in zip(PARTS, matrices, strict=True):
        columns = np.unique(matrix.tocoo().col)
        if name == "cold" and not is_cold[columns].all():
            raise ValueError("the cold part holds interactions of warm items")
        if name != "cold" and is_cold[columns].any():
            raise ValueError(f"the {name} part holds interactions of cold-start items")
    total = sum(m.nnz for m in matrices)
    if n_interactions is not None and total != n_interactions:
        raise ValueError(f"split parts hold {total} interactions, the input has {n_interactions}")


def train_popularity(split: Split) -> np.ndarray:
    """Distinct training users per item: the only popularity evaluation may use (no test leakage)."""
    return item_popularity(split.train)


def split_summary(split: Split) -> dict[str, object]:
    """Interactions and users per part, and the numbers of users, items and cold items."""
    parts = {
        name: {
            "interactions": int(split.part(name).nnz),
            "users": int(np.count_nonzero(np.diff(split.part(name).indptr))),
        }
        for name in (*PARTS, "train_full")
    }
    return {
        "n_users": len(split.user_ids),
        "n_items": len(split.item_ids),
        "n_cold_items": len(split.cold_items),
        "parts": parts,
    }


def save_split(split: Split, out_dir: str | Path) -> None:
    """Write each part as ``<part>.npz``, the ids as Parquet and ``split_summary.json``, atomically."""
    out_dir = Path(out_dir)
    for name in PARTS:
        with atomic_open(out_dir / f"{name}.npz", "wb") as handle:
            sp.save_npz(handle, split.part(name))
    write_parquet(out_dir / USERS_FILE, pd.DataFrame({Col.USER: split.user_ids}))
    write_parquet(out_dir / ITEMS_FILE, pd.DataFrame({Col.ITEM: split.item_ids}))
    cold_ids = [split.item_ids[i] for i in split.cold_items]
    write_parquet(out_dir / COLD_ITEMS_FILE, pd.DataFrame({Col.ITEM: pd.Series(cold_ids, dtype=str)}))
    write_json(out_dir / SUMMARY_FILE, split_summary(split))


def load_split(out_dir: str | Path) -> Split:
    """Read a split written by :func:`save_split`; inconsistent files raise :class:`DataError`."""
    out_dir = Path(out_dir)
    user_ids = pd.read_parquet(out_dir / USERS_FILE)[Col.USER].astype(str).tolist()
    item_ids = pd.read_parquet(out_dir / ITEMS_FILE)[Col.ITEM].astype(str).tolist()
    cold_ids = pd.read_parquet(out_dir / COLD_ITEMS_FILE)[Col.ITEM].astype(str)
    cold_items = np.sort(pd.Index(item_ids).get_indexer(cold_ids)).astype(np.int64)
    if (cold_items < 0).any():
        raise DataError("cold items missing from the item list", file=str(out_dir / COLD_ITEMS_FILE))
    matrices = [sp.csr_matrix(sp.load_npz(out_dir / f"{name}.npz"), dtype=np.float32) for name in PARTS]
    split = _from_parts(user_ids, item_ids, matrices, cold_items)
    expected = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    try:
        validate_split(split)
    except ValueError as exc:
        raise DataError(str(exc), file=str(out_dir)) from exc
    if split_summary(split) != expected:
        raise DataError("split files disagree with split_summary.json", file=str(out_dir / SUMMARY_FILE))
    return split


def _from_parts(
    user_ids: list[str], item_ids: list[str], matrices: list[sp.csr_matrix], cold_items: np.ndarray
) -> Split:
    train, valid, test, cold = matrices
    return Split(user_ids, item_ids, train, valid, test, cold, cold_items)


def _checked_interactions(interactions: pd.DataFrame, item_ids: list[str]) -> pd.DataFrame:
    """Validated (user, item, weight) rows in canonical (user, item) order."""
    missing = [c for c in (Col.USER, Col.ITEM, Col.WEIGHT) if c not in interactions.columns]
    if missing:
        raise DataError(f"interactions lack column(s) {missing}", column=missing[0])
    if pd.Index(item_ids).has_duplicates:
        raise ValueError("item_ids must be unique")
    frame = interactions[[Col.USER, Col.ITEM, Col.WEIGHT]].reset_index(drop=True)
    weights = pd.to_numeric(frame[Col.WEIGHT], errors="coerce").to_numpy(np.float64)
    checks = [
        (frame[Col.USER].isna().to_numpy(), Col.USER, "missing user id"),
        (frame[Col.ITEM].isna().to_numpy(), Col.ITEM, "missing item id"),
        (~(np.isfinite(weights) & (weights > 0)), Col.WEIGHT, "weight must be a finite number > 0"),
    ]
    frame = frame.astype({Col.USER: str, Col.ITEM: str})
    checks += [
        (~frame[Col.ITEM].isin(item_ids).to_numpy(), Col.ITEM, "item id not in the items table"),
        (frame.duplicated([Col.USER, Col.ITEM]).to_numpy(), Col.ITEM, "duplicate (user, item) pair"),
    ]
    for bad, column, message in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{message} ({int(bad.sum())} rows)", row=row, column=column)
    return frame.sort_values([Col.USER, Col.ITEM], kind="stable", ignore_index=True)


def _draw_cold_items(items: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    active = np.unique(items)
    n_cold = int(_round_half_up(fraction * len(active)))
    return np.sort(rng.choice(active, size=n_cold, replace=False)).astype(np.int64)


def _newest_items(
    items: np.ndarray, fraction: float, release_dates: pd.Series, rng: np.random.Generator
) -> np.ndarray:
    active = np.unique(items)
    n_cold = int(_round_half_up(fraction * len(active)))
    dates = pd.Series(release_dates).reset_index(drop=True).fillna("").astype(str).to_numpy()[active]
    # Latest first; the seeded key orders equal (and missing) dates.
    order = np.lexsort((rng.random(len(active)), dates.astype("U10")))[::-1]
    return np.sort(active[order[:n_cold]]).astype(np.int64)


def _holdout_parts(users: np.ndarray, keys: np.ndarray, n_users: int, params: SplitParams) -> np.ndarray:
    """Part code of each warm row: a user's rows ranked by random key, the first ones to test, then valid."""
    counts = np.bincount(users, minlength=n_users)
    n_test, n_valid = holdout_sizes(counts, params)
    order = np.lexsort((keys, users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    rank = np.arange(len(users)) - starts[sorted_users]
    ranked_parts = np.where(
        rank < n_test[sorted_users],
        _TEST,
        np.where(rank < n_test[sorted_users] + n_valid[sorted_users], _VALID, _TRAIN),
    ).astype(np.int8)
    parts = np.empty(len(users), dtype=np.int8)
    parts[order] = ranked_parts
    return parts


def _part_matrix(
    users: np.ndarray, items: np.ndarray, weights: np.ndarray, rows: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    return sp.csr_matrix((weights[rows], (users[rows], items[rows])), shape=shape, dtype=np.float32)


def _round_half_up(values: np.ndarray | float) -> np.ndarray:
    # np.round rounds half to even (2.5 -> 2); half up is easier to state and to check.
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int64)
