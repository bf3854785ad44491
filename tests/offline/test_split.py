"""Evaluation split: invariants on small frames, a save/load round trip and a run on the real Last.fm data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.columns import Col
from recsys.config import SplitParams, data_dir_from_env
from recsys.errors import DataError
from recsys.offline.split import (
    PARTS,
    SUMMARY_FILE,
    Split,
    holdout_sizes,
    load_split,
    make_split,
    save_split,
    split_summary,
    train_popularity,
    validate_split,
)

ITEMS = [f"i{k:02d}" for k in range(40)]
PARAMS = SplitParams(test_fraction=0.2, valid_fraction=0.25, cold_item_fraction=0.1, min_user_interactions=5)


def make_interactions(seed: int = 0) -> pd.DataFrame:
    """25 users with 1 to 30 artists each over 38 of the 40 items (the last two have no interactions)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(25):
        n = int(rng.integers(1, 31))
        for item in rng.choice(38, size=n, replace=False):
            rows.append((f"u{user:02d}", ITEMS[item], float(rng.uniform(1.0, 5.0))))
    return pd.DataFrame(rows, columns=[Col.USER, Col.ITEM, Col.WEIGHT])


def full_matrix(frame: pd.DataFrame, split: Split) -> sp.csr_matrix:
    users = pd.Index(split.user_ids).get_indexer(frame[Col.USER])
    items = pd.Index(split.item_ids).get_indexer(frame[Col.ITEM])
    shape = (len(split.user_ids), len(split.item_ids))
    return sp.csr_matrix((frame[Col.WEIGHT].to_numpy(np.float32), (users, items)), shape=shape)


def row_counts(matrix: sp.csr_matrix) -> np.ndarray:
    return np.diff(matrix.indptr)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_interactions()


@pytest.fixture(scope="module")
def split(frame: pd.DataFrame) -> Split:
    return make_split(frame, PARAMS, seed=1, item_ids=ITEMS)


def test_parts_are_disjoint_and_add_up_to_the_input(frame: pd.DataFrame, split: Split) -> None:
    matrices = [split.part(name) for name in PARTS]
    assert sum(m.nnz for m in matrices) == len(frame)
    pattern = sum((m != 0).astype(np.int32) for m in matrices)
    assert pattern.max() == 1
    assert abs(sum(matrices) - full_matrix(frame, split)).max() == 0
    assert all(m.dtype == np.float32 and m.shape == (25, 40) for m in matrices)


def test_indices_follow_sorted_users_and_the_given_item_order(split: Split) -> None:
    assert split.user_ids == sorted(split.user_ids) and len(split.user_ids) == 25
    assert split.item_ids == ITEMS


def test_same_seed_same_split_other_seed_other_split(frame: pd.DataFrame, split: Split) -> None:
    again = make_split(frame, PARAMS, seed=1, item_ids=ITEMS)
    other = make_split(frame, PARAMS, seed=2, item_ids=ITEMS)
    for name in PARTS:
        assert (again.part(name) != split.part(name)).nnz == 0
    assert np.array_equal(again.cold_items, split.cold_items)
    assert (other.test != split.test).nnz > 0


def test_row_order_does_not_change_the_split(frame: pd.DataFrame, split: Split) -> None:
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = make_split(shuffled, PARAMS, seed=1, item_ids=ITEMS)
    assert all((again.part(name) != split.part(name)).nnz == 0 for name in PARTS)


def test_cold_items_are_a_fraction_of_active_items_and_only_in_cold(
    frame: pd.DataFrame, split: Split
) -> None:
    n_active = frame[Col.ITEM].nunique()
    assert len(split.cold_items) == int(np.floor(PARAMS.cold_item_fraction * n_active + 0.5))
    assert not np.isin(split.item_ids.index("i38"), split.cold_items)
    for name in ("train", "valid", "test"):
        assert split.part(name)[:, split.cold_items].nnz == 0
    full = full_matrix(frame, split)
    assert split.cold.nnz == full[:, split.cold_items].nnz
    assert abs(split.cold - full.multiply(split.cold != 0)).max() == 0


def test_per_user_holdout_sizes_follow_the_fractions(split: Split) -> None:
    warm = split.train + split.valid + split.test
    n_warm = row_counts(sp.csr_matrix(warm))
    n_test, n_valid = holdout_sizes(n_warm, PARAMS)
    assert np.array_equal(row_counts(split.test), n_test)
    assert np.array_equal(row_counts(split.valid), n_valid)
    eligible = n_warm >= PARAMS.min_user_interactions
    assert eligible.any() and (~eligible & (n_warm > 0)).any()
    assert (row_counts(split.test)[eligible] >= 1).all()
    assert (np.abs(n_test - PARAMS.test_fraction * n_warm)[eligible] <= 0.5).all()
    assert (row_counts(split.train)[eligible] >= 1).all()
    # Users below the minimum keep every warm interaction in train.
    assert np.array_equal(row_counts(split.train)[~eligible], n_warm[~eligible])


@pytest.mark.parametrize(
    ("n", "expected_test", "expected_valid"),
    [(1, 0, 0), (4, 0, 0), (5, 1, 1), (7, 1, 2), (8, 2, 2), (10, 2, 2), (12, 2, 3), (49, 10, 10)],
)
def test_holdout_sizes_round_half_up_and_keep_a_train_item(
    n: int, expected_test: int, expected_valid: int
) -> None:
    n_test, n_valid = holdout_sizes(np.array([n]), PARAMS)
    assert (int(n_test[0]), int(n_valid[0])) == (expected_test, expected_valid)


