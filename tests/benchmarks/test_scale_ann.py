"""The approximate top-k measurement: the re-ranking folded into the vectors ranks as the service does, the
verdict applies the issue's rule, the table shows it, and the step runs for real on a tiny catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.scale import _ann_rows, run_step
from benchmarks.scale_ann import _folded, verdict
from recsys.offline.popularity import rerank_popularity
from tests.benchmarks.test_scale import generated_size


@pytest.mark.parametrize("strength", [0.0, 0.1, 0.7])
def test_the_folded_inner_product_ranks_like_the_served_re_ranking(strength: float) -> None:
    rng = np.random.default_rng(1)
    users = rng.normal(size=(20, 6)).astype(np.float32)
    items = rng.normal(size=(300, 6)).astype(np.float32)
    popularity = rng.zipf(1.6, size=300).astype(np.float64)
    rows, query = _folded(users, items, popularity, strength)
    assert rows.shape == (300, 6 if strength == 0 else 7) and rows.dtype == np.float32
    for user in range(20):
        served = rerank_popularity(users[user] @ items.T, popularity, strength)
        folded = rows.astype(np.float64) @ query(user).astype(np.float64)
        # The same order: the folded score is a positive affine map of the served one (up to float32).
        slope, intercept = np.polyfit(folded, served, 1)
        assert slope > 0
        assert np.allclose(slope * folded + intercept, served, atol=1e-4)
        assert np.array_equal(np.argsort(-served)[:10], np.argsort(-folded)[:10])


def measured(recall: float, p99: float) -> dict[str, float]:
    return {
        "recall@10": recall,
        "min_recall@10": recall - 0.1,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "build_seconds": 30.0,
    }


def test_the_verdict_needs_both_recall_and_latency() -> None:
    result: dict[str, Any] = {
        "exact": {"p50_ms": 5.0, "p99_ms": 8.0},
        "hnsw": {
            "ip, 256": measured(0.90, 1.0),
            "l2, 256": measured(0.96, 9.0),
            "l2, 512": measured(0.99, 7.5),
        },
    }
    assert verdict(result).startswith("enable: l2, 512")
    result["hnsw"]["l2, 512"] = measured(0.99, 8.5)
    assert verdict(result).startswith("keep exact") and "0.990: l2, 512" in verdict(result)
    result["verdict"] = verdict(result)
    rows = _ann_rows({"sizes": {"S50": {"steps": {"ann": {"0.1": result}}}}})
    assert "| S50 | 0.1 | exact | 1.000 | 5.00 / 8.00 | keep exact" in "\n".join(rows)
    assert any(row.startswith("| S50 | 0.1 | HNSW l2, 256 (build 30 s) | 0.960") for row in rows)
    assert _ann_rows({"sizes": {"S1": {"steps": {}}}}) == []


@pytest.mark.slow
def test_the_step_measures_a_real_index_on_a_generated_catalogue(tmp_path: Path) -> None:
    """A tiny generated size: every item fits the search width, so HNSW finds the exact lists, with the
    re-ranking folded in."""
    generated_size(tmp_path, users=150, items=120, pairs=3000)
    assert "error" not in run_step("fit", tmp_path, model="lightfm_hybrid", epochs=2)
    result = run_step("ann", tmp_path, strength=0.1, listeners=60)
    assert "error" not in result, result
    assert result["items"] == 120 and result["listeners"] == 60 and result["exact"]["p99_ms"] > 0
    assert len(result["hnsw"]) == 6  # two kinds of index x three widths
    for width in result["hnsw"].values():
        assert width["recall@10"] >= 0.98 and width["p99_ms"] > 0
    assert result["verdict"].startswith(("enable", "keep exact"))
