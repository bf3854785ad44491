"""Evaluation sharded over users on a Dask LocalCluster (through Prefect) equals the single-process one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flows.dvc import apply_overrides
from flows.evaluation import run_sharded_evaluation
from recsys import stages
from recsys.config import ItemKNNParams, LightFMParams, load_params
from recsys.models import ItemKNN, LightFMRecommender
from recsys.offline.batches import BATCH_SIZE
from recsys.offline.evaluation import evaluate
from recsys.offline.features import load_item_features
from recsys.offline.popularity import mainstreaminess_groups
from recsys.offline.split import load_split
from recsys.paths import model_file
from recsys.specs import HYBRID
from tests.helpers import PROJECT_ROOT

# 1,300 generated listeners: three scoring batches, so two shards of unequal size.
SYNTHETIC = {"users": 1_300, "items": 900, "pairs": 30_000, "genres": 8, "tags": 80, "tags_per_item": 5}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml, split and two models (a small hybrid ensemble, item-kNN) of a generated data set."""
    root = tmp_path_factory.mktemp("sharded")
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    apply_overrides(root / "params.yaml", {"dataset.name": "synthetic", "dataset.synthetic": SYNTHETIC})
    params = load_params(root / "params.yaml")
    stages.ingest(params, root / "data" / "raw")
    stages.prepare(params, root / "data" / "raw", root / "data" / "prepared")
    stages.features(params, root / "data" / "prepared", root / "data" / "features")
    stages.split(params, root / "data" / "prepared", root / "data" / "split")
    loaded = load_split(root / "data" / "split")
    features = load_item_features(root / "data" / "features").matrix
    (root / "models").mkdir()
    hybrid = LightFMParams(no_components=8, epochs=3, members=2)
    LightFMRecommender(hybrid, seed=1).fit(loaded.train_full, features).save(
        model_file(HYBRID, root / "models")
    )
    ItemKNN(ItemKNNParams(neighbours=50)).fit(loaded.train_full).save(model_file("itemknn", root / "models"))
    return root


def local_evaluation(root: Path, model: str) -> dict[str, object]:
    from recsys.models import load_recommender

    params = load_params(root / "params.yaml")
    loaded = load_split(root / "data" / "split")
    groups = mainstreaminess_groups(loaded.train_full, params.evaluate.groups)
    scorer = load_recommender(model_file(model, root / "models"))
    return evaluate(scorer.score, loaded.train_full, loaded.test, params.evaluate, groups).to_dict()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("model", [HYBRID, "itemknn"])
def test_dask_shards_give_the_single_process_metrics(project: Path, model: str) -> None:
    expected = local_evaluation(project, model)
    sharded = run_sharded_evaluation(
        "dask",
        n_workers=2,
        model=model,
        shards=2,
        project_dir=str(project),
        split_dir="data/split",
        models_dir="models",
        params_path="params.yaml",
    )
    n_users = int(expected["n_users"])  # type: ignore[call-overload]
    assert n_users > 2 * BATCH_SIZE and sharded.pop("shards") == [2 * BATCH_SIZE, n_users - 2 * BATCH_SIZE]
    assert sharded == expected  # every number, to the last bit
    assert 0.0 < float(expected["ndcg@10"]) < 1.0  # type: ignore[arg-type]
    assert np.isfinite(float(expected["auc"]))  # type: ignore[arg-type]


@pytest.mark.usefixtures("prefect_harness")
def test_threads_and_more_shards_than_batches_give_the_same_metrics(project: Path) -> None:
    sharded = run_sharded_evaluation(
        "threads",
        model="itemknn",
        shards=5,
        project_dir=str(project),
        split_dir="data/split",
        models_dir="models",
        params_path="params.yaml",
    )
    assert len(sharded.pop("shards")) == 3  # one per scoring batch: shards never split a batch
    assert sharded == local_evaluation(project, "itemknn")