def test_large_fractions_still_leave_one_train_item() -> None:
    params = SplitParams(test_fraction=0.9, valid_fraction=0.9, min_user_interactions=2)
    n_test, n_valid = holdout_sizes(np.array([2, 3, 10]), params)
    assert n_test.tolist() == [1, 2, 9]
    assert n_valid.tolist() == [0, 0, 0]


def test_train_full_is_train_plus_valid(split: Split) -> None:
    assert abs(split.train_full - split.train - split.valid).max() == 0
    assert split.train_full.nnz == split.train.nnz + split.valid.nnz


def test_popularity_counts_training_users_only(frame: pd.DataFrame, split: Split) -> None:
    popularity = train_popularity(split)
    assert np.array_equal(popularity, np.asarray((split.train != 0).sum(axis=0)).ravel())
    all_users = np.asarray((full_matrix(frame, split) != 0).sum(axis=0)).ravel()
    assert (popularity <= all_users).all() and popularity.sum() < all_users.sum()


def test_no_cold_items_when_the_fraction_is_zero(frame: pd.DataFrame) -> None:
    split = make_split(frame, PARAMS.model_copy(update={"cold_item_fraction": 0.0}), seed=1, item_ids=ITEMS)
    assert len(split.cold_items) == 0 and split.cold.nnz == 0


def test_validate_split_rejects_overlapping_parts(split: Split) -> None:
    leaky = Split(
        split.user_ids, split.item_ids, split.train, split.valid, split.train, split.cold, split.cold_items
    )
    with pytest.raises(ValueError, match="overlap"):
        validate_split(leaky)
    with pytest.raises(ValueError, match="the input has"):
        validate_split(split, n_interactions=split.train.nnz)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({Col.ITEM: "unknown"}, "not in the items table"),
        ({Col.WEIGHT: 0.0}, "weight"),
        ({Col.WEIGHT: np.nan}, "weight"),
        ({Col.USER: None}, "missing user"),
    ],
)
def test_bad_interactions_raise_data_error_naming_the_row(
    frame: pd.DataFrame, change: dict[str, object], message: str
) -> None:
    bad = frame.copy()
    for column, value in change.items():
        bad[column] = bad[column].astype(object)
        bad.loc[3, column] = value
    with pytest.raises(DataError, match=message) as error:
        make_split(bad, PARAMS, seed=1, item_ids=ITEMS)
    assert error.value.row == 3


def test_duplicate_pairs_are_rejected(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="duplicate"):
        make_split(pd.concat([frame, frame.iloc[[0]]]), PARAMS, seed=1, item_ids=ITEMS)


def test_save_and_load_round_trip(split: Split, tmp_path: Path) -> None:
    save_split(split, tmp_path)
    loaded = load_split(tmp_path)
    assert (loaded.user_ids, loaded.item_ids) == (split.user_ids, split.item_ids)
    assert np.array_equal(loaded.cold_items, split.cold_items)
    assert all((loaded.part(name) != split.part(name)).nnz == 0 for name in (*PARTS, "train_full"))
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary == split_summary(split)
    assert summary["n_cold_items"] == len(split.cold_items)
    assert sum(summary["parts"][name]["interactions"] for name in PARTS) == sum(
        split.part(name).nnz for name in PARTS
    )


def test_load_rejects_files_that_disagree_with_the_summary(split: Split, tmp_path: Path) -> None:
    save_split(split, tmp_path)
    sp.save_npz(tmp_path / "test.npz", sp.csr_matrix(split.test.shape, dtype=np.float32))
    with pytest.raises(DataError, match="split_summary"):
        load_split(tmp_path)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_lastfm_split() -> None:
    data_dir = data_dir_from_env()
    if data_dir is None:
        pytest.skip("RECSYS_DATA_DIR is not set: no real Last.fm data")
    folder = data_dir / "hetrec2011-lastfm-2k"
    listens = pd.read_csv(folder / "user_artists.dat", sep="\t")
    artists = pd.read_csv(folder / "artists.dat", sep="\t", encoding="utf-8", usecols=["id"])
    item_ids = sorted(artists["id"].astype(str))
    frame = pd.DataFrame(
        {
            Col.USER: listens["userID"].astype(str),
            Col.ITEM: listens["artistID"].astype(str),
            Col.WEIGHT: (1.0 + np.log1p(listens["weight"])).astype(np.float32),
        }
    )
    started = time.perf_counter()
    split = make_split(frame, SplitParams(), seed=42, item_ids=item_ids)
    seconds = time.perf_counter() - started
    summary = split_summary(split)
    print(f"\nreal split in {seconds:.2f} s: {summary}")
    assert (len(split.user_ids), len(split.item_ids)) == (frame[Col.USER].nunique(), len(item_ids))
    assert sum(split.part(name).nnz for name in PARTS) == len(frame)
    n_active = frame[Col.ITEM].nunique()
    assert abs(len(split.cold_items) - SplitParams().cold_item_fraction * n_active) <= 0.5
    test_share = split.test.nnz / (split.train.nnz + split.valid.nnz + split.test.nnz)
    assert 0.15 < test_share < 0.25
