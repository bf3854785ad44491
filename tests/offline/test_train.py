"""The train stage's recipe: every model fitted once with its settings, bit-identical for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import Params
from recsys.offline import train as train_module
from recsys.offline.split import Split
from recsys.offline.train import baselines, fit_all
from recsys.specs import MODEL_NAMES


def block_matrix(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Two taste blocks: users 0-19 like items 0-9, users 20-39 like items 10-19; 2 held out each."""
    rng = np.random.default_rng(seed)
    train, valid = np.zeros((40, 20), np.float32), np.zeros((40, 20), np.float32)
    for user in range(40):
        liked = rng.permutation(np.arange(10) + (10 if user >= 20 else 0))
        train[user, liked[:6]] = 1.0
        valid[user, liked[6:8]] = 1.0
    return sp.csr_matrix(train), sp.csr_matrix(valid)


def test_fit_baselines_names() -> None:
    train, _ = block_matrix()
    models = {model.name: model.fit(train) for model in baselines(Params())}
    assert sorted(models) == ["als", "ease", "itemknn", "most_popular", "rp3beta"]
    assert all(model.score(np.array([0, 25])).shape == (2, 20) for model in models.values())


def tiny_split() -> Split:
    train, valid = block_matrix()
    empty = sp.csr_matrix(train.shape, dtype=np.float32)
    users, items = [f"u{u}" for u in range(train.shape[0])], [f"a{i}" for i in range(train.shape[1])]
    return Split(users, items, train, valid, empty, empty, np.array([], dtype=np.int64))


def test_fit_all_fits_every_model_once_and_twice_gives_the_same_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Params().model_dump()
    for section in ("lightfm", "lightfm_cf"):
        settings["train"][section] |= {"no_components": 8, "epochs": 5}
    params = Params.model_validate(settings)
    features = sp.identity(20, format="csr", dtype=np.float32)
    # The first fit trains the hybrid in a child process (two cores), the second here (one core).
    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda _pid: {0, 1})
    first = fit_all(params, tiny_split(), features, background=True)
    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda _pid: {0})
    second = fit_all(params, tiny_split(), features, background=True)
    assert sorted(first.models) == sorted(MODEL_NAMES) == first.summary["models"]
    assert first.summary["final_threads"] == 1 and first.summary["lightfm"]["epochs"] == 5
    users = np.arange(40)
    for name in MODEL_NAMES:  # single-threaded LightFM: bit-identical, not merely close
        np.testing.assert_array_equal(first.models[name].score(users), second.models[name].score(users))


def test_the_hybrid_trains_in_a_child_process_only_single_threaded_with_a_second_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda _pid: {0, 1})
    with train_module._hybrid_process(True, 1) as pool:
        assert pool is not None
    with train_module._hybrid_process(True, 2) as pool:  # multi-threaded LightFM wants both cores itself
        assert pool is None
    with train_module._hybrid_process(False, 1) as pool:  # not asked (a bare script's main is not spawn-safe)
        assert pool is None
    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda _pid: {0})
    with train_module._hybrid_process(True, 1) as pool:
        assert pool is None
