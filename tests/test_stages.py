"""The stage entry points of recsys/stages.py on a tiny synthetic raw folder.

Each reads what the stage before it wrote and writes the files dvc.yaml declares; the run on the real
data is tests/test_pipeline_quality.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from recsys import stages
from recsys.config import Params
from recsys.errors import RecsysError
from recsys.offline.features import load_item_features, save_item_features
from recsys.specs import HYBRID, MODEL_NAMES, RANKER
from tests.helpers import TINY_OVERRIDES, write_synthetic_raw


def tiny_params() -> Params:
    """The default params with :data:`TINY_OVERRIDES` (dotted keys) applied."""
    settings: dict[str, Any] = Params().model_dump()
    for key, value in TINY_OVERRIDES.items():
        *parents, leaf = key.split(".")
        node = settings
        for part in parents:
            node = node[part]
        node[leaf] = value
    return Params.model_validate(settings)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every stage after ingest, in dvc.yaml's order, into one folder; their return values by stage."""
    root = tmp_path_factory.mktemp("stages")
    raw = write_synthetic_raw(root / "raw")
    params = tiny_params()
    out: dict[str, Any] = {"root": root, "params": params}
    out["prepare"] = stages.prepare(params, raw, root / "prepared")
    out["eda"] = stages.eda(root / "prepared", root / "eda")
    out["features"] = stages.features(params, root / "prepared", root / "features")
    out["split"] = stages.split(params, root / "prepared", root / "split")
    out["train"] = stages.train(params, root / "features", root / "split", root / "models")
    out["evaluate"] = stages.evaluate(
        params, root / "features", root / "split", root / "models", root / "metrics", root / "plots"
    )
    out["bias"] = stages.bias(
        params,
        root / "features",
        root / "split",
        root / "models",
        root / "metrics",
        root / "plots",
    )
    return out


def test_prepare_and_features_write_the_contract_tables(run: dict[str, Any]) -> None:
    root = run["root"]
    assert {p.name for p in (root / "prepared").iterdir()} >= {
        "interactions.parquet",
        "items.parquet",
        "item_tags.parquet",
        "quality.json",
    }
    assert run["prepare"]["tables"]  # quality.json's content is returned
    assert json.loads((root / "features" / "summary.json").read_text(encoding="utf-8")) == run["features"]
    assert (root / "eda" / "eda.html").exists() and run["eda"]


def test_train_saves_every_model_fitted_with_the_settings_of_params(run: dict[str, Any]) -> None:
    models = run["root"] / "models"
    assert {f"{name}.npz" for name in MODEL_NAMES} <= {p.name for p in models.iterdir()}
    assert not (models / "trials.csv").exists()  # the search is its own command (recsys tune)
    assert run["train"]["lightfm"] == run["params"].train.lightfm.model_dump()
    saved = json.loads((models / "train_summary.json").read_text(encoding="utf-8"))
    # The fit times are printed, not saved: the DVC output holds only what the inputs decide.
    assert set(run["train"]["fit_seconds"]) == set(MODEL_NAMES)
    assert saved == {key: value for key, value in run["train"].items() if key != "fit_seconds"}


def test_tune_writes_the_trials_and_the_winners_as_settings(run: dict[str, Any]) -> None:
    root, params = run["root"], run["params"]
    result = stages.tune(params, root / "features", root / "split", root / "search")
    trials = pd.read_csv(result["trials_file"])
    assert len(trials) == params.train.search.n_trials + 1  # the hybrid's configurations, then the CF
    assert list(trials["model"]) == ["lightfm_hybrid"] * params.train.search.n_trials + ["lightfm_cf"]
    tuned = yaml.safe_load(Path(result["tuned_file"]).read_text(encoding="utf-8"))
    assert tuned == result["tuned"]
    assert tuned["train.lightfm.epochs"] == result["best_trial"]["best_epoch"]
    assert {"train.lightfm.no_components", "train.lightfm_cf.epochs"} <= set(tuned)


