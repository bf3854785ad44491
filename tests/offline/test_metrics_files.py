"""Evaluation results shaped into metrics/offline.json, the headline table and the DVC plot tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.config import Params
from recsys.errors import RecsysError
from recsys.offline.evaluation import EvaluationResult
from recsys.offline.metrics_files import headline, metrics_plots, metrics_rows, offline_report, read_report


def result(ndcg: float) -> EvaluationResult:
    metrics = {
        f"{m}@{k}": ndcg / k
        for m in ("precision", "recall", "ndcg", "map", "coverage", "arp")
        for k in (5, 10, 20)
    }
    metrics |= {"auc": 0.5 + ndcg, "n_users": 7}
    groups = {g: dict(metrics) for g in ("niche", "medium", "mainstream")}
    return EvaluationResult(metrics=metrics, groups=groups)


@pytest.fixture
def report() -> dict:
    params = Params()
    results = {"lightfm_hybrid": result(0.3), "most_popular": result(0.1)}
    cold = {"lightfm_hybrid": result(0.05)}
    return offline_report(results, cold, params, {"n_users": 7})


def test_the_report_records_the_protocol_and_every_model(report: dict) -> None:
    assert set(report) == {"protocol", "models", "cold_start", "groups"}
    assert report["protocol"]["seed"] == Params().seed and report["protocol"]["sizes"] == {"n_users": 7}
    assert report["models"]["lightfm_hybrid"]["ndcg@10"] == pytest.approx(0.03)
    assert set(report["groups"]["most_popular"]) == {"niche", "medium", "mainstream"}
    json.dumps(report)  # JSON-ready as written to metrics/offline.json


def test_headline_rounds_and_adds_the_cold_start_auc_where_measured(report: dict) -> None:
    table = headline(report, 10)
    assert table["lightfm_hybrid"]["ndcg@10"] == 0.03 and table["lightfm_hybrid"]["cold_start_auc"] == 0.55
    assert "cold_start_auc" not in table["most_popular"]
    assert metrics_rows(report, 10)[0] == {"model": "lightfm_hybrid"} | table["lightfm_hybrid"]


def test_plot_tables_have_a_row_per_k_and_per_model_and_group(report: dict) -> None:
    tables = metrics_plots(report, Params().evaluate)
    assert set(tables) == {f"{m}_by_k.csv" for m in ("precision", "recall", "ndcg", "map", "coverage")} | {
        "metrics_by_group.csv"
    }
    ndcg = tables["ndcg_by_k.csv"]
    assert ndcg["k"].tolist() == list(Params().evaluate.ks)
    assert list(ndcg.columns) == ["k", "lightfm_hybrid", "most_popular"]
    assert len(tables["metrics_by_group.csv"]) == 2 * 3


def test_read_report_reads_the_file_back_or_names_the_missing_stage(tmp_path: Path, report: dict) -> None:
    with pytest.raises(RecsysError, match="evaluate stage"):
        read_report(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "offline.json").write_text(json.dumps(report), encoding="utf-8")
    assert read_report(tmp_path) == json.loads(json.dumps(report))
