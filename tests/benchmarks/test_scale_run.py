"""The whole-run step of the scale benchmark: the command it runs and what the results keep of it."""

from __future__ import annotations

from benchmarks.scale import growth, table, times_of
from benchmarks.scale_run import TARGET_SECONDS, run_command, whole_run_result
from tests.benchmarks.test_scale import steps

SUMMARY = {
    "seconds": 2214.5,
    "stage_seconds": {"ingest": 9.4, "train": 976.0, "evaluate": 503.5, "bias": 665.3},
    "decision": {"promote": True, "reasons": ["first model"]},
    "metrics": [
        {"model": "als", "ndcg@10": 0.07},
        {"model": "lightfm_hybrid", "ndcg@10": 0.0934, "auc": 0.91, "cold_start_auc": 0.85, "map@10": 0.04},
    ],
}


def test_the_step_runs_recsys_run_with_the_preset_on_the_size_s_generated_data() -> None:
    command = run_command("S50")
    assert command[:2] == ["recsys", "run"]
    assert " ".join(command[2:]) == (
        "--preset large-catalogue -S dataset.name=synthetic -S dataset.synthetic.size=S50"
    )


def test_the_results_keep_the_stages_the_hybrid_and_the_verdict_against_the_hour() -> None:
    result = whole_run_result(SUMMARY, 2222.0, 14_000.0)
    assert result["met"] and result["target_seconds"] == TARGET_SECONDS == 3600.0
    assert result["stage_seconds"]["bias"] == 665.3 and result["flow_seconds"] == 2214.5
    assert result["hybrid"] == {"ndcg@10": 0.0934, "auc": 0.91, "cold_start_auc": 0.85}
    assert not whole_run_result(SUMMARY, 4667.0, 14_000.0)["met"]  # the first run's 77.8 min
    without_hybrid = SUMMARY | {"metrics": [{"model": "als", "ndcg@10": 0.07}]}
    assert whole_run_result(without_hybrid, 1.0, 1.0)["hybrid"] == dict.fromkeys(
        ("ndcg@10", "auc", "cold_start_auc")
    )


def test_the_whole_run_is_a_row_of_the_scale_table() -> None:
    with_run = steps(2.0) | {"run": whole_run_result(SUMMARY, 2222.0, 14_000.0)}
    assert times_of(with_run)["whole recsys run (preset large-catalogue)"] == 2222.0
    assert "whole recsys run" not in " ".join(times_of(steps(2.0)))
    results = {"S50": {"listens": 4_600_000, "steps": with_run, "times": times_of(with_run)}}
    payload = {"machine": {"cpus": 2}, "epochs_run": 2, "eval_users": 5000, "sizes": results}
    text = table(payload | {"growth": growth(results)})
    assert "| whole recsys run (preset large-catalogue) | 2,222.0 (largest process 14,000) | - |" in text
