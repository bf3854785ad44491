"""The abuse benchmark's own parts: the verdict of its rounds and the store it fills."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import abuse


def _run(p99: float, errors: int = 0) -> dict[str, Any]:
    return {"p99_ms": p99, "errors": errors}


def _abusers(search: float, erase: float) -> dict[str, Any]:
    return {"search": {"rps": search}, "erase": {"rps": erase}}


def test_the_verdict_is_the_median_ratio_of_paired_rounds_against_2x() -> None:
    figures = {
        "runs": {"quiet": [_run(2.0), _run(2.5), _run(5.0)], "abused": [_run(3.0), _run(6.0), _run(4.0)]},
        "abusers": [_abusers(90, 97), _abusers(91, 96), _abusers(92, 98)],
    }

    summary = abuse.summarise(figures, rate=100.0, seconds=15.0)

    assert summary["ratio"] == {"median": 1.5, "min": 0.8, "max": 2.4}
    assert summary["p99_abused_ms"]["median"] == 4.0 and summary["met"]
    assert "| abused / quiet | 1.5 | 0.8 | 2.4 |" in abuse.table(summary, figures)
    figures["runs"]["abused"] = [_run(5.0), _run(6.0), _run(11.0, errors=2)]
    failed = abuse.summarise(figures, rate=100.0, seconds=15.0)
    assert not failed["met"] and failed["recommend_errors"] == 2


@pytest.mark.slow
def test_the_store_holds_the_dislikes_an_erasure_used_to_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(abuse, "DISLIKERS", 4_000)
    assert abuse.fill_dislikes(f"sqlite:///{tmp_path / 'f.db'}") == 4_000 * abuse.DISLIKES_EACH
