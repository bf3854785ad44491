"""Memory bounds of the competitors: item-item matrices built a block at a time, EASE's bounded variant and
its refusal before allocating."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import EaseParams, RP3betaParams, SyntheticParams
from recsys.data.synthetic import generate
from recsys.memory import MEMORY_LIMIT_ENV, MemoryBoundError, available_bytes
from recsys.models import EASE
from recsys.models.baselines import cosine_neighbours, ease_bytes, keep_top_per_row
from recsys.models.graph import RP3beta, rp3beta_weights


@pytest.fixture(scope="module")
def listens() -> sp.csr_matrix:
    """A generated 600 x 2,000 matrix of confidences (long tail, genre taste)."""
    table = generate(SyntheticParams(users=600, items=2_000, pairs=30_000, genres=10, tags=100))[
        "interactions"
    ]
    users = table["user"].astype("category").cat.codes.to_numpy()
    items = table["item"].str[1:].astype(int).to_numpy()
    weights = (1.0 + np.log1p(table["plays"].to_numpy())).astype(np.float32)
    return sp.csr_matrix((weights, (users, items)), shape=(600, 2_000))


def whole_cosine(matrix: sp.csr_matrix, neighbours: int, shrink: float) -> sp.csr_matrix:
    """The reference: the full co-occurrence matrix at once."""
    co = (matrix.T @ matrix).tocoo()
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0), dtype=np.float64).ravel())
    keep = co.row != co.col
    values = co.data[keep] / (norms[co.row[keep]] * norms[co.col[keep]] + shrink)
    similarity = sp.csr_matrix((values.astype(np.float32), (co.row[keep], co.col[keep])), shape=co.shape)
    return keep_top_per_row(similarity, neighbours)


@pytest.mark.parametrize("max_entries", [1, 5_000, 200_000, 10**9])
def test_item_knn_built_in_blocks_equals_the_whole_matrix(listens: sp.csr_matrix, max_entries: int) -> None:
    binary = listens.copy()
    binary.data[:] = 1.0
    expected = whole_cosine(binary, 50, 10.0)
    built = cosine_neighbours(binary, 50, 10.0, max_entries=max_entries)
    assert built.nnz == expected.nnz > 0
    np.testing.assert_array_equal(built.indptr, expected.indptr)
    np.testing.assert_array_equal(built.indices, expected.indices)
    np.testing.assert_array_equal(built.data, expected.data)
    weighted = cosine_neighbours(listens, 50, 10.0, max_entries=max_entries)
    np.testing.assert_allclose(weighted.toarray(), whole_cosine(listens, 50, 10.0).toarray(), rtol=1e-6)


def test_rp3beta_built_in_blocks_equals_one_block(listens: sp.csr_matrix) -> None:
    binary = listens.copy()
    binary.data[:] = 1.0
    whole = rp3beta_weights(binary, 0.8, 0.3, 100, max_entries=10**12)
    for max_entries in (1, 50_000):
        blocks = rp3beta_weights(binary, 0.8, 0.3, 100, max_entries=max_entries)
        assert (blocks != whole).nnz == 0 and blocks.nnz == whole.nnz > 0
    assert whole.diagonal().max() == 0.0
    model = RP3beta(RP3betaParams(alpha=0.8, beta=0.3, neighbours=100)).fit(listens)
    assert (model._fitted()[1] != whole).nnz == 0


def test_ease_models_only_the_most_listened_items_when_capped(listens: sp.csr_matrix) -> None:
    capped = EASE(EaseParams(l2=50.0, min_item_users=1, max_items=300)).fit(listens)
    counts = np.bincount(listens.indices, minlength=listens.shape[1])
    kept = capped.kept_items
    assert len(kept) == 300 and counts[kept].min() >= np.sort(counts)[-300]
    scores = capped.score(np.arange(10))
    assert np.isfinite(scores).all()
    # Every modelled item of a user ranks above every unmodelled one.
    others = np.setdiff1d(np.arange(listens.shape[1]), kept)
    assert (scores[:, kept].min(axis=1) >= scores[:, others].max(axis=1)).all()


def test_ease_refuses_a_catalogue_that_does_not_fit_before_allocating(
    listens: sp.csr_matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.01")  # 10 MB: 2,000 items would need 128 MB
    assert ease_bytes(2_000) == 128_000_000
    with pytest.raises(
        MemoryBoundError, match=r"EASE on 1,\d{3} items needs 0\.\d GB .* lower train.ease.max_items"
    ):
        EASE(EaseParams(l2=50.0, min_item_users=1, max_items=5_000)).fit(listens)
    small = EASE(EaseParams(l2=50.0, min_item_users=1, max_items=400)).fit(listens)  # 5.1 MB: runs
    assert len(small.kept_items) == 400


@pytest.mark.parametrize("raw", ["zero", "-1", "0"])
def test_a_bad_memory_limit_is_named(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, raw)
    with pytest.raises(MemoryBoundError, match=MEMORY_LIMIT_ENV):
        available_bytes()


def test_lightfm_refuses_a_state_that_does_not_fit(
    listens: sp.csr_matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.config import LightFMParams
    from recsys.models import LightFMRecommender
    from recsys.models.lightfm_model import lightfm_bytes

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.01")  # 10 MB
    big = LightFMParams(no_components=512, members=2, epochs=1)
    assert lightfm_bytes(2_600, 512, 2) > 0.8 * 0.01 * 2**30
    with pytest.raises(MemoryBoundError, match=r"LightFM \(2 x 512 components\) on 600 users"):
        LightFMRecommender(big, seed=0).fit(listens)
    small = LightFMRecommender(LightFMParams(no_components=8, epochs=1), seed=0).fit(listens)
    assert small.score(np.arange(3)).shape == (3, listens.shape[1])
