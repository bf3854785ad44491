"""Cross-validation: folds of the project's own recipe on splits with their own seeds, on Dask or threads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cross_validation import run_cross_validation
from flows.dvc import apply_overrides
from recsys import stages
from recsys.cli.main import app
from recsys.config import load_params
from recsys.offline.cross_validation import fold_seeds
from recsys.specs import HYBRID, MODEL_NAMES
from tests.helpers import PROJECT_ROOT, TINY_OVERRIDES, write_synthetic_raw


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with params.yaml, the prepared tables and the features of 60 users x 40 artists."""
    root = tmp_path_factory.mktemp("cv")
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    apply_overrides(root / "params.yaml", TINY_OVERRIDES | {"evaluate.bootstrap.resamples": 200})
    params = load_params(root / "params.yaml")
    raw = write_synthetic_raw(root / "raw", n_users=60, n_items=40, seed=3)
    stages.prepare(params, raw, root / "data" / "prepared")
    stages.features(params, root / "data" / "prepared", root / "data" / "features")
    return root


def test_folds_on_dask_repeat_the_pipeline_on_their_own_splits(project: Path, prefect_harness: None) -> None:
    summary = run_cross_validation(2, "dask", n_workers=2, project_dir=str(project))
    params = load_params(project / "params.yaml")
    assert summary["folds"] == 2 and summary["seeds"] == fold_seeds(params.seed, 2)
    assert set(summary["metrics"]) == set(MODEL_NAMES) and set(summary["leads"]) == set(MODEL_NAMES) - {
        HYBRID
    }
    first, second = summary["per_fold"]
    # Other seeds, other test listeners: the numbers differ between the folds.
    assert first["models"][HYBRID] != second["models"][HYBRID]
    for name, spread in summary["metrics"].items():
        values = [fold["models"][name]["ndcg@10"] for fold in summary["per_fold"]]
        assert spread["ndcg@10"]["mean"] == pytest.approx(sum(values) / 2)
        assert spread["ndcg@10"]["min"] == min(values) and spread["ndcg@10"]["max"] == max(values)

    # Fold 0 is the project's own split: the split, train and evaluate stages give the same numbers.
    data = project / "data"
    stages.split(params, data / "prepared", data / "split")
    stages.train(params, data / "features", data / "split", project / "models")
    report = stages.evaluate(
        params, data / "features", data / "split", project / "models", project / "metrics", project / "plots"
    )
    for name in MODEL_NAMES:
        assert first["models"][name]["ndcg@10"] == pytest.approx(report["models"][name]["ndcg@10"], abs=1e-9)
    assert first["leads"]["als"]["delta_low"] == pytest.approx(
        report["uncertainty"]["leads"]["als"]["delta_low"]
    )

    written = json.loads((project / "reports" / "cv" / "cv.json").read_text(encoding="utf-8"))
    assert written["metrics"] == summary["metrics"]
    table = (project / "reports" / "cv" / "cv.md").read_text(encoding="utf-8")
    assert "| model |" in table and f"{summary['metrics'][HYBRID]['ndcg@10']['mean']:.4f} ±" in table

    # Threads in one process: the same numbers as the Dask workers.
    on_threads: dict[str, Any] = run_cross_validation(
        2, "threads", project_dir=str(project), out_dir="reports/cv-threads"
    )
    assert on_threads["metrics"] == summary["metrics"]


def test_one_fold_is_refused_with_a_clear_message(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["cv", "--folds", "1"])
    assert result.exit_code != 0 and "--folds" in result.output
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_seeds(42, 1)


def test_the_summary_counts_a_lead_as_sure_when_its_interval_is_clear_of_zero_either_way() -> None:
    from recsys.offline.cross_validation import summarise

    def fold(seed: int, low: float, high: float) -> dict[str, Any]:
        lead = {"relative": (low + high) / 2, "delta_low": low, "delta_high": high}
        return {
            "seed": seed,
            "models": {HYBRID: {"ndcg@10": 0.2}, "b": {"ndcg@10": 0.1}},
            "leads": {"b": lead},
        }

    summary = summarise([fold(1, 0.01, 0.03), fold(2, -0.03, -0.01), fold(3, -0.01, 0.02)], 10)
    assert summary["leads"]["b"]["sure"] == 2 and summary["seeds"] == [1, 2, 3]
    assert summary["metrics"]["b"]["ndcg@10"] == pytest.approx(
        {"mean": 0.1, "std": 0.0, "min": 0.1, "max": 0.1}
    )
