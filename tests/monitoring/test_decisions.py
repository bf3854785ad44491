"""Monitoring decisions: thresholds, enough evidence, and the reasons given."""

from __future__ import annotations

from recsys.config import MonitoringParams
from recsys.monitoring.decisions import decide

PARAMS = MonitoringParams(drift_share_threshold=0.5, min_events=50)


def test_decide_needs_enough_events_and_reports_its_reasons() -> None:
    assert decide(0.2, 2.5, 100, PARAMS).bias and decide(0.2, 2.5, 100, PARAMS).triggered
    few = decide(0.9, None, 10, PARAMS)
    assert few.drift and not few.triggered and any("min_events" in r for r in few.reasons)
    assert not decide(None, float("nan"), 100, PARAMS).triggered


def test_decide_reads_a_served_lift_against_the_number_of_served_lists() -> None:
    served = decide(None, 2.5, n_events=0, params=PARAMS, n_lists=80)
    assert served.bias and served.triggered and not served.enough_events
    few = decide(None, 2.5, n_events=500, params=PARAMS, n_lists=10)
    assert few.bias and not few.triggered and any("served lists" in r for r in few.reasons)
    assert not decide(0.9, 2.5, n_events=10, params=PARAMS, n_lists=10).triggered
    assert decide(0.9, None, n_events=100, params=PARAMS, n_lists=10).triggered
