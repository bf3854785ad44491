"""The scale benchmark's bookkeeping: growth exponents, the doc table and its section, and one real step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.scale import growth, replace_section, run_step, table, times_of

SECTION = "## Scale: generated data at S1, S10 and S50"


def steps(seconds: float, service_error: bool = False) -> dict[str, object]:
    """A size's step results with every step taking ``seconds`` (fits and evaluations extrapolated)."""
    timed = {"seconds": seconds, "peak_rss_mb": 100.0}
    serving = {"p50": 1.0, "p99": 2.0}
    service = (
        {"error": "RuntimeError: no port"}
        if service_error
        else {
            "start_seconds": seconds,
            "reload_seconds": seconds,
            "requests": 10,
            "failed": 0,
            "steady_ms": serving,
            "worker_rss_mb": {"start": [1.0, 1.0], "after_reload": [2.0, 3.0]},
        }
    )
    return {
        "generate": dict(timed),
        "prepare": dict(timed),
        "features": dict(timed),
        "split": dict(timed),
        "fit": {
            "als": {"full_fit_seconds": seconds, "peak_rss_mb": 50.0},
            "ease": {"error": "MemoryBoundError"},
        },
        "evaluate": {"als": {"full_seconds": 2 * seconds, "peak_rss_mb": 60.0}},
        "sharded": {"1": {"warm_flow_seconds": seconds, "peak_rss_mb": 70.0}},
        "serve": {
            "start_seconds": seconds,
            "items": 100,
            "first_request_ms": serving,
            "cached_request_ms": serving,
            "numpy_floor_ms": serving,
            "peak_rss_mb": 80.0,
        },
        "service": service,
    }


def generated_size(root: Path, users: int, items: int, pairs: int) -> Path:
    """``root`` as a tiny generated size: params for the synthetic source, then the upstream steps, each in
    its own process as the benchmark runs them."""
    from flows.dvc import apply_overrides
    from tests.helpers import PROJECT_ROOT

    (root / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    shape = {"users": users, "items": items, "pairs": pairs}
    apply_overrides(root / "params.yaml", {"dataset.name": "synthetic", "dataset.synthetic": shape})
    for name in ("generate", "prepare", "features", "split"):
        assert "error" not in run_step(name, root)
    return root


def test_growth_is_the_exponent_over_listens_and_refused_steps_are_left_out() -> None:
    results = {
        "S1": {"listens": 1_000, "steps": steps(2.0), "times": times_of(steps(2.0))},
        "S10": {"listens": 10_000, "steps": steps(200.0, True), "times": times_of(steps(200.0, True))},
    }
    exponents = growth(results)
    assert exponents["fit als"]["S1->S10"] == pytest.approx(2.0)  # 100x the time for 10x the listens
    assert math.isclose(exponents["evaluate als"]["S1->S10"], 2.0)
    assert "fit ease" not in results["S1"]["times"]  # a refused fit has no time
    assert "champion reload" in results["S1"]["times"] and "champion reload" not in results["S10"]["times"]


def test_the_table_names_every_step_and_a_rerun_replaces_only_its_section() -> None:
    results = {"S1": {"listens": 1_000, "steps": steps(2.0), "times": times_of(steps(2.0))}}
    payload = {
        "machine": {"cpus": 2},
        "epochs_run": 2,
        "eval_users": 5000,
        "sizes": results,
        "growth": growth(results),
    }
    text = table(payload)
    assert text.startswith(SECTION)
    for row in (
        "| fit als | 2.0 (50) |",
        "| evaluate als | 4.0 (60) |",
        "| champion reload | 2.0 (workers 2/3) |",
    ):
        assert row in text
    assert "| S1 | 100 | 1.00 / 2.00 |" in text and "| 10 (0) | 2/3 |" in text
    doc = f"# Benchmarks\n\n## Before\nkept\n\n{SECTION}\nold numbers\n\n## After\nkept too\n"
    replaced = replace_section(doc, SECTION, text)
    assert "old numbers" not in replaced and "kept\n" in replaced and "## After\nkept too" in replaced
    assert replace_section("# Benchmarks\n", SECTION, text).endswith(text)


def test_a_step_runs_in_its_own_process_and_a_refusal_is_a_result(tmp_path: Path) -> None:
    """The generate step, for real, at a tiny size; then a step that fails reports its error."""
    from flows.dvc import apply_overrides
    from tests.helpers import PROJECT_ROOT

    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    apply_overrides(
        tmp_path / "params.yaml",
        {"dataset.name": "synthetic", "dataset.synthetic": {"users": 50, "items": 60, "pairs": 500}},
    )
    generated = run_step("generate", tmp_path)
    assert generated["shape"]["users"] == 50 and generated["peak_rss_mb"] > 0 and generated["seconds"] > 0
    assert (tmp_path / "raw" / "synthetic" / "interactions.parquet").is_file()
    failed = run_step("split", tmp_path)  # nothing prepared yet
    assert "error" in failed and "prepared" in failed["error"]


@pytest.mark.slow
def test_the_retrain_step_runs_the_real_retraining_flow_on_a_generated_project(tmp_path: Path) -> None:
    """Generate, prepare, featurise, split, fit the preset's hybrid, retrain it on generated feedback, and run
    the whole train stage with the preset."""
    from benchmarks.scale import preset_settings

    generated_size(tmp_path, users=120, items=90, pairs=2400)
    settings, lightfm, _ = preset_settings()
    fitted = run_step("fit", tmp_path, model="lightfm_hybrid", epochs=2, overrides=lightfm, models="kept")
    assert fitted["epochs_run"] == 2 and (tmp_path / "kept" / "lightfm_hybrid.npz").is_file()
    result = run_step("retrain", tmp_path, events=600, overrides=settings, models="kept")
    assert "error" not in result, result
    assert result["exported"] == 600 and result["warm_start"] is True
    assert result["status"] in ("promoted", "kept the champion")
    assert result["merge"]["n_events"] > 0 and result["flow_seconds"] > 0
    kept = (tmp_path / "retrain" / "params.yaml").read_text(encoding="utf-8")
    assert f"no_components: {lightfm['no_components']}" in kept  # the preset reached the project
    stage = run_step("train", tmp_path, overrides=settings)
    assert "error" not in stage, stage
    assert len(stage["fit_seconds"]) == 7 and stage["lightfm"]["no_components"] == lightfm["no_components"]
    assert (tmp_path / "models_stage" / "lightfm_hybrid.npz").is_file()
