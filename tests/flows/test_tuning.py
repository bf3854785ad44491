"""The hyperparameter search flow on both task runners: same trials, same scores, same best trial."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.dvc import apply_overrides
from flows.tuning import make_task_runner, run_search
from recsys import stages
from recsys.config import load_params
from recsys.errors import ConfigError
from recsys.stages import BEST_TRIAL_FILE as BEST_FILE
from recsys.stages import TRIALS_FILE
from tests.helpers import PROJECT_ROOT, TINY_OVERRIDES, write_synthetic_raw

SEARCH_OVERRIDES: dict[str, Any] = TINY_OVERRIDES | {
    "train.search.n_trials": 3,
    "train.search.space": {"no_components": [4, 8], "learning_rate": [0.05, 0.1]},
    "train.search.competitors": {"ease": {"l2": [10.0, 100.0]}},
}


@pytest.fixture(scope="module")
def search_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """params.yaml and the features and split of a synthetic 60 users x 40 artists data set."""
    root = tmp_path_factory.mktemp("search")
    params_path = root / "params.yaml"
    shutil.copy(PROJECT_ROOT / "params.yaml", params_path)
    apply_overrides(params_path, SEARCH_OVERRIDES)
    params = load_params(params_path)
    raw = write_synthetic_raw(root / "raw", n_users=60, n_items=40, seed=1)
    stages.prepare(params, raw, root / "prepared")
    stages.features(params, root / "prepared", root / "features")
    stages.split(params, root / "prepared", root / "split")
    return {
        "params_path": str(params_path),
        "features_dir": str(root / "features"),
        "split_dir": str(root / "split"),
    }


def test_runner_choice() -> None:
    assert isinstance(make_task_runner("threads"), ThreadPoolTaskRunner)
    dask = make_task_runner("dask", n_workers=3)
    assert isinstance(dask, DaskTaskRunner)
    assert dask.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True}
    remote = make_task_runner("dask", address="tcp://127.0.0.1:8786")
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ConfigError, match="unknown task runner"):
        make_task_runner("ray")


def _outcome(result: dict[str, Any]) -> list[tuple[int, float, int]]:
    return [(row["number"], row["score"], row["best_epoch"]) for row in result["trials"]]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_threads_and_dask_find_the_same_best_trial(search_inputs: dict[str, str], tmp_path: Path) -> None:
    results = {
        runner: run_search(
            runner,
            n_workers=2,
            num_threads=1,
            out_dir=str(tmp_path / runner),
            params_path=search_inputs["params_path"],
            features_dir=search_inputs["features_dir"],
            split_dir=search_inputs["split_dir"],
        )
        for runner in ("threads", "dask")
    }

    threads, dask = results["threads"], results["dask"]
    # The hybrid's three configurations, LightFM-CF, then EASE's two grid points.
    assert [row["model"] for row in threads["trials"]] == ["lightfm_hybrid"] * 3 + [
        "lightfm_cf",
        "ease",
        "ease",
    ]
    assert _outcome(threads) == _outcome(dask)
    assert threads["best_trial"]["number"] == dask["best_trial"]["number"]
    hybrid = [row["score"] for row in threads["trials"] if row["model"] == "lightfm_hybrid"]
    assert threads["best_trial"]["score"] == max(hybrid)
    assert threads["tuned"] == dask["tuned"]
    assert threads["tuned"]["train.lightfm.epochs"] == threads["best_trial"]["best_epoch"]
    assert threads["tuned"]["train.ease.l2"] in (10.0, 100.0)
    for runner, result in results.items():
        table = pd.read_csv(result["trials_file"])
        assert Path(result["trials_file"]) == tmp_path / runner / TRIALS_FILE
        assert table["score"].tolist() == pytest.approx([score for _, score, _ in _outcome(result)])
        best = json.loads((tmp_path / runner / BEST_FILE).read_text(encoding="utf-8"))
        assert best["number"] == result["best_trial"]["number"]
