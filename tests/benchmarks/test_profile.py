"""The profile and experiment benchmarks' bookkeeping: best scores within budgets, doc tables, old results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import experiments, profile


def _config(name: str, seconds_per_epoch: float, scores: list[float]) -> dict[str, object]:
    curve = [
        {"epoch": 2 * (n + 1), "train_seconds": 2 * (n + 1) * seconds_per_epoch, "ndcg@10": score}
        for n, score in enumerate(scores)
    ]
    return {"name": name, "nonzeros_per_item": 30.0, "seconds_per_epoch": seconds_per_epoch, "curve": curve}


def test_the_best_score_within_a_budget_ignores_later_points_and_the_table_has_every_row() -> None:
    slow, fast = _config("slow", 100.0, [0.05, 0.08, 0.09]), _config("fast", 30.0, [0.06, 0.07, 0.071])
    assert profile.best_within(slow["curve"], 200) == 0.05  # type: ignore[arg-type]
    assert profile.best_within(slow["curve"], 100) is None  # type: ignore[arg-type]
    assert profile.best_within(fast["curve"], 600) == 0.071  # type: ignore[arg-type]
    payload = {
        "args": "--size S10",
        "machine": "x86_64, 2 cores",
        "users": 5000,
        "budgets_minutes": [2, 5],
        "als": {"name": "implicit ALS (configured)", "fit_seconds": 400.0, "ndcg@10": 0.04},
        "configs": [slow, fast],
    }
    text = profile.table({"S10": payload})
    assert text.startswith(profile.SECTION) and "best in 2 min | best in 5 min" in text
    assert "| slow | 30.0 | 100.0 | - | 0.0500 | 0.0900 (6) |" in text  # its first point comes after 2 min
    assert "| implicit ALS (configured) | - | fit 400 s | - | - | 0.0400 |" in text  # fitted after 5 min


def test_results_of_the_first_single_size_format_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "profile.json"
    old.write_text(json.dumps({"size": "S10", "users": 5000, "configs": []}), encoding="utf-8")
    monkeypatch.setattr(profile, "RESULTS", old)
    assert list(profile.saved_sizes()) == ["S10"]
    monkeypatch.setattr(profile, "RESULTS", tmp_path / "missing.json")
    assert profile.saved_sizes() == {}


def test_the_experiments_table_names_sessions_needed_and_never_reached() -> None:
    curve = {
        str(n): {"challenger wins": 1.0, "challenger loses": 0.0, "needs more traffic": 0.0}
        for n in experiments.SESSIONS
    }
    row = {
        "model": "lightfm_hybrid",
        "ndcg@10": 0.25,
        "right_decision": "challenger wins",
        "expected_hit_rate": {"champion": 0.6, "challenger": 0.65},
        "curves": {"ab": curve, "interleaving": curve},
        "sessions_needed": {"ab": {"0.8": None, "0.95": None}, "interleaving": {"0.8": 250, "0.95": 500}},
    }
    payload = {
        "args": "",
        "repeats": 10,
        "listeners": 100,
        "champion": {"model": "als", "ndcg@10": 0.24},
        "challengers": {"better": row},
    }
    text = experiments.table(payload)
    assert "| better (`lightfm_hybrid`) | 0.2500 | 0.600 -> 0.650 | > 32,000 | > 32,000 | 250 | 500 |" in text
    assert "| better | interleaving | 1.00 / 0.00 |" in text