def test_evaluate_and_bias_write_metrics_and_plot_tables(run: dict[str, Any]) -> None:
    root = run["root"]
    report = json.loads((root / "metrics" / "offline.json").read_text(encoding="utf-8"))
    assert set(report["models"]) == set(MODEL_NAMES) == set(report["cold_start"])
    summary = json.loads((root / "metrics" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == set(MODEL_NAMES)
    # The hybrid's lead over every other model, paired per listener, with an interval around it.
    uncertainty = report["uncertainty"]
    assert uncertainty["reference"] == HYBRID and set(uncertainty["leads"]) == set(MODEL_NAMES) - {HYBRID}
    for name, lead in uncertainty["leads"].items():
        ours, theirs = report["models"][HYBRID]["ndcg@10"], report["models"][name]["ndcg@10"]
        assert (
            lead["delta"] == pytest.approx(ours - theirs)
            and lead["n_users"] == report["models"][name]["n_users"]
        )
        assert lead["delta_low"] <= lead["delta"] <= lead["delta_high"]
    assert (root / "plots" / "ndcg_by_k.csv").exists() and (root / "plots" / "bias_tradeoff.csv").exists()
    bias = json.loads((root / "metrics" / "bias.json").read_text(encoding="utf-8"))
    assert bias == run["bias"] and bias["chosen"]["strength"] in {
        row["strength"] for row in bias["strengths"]
    }


def test_the_bias_stage_measures_the_runs_challenger(run: dict[str, Any], tmp_path: Path) -> None:
    root, params = run["root"], run["params"]
    as_ranker = params.model_copy(update={"gate": params.gate.model_copy(update={"challenger": RANKER})})
    report = stages.bias(
        as_ranker, root / "features", root / "split", root / "models", tmp_path / "m", tmp_path / "p"
    )
    offline = json.loads((root / "metrics" / "offline.json").read_text(encoding="utf-8"))
    unmitigated = {row["strength"]: row for row in report["strengths"]}[0.0]
    assert run["bias"]["model"] == HYBRID and report["model"] == RANKER
    # Its curve starts at the ranker's own offline metrics, not the hybrid's: it measured the ranker's lists.
    ours, hybrid = offline["models"][RANKER], offline["models"][HYBRID]
    assert (ours["ndcg@10"], ours["recall@10"]) != pytest.approx((hybrid["ndcg@10"], hybrid["recall@10"]))
    assert unmitigated["ndcg@10"] == pytest.approx(offline["models"][RANKER]["ndcg@10"])
    assert unmitigated["recall@10"] == pytest.approx(offline["models"][RANKER]["recall@10"])
    assert json.loads((tmp_path / "m" / "bias.json").read_text(encoding="utf-8"))["model"] == RANKER


def test_write_trials_adds_the_best_trial_only_when_given(run: dict[str, Any], tmp_path: Path) -> None:
    from recsys.offline.tune import Trial

    trials = [
        Trial(0, {"no_components": 4}, 0.1, 3, 1.0, 0.3),
        Trial(1, {"no_components": 8}, 0.2, 2, 1.0, 0.5),
    ]
    assert set(stages.write_trials(tmp_path / "a", trials)) == {"trials_file"}
    paths = stages.write_trials(tmp_path / "b", trials, trials[1])
    assert json.loads(Path(paths["best_file"]).read_text(encoding="utf-8"))["number"] == 1
    assert pd.read_csv(paths["trials_file"])["score"].tolist() == [0.1, 0.2]


def test_training_inputs_refuse_features_and_split_of_different_catalogues(
    run: dict[str, Any], tmp_path: Path
) -> None:
    features = load_item_features(run["root"] / "features")
    shuffled = dataclasses.replace(features, item_ids=list(reversed(features.item_ids)))
    save_item_features(shuffled, tmp_path / "features")
    with pytest.raises(RecsysError, match="disagree on the item order"):
        stages.training_inputs(tmp_path / "features", run["root"] / "split")


def test_recsys_tune_apply_writes_the_winners_into_params_yaml(run: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recsys.cli.main import app
    from recsys.config import load_params

    root, params_file = run["root"], tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(run["params"].model_dump(mode="json")), encoding="utf-8")
    arguments = ["tune", "--params", str(params_file), "--features", str(root / "features")]
    arguments += ["--split", str(root / "split"), "--out", str(tmp_path / "tuning"), "--apply"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    tuned = yaml.safe_load((tmp_path / "tuning" / "tuned_params.yaml").read_text(encoding="utf-8"))
    after = load_params(params_file)
    assert after.train.lightfm.epochs == tuned["train.lightfm.epochs"]
    assert after.train.lightfm_cf.epochs == tuned["train.lightfm_cf.epochs"]
