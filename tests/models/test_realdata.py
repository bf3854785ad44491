"""LightFM against the most-popular baseline on the real Last.fm 2K listening data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.config import LightFMParams, data_dir_from_env
from recsys.models import LightFMRecommender, MostPopular, Recommender

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

SEED = 42
K = 10


def load_listens() -> sp.csr_matrix:
    """user_artists.dat as a users x artists matrix of confidences ``1 + log1p(plays)``."""
    data_dir = data_dir_from_env()
    if data_dir is None:
        pytest.skip("RECSYS_DATA_DIR is unset: no real data to test on")
    frame = pd.read_csv(data_dir / "hetrec2011-lastfm-2k" / "user_artists.dat", sep="\t")
    users = frame["userID"].astype("category").cat.codes.to_numpy()
    items = frame["artistID"].astype("category").cat.codes.to_numpy()
    weights = (1.0 + np.log1p(frame["weight"].to_numpy())).astype(np.float32)
    return sp.csr_matrix((weights, (users, items)), shape=(users.max() + 1, items.max() + 1))


def holdout(listens: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Move a random ``fraction`` of each user's artists (users with >= 5) into a test matrix."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(listens.shape[0]), np.diff(listens.indptr))
    in_test = np.zeros(listens.nnz, dtype=bool)
    for user in range(listens.shape[0]):
        start, stop = listens.indptr[user], listens.indptr[user + 1]
        if stop - start >= 5:
            chosen = rng.choice(stop - start, size=round(fraction * (stop - start)), replace=False)
            in_test[start + chosen] = True
    coo = listens.tocoo()

    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((coo.data[mask], (rows[mask], coo.col[mask])), shape=listens.shape)

    return part(~in_test), part(in_test)


def precision_at_k(model: Recommender, train: sp.csr_matrix, test: sp.csr_matrix) -> float:
    users = np.flatnonzero(np.diff(test.indptr))
    hits = 0
    for start in range(0, len(users), 512):
        batch = users[start : start + 512]
        indices, _ = model.recommend(batch, K, exclude=train)
        relevant = test[batch].toarray() > 0
        hits += int((np.take_along_axis(relevant, np.maximum(indices, 0), axis=1) & (indices >= 0)).sum())
    return hits / (K * len(users))


def test_lightfm_beats_most_popular_on_held_out_listens() -> None:
    train, test = holdout(load_listens(), 0.2, SEED)
    assert train.multiply(test).nnz == 0 and test.nnz > 0.15 * (train.nnz + test.nnz)
    params = LightFMParams.model_validate({"no_components": 32, "epochs": 10})
    lightfm = LightFMRecommender(params, seed=SEED, num_threads=2).fit(train)
    popular = MostPopular().fit(train)
    lightfm_precision = precision_at_k(lightfm, train, test)
    popular_precision = precision_at_k(popular, train, test)
    print(
        f"\nP@{K}: lightfm_cf {lightfm_precision:.4f}, most_popular {popular_precision:.4f}; "
        f"lightfm {lightfm.seconds_per_epoch:.3f} s/epoch"
    )
    assert lightfm_precision > popular_precision
