"""The new-listener offline check: tiny-data behaviour, and fold-in beating most-popular on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import stages
from recsys.config import LightFMParams, Params, SplitParams
from recsys.offline.new_listener import eligible_users, new_listener_report, pick_favourites, train_hybrid
from recsys.offline.split import load_split
from tests.helpers import ClusteredCatalogue, Project, build_project


def test_favourites_are_seeded_distinct_training_items() -> None:
    train = sp.csr_matrix(np.array([[1, 1, 1, 0, 1], [0, 1, 1, 1, 1]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    users = eligible_users(train, test, 3)
    assert users.tolist() == [0]
    first, again = pick_favourites(train, users, 3, seed=7), pick_favourites(train, users, 3, seed=7)
    assert [f.tolist() for f in first] == [f.tolist() for f in again]
    assert len(set(first[0].tolist())) == 3 and set(first[0].tolist()) <= {0, 1, 2, 4}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The two-cluster tiny catalogue of the serving tests (no cold items)."""
    split = SplitParams(cold_item_fraction=0.0)
    return build_project(
        tmp_path_factory.mktemp("new-listener"), catalogue=ClusteredCatalogue(), split_params=split
    )


def test_report_on_the_tiny_project(project: Project) -> None:
    split = load_split(project.split)
    model = train_hybrid(
        split, project.features, LightFMParams(no_components=8, epochs=10), seed=0, num_threads=1
    )
    report = new_listener_report(model, split, n_favourites=3, k=5, seed=0)
    assert report["n_users"] > 0
    for name in ("fold_in", "most_popular", "trained_user"):
        assert 0.0 <= report[name]["precision@5"] <= 1.0 and 0.0 <= report[name]["ndcg@5"] <= 1.0


@pytest.mark.slow
@pytest.mark.realdata
def test_fold_in_beats_most_popular_on_real_data(prepared_real: Path, tmp_path: Path) -> None:
    params = Params()
    root = tmp_path
    stages.features(params, prepared_real, root / "features")
    stages.split(params, prepared_real, root / "split")
    split = load_split(root / "split")
    lightfm = params.train.lightfm.model_copy(update={"epochs": 20})
    model = train_hybrid(split, root / "features", lightfm, params.seed)
    report = new_listener_report(model, split, n_favourites=5, k=10, seed=params.seed)
    assert report["n_users"] > 1000
    assert report["fold_in"]["precision@10"] > report["most_popular"]["precision@10"]
    assert report["fold_in"]["ndcg@10"] > report["most_popular"]["ndcg@10"]
