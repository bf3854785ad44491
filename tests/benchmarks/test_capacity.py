"""The capacity search: when a paced step holds, how the rate moves, and where the search settles."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.capacity import next_rate, search_capacity, step_problems

UNLOADED = {"p50_ms": 2.0, "p99_ms": 4.0}


def step(**overrides: Any) -> dict[str, Any]:
    """Figures of a step that holds against :data:`UNLOADED`; ``overrides`` break it."""
    figures = {
        "target_rps": 1000.0,
        "achieved_rps": 1000.0,
        "errors": 0,
        "p99_ms": 6.0,
        "p50_first_half_ms": 2.5,
        "p50_second_half_ms": 2.5,
    }
    return figures | overrides


def test_a_clean_step_holds() -> None:
    assert step_problems(step(), UNLOADED) == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"errors": 3}, "3 errors"),
        ({"achieved_rps": 980.0}, "answered 980"),
        ({"p99_ms": 41.0}, "10 x unloaded"),
        ({"p50_first_half_ms": 5.0, "p50_second_half_ms": 15.0}, "grew from 5 to 15"),
        ({"p99_ms": float("nan")}, "p99 nan"),
    ],
)
def test_a_step_fails_on_errors_lag_latency_or_a_growing_queue(overrides: dict[str, Any], words: str) -> None:
    problems = step_problems(step(**overrides), UNLOADED)
    assert len(problems) == 1
    assert words in problems[0]


def test_growth_is_judged_against_the_unloaded_median_when_the_first_half_is_faster() -> None:
    # 1 ms -> 3.5 ms is 3.5x the first half but within 2 x the unloaded 2 ms median: noise, not a queue
    assert step_problems(step(p50_first_half_ms=1.0, p50_second_half_ms=3.5), UNLOADED) == []


def test_next_rate_doubles_until_a_failure_then_bisects_until_narrow() -> None:
    assert next_rate(1000.0, None, 0.05) == 2000.0
    assert next_rate(1000.0, 2000.0, 0.05) == 1500.0
    assert next_rate(0.0, 1000.0, 0.05) == 500.0
    assert next_rate(1960.0, 2000.0, 0.05) is None


def test_search_capacity_converges_below_the_true_capacity() -> None:
    true_capacity = 2345.0
    tried: list[float] = []

    def run_step(rate: float) -> dict[str, Any]:
        tried.append(rate)
        return {"target_rps": rate, "problems": [] if rate <= true_capacity else ["too fast"]}

    found = search_capacity(run_step, start=1000.0, resolution=0.05, max_steps=20)
    assert found["converged"]
    assert 0.95 * true_capacity <= found["capacity_rps"] <= true_capacity
    assert found["failed_rps"] > true_capacity
    assert [s["target_rps"] for s in found["steps"]] == tried
    assert tried[:2] == [1000.0, 2000.0]


def test_a_rate_held_by_luck_is_refuted_by_its_confirmation_and_the_search_goes_on_below() -> None:
    """Short steps hold up to 2,000 req/s, but 1,600 or more are not sustained for a long step."""
    sustained = 1600.0
    tried: list[tuple[float, bool]] = []

    def run_step(rate: float) -> dict[str, Any]:
        tried.append((rate, False))
        return {"target_rps": rate, "problems": [] if rate <= 2000.0 else ["too fast"]}

    def confirm(rate: float) -> dict[str, Any]:
        tried.append((rate, True))
        return {"target_rps": rate, "problems": [] if rate < sustained else ["tail in the long step"]}

    found = search_capacity(run_step, start=1000.0, resolution=0.05, max_steps=30, confirm=confirm)
    assert found["converged"]
    assert 0.95 * sustained <= found["capacity_rps"] < sustained
    confirmations = [rate for rate, long in tried if long]
    assert len(confirmations) >= 2 and confirmations[0] > sustained  # the lucky rate was tried and refuted
    assert confirmations[-1] == found["capacity_rps"]  # and the reported one was confirmed
    assert [s.get("confirmation", False) for s in found["steps"]] == [long for _, long in tried]


def test_without_confirmation_the_lucky_rate_would_stand() -> None:
    found = search_capacity(
        lambda rate: {"problems": [] if rate <= 2000.0 else ["too fast"]}, 1000.0, 0.05, max_steps=30
    )
    assert found["capacity_rps"] > 1900.0


def test_search_capacity_stops_after_max_steps_and_reports_zero_when_nothing_held() -> None:
    found = search_capacity(lambda rate: {"problems": ["down"]}, start=800.0, resolution=0.05, max_steps=3)
    assert found == {
        "capacity_rps": 0.0,
        "failed_rps": 200.0,
        "converged": False,
        "steps": [{"problems": ["down"]}] * 3,
    }
