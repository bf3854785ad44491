"""The open-loop capacity search: the highest rate the service sustains, found by bisecting paced steps.

A step holds when it is answered in full without errors, the pacer kept up, and its latency neither blew up
nor grew over the step (:func:`step_problems`); the rate found must hold again in a longer confirmation
step, or the search goes on below it (:func:`search_capacity`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

STEP_SECONDS = 10.0
CONFIRM_SECONDS = 20.0
"""The rate the capacity search settles on must hold again for this long (see :func:`search_capacity`)."""
KEEP_UP_SHARE = 0.99
"""A step holds only if the answered rate is at least this share of the offered rate."""
STEP_P99_BOUND = 10.0
"""A step holds only if its p99 is at most this many times the unloaded p99 ..."""
STEP_GROWTH_BOUND = 2.0
"""... and the median of its second half at most this many times that of its first (no queue building)."""
RESOLUTION = 0.05
"""The capacity search stops when the bracket between a held and a failed rate is this narrow (relative)."""


def step_problems(step: dict[str, Any], unloaded: dict[str, Any]) -> list[str]:
    """Why a paced step does not count as sustained (empty: it holds).

    It must be answered in full without errors at >= :data:`KEEP_UP_SHARE` of the offered rate, its p99
    must stay within :data:`STEP_P99_BOUND` x the unloaded p99, and the median of its second half within
    :data:`STEP_GROWTH_BOUND` x that of its first half (or the unloaded median, if larger). A queue that
    builds through the step moves the whole distribution up, the median with it (with linear growth the
    second half's median is 3 x the first's); a stall from another process on the machine moves only the
    tail, so the p99 of the halves would flag noise as overload.
    """
    problems = []
    if step["errors"]:
        problems.append(f"{step['errors']} errors")
    if step["achieved_rps"] < KEEP_UP_SHARE * step["target_rps"]:
        problems.append(f"answered {step['achieved_rps']:g} of {step['target_rps']:g} req/s")
    bound = STEP_P99_BOUND * unloaded["p99_ms"]
    if not step["p99_ms"] <= bound:
        problems.append(
            f"p99 {step['p99_ms']:g} ms > {STEP_P99_BOUND:g} x unloaded {unloaded['p99_ms']:g} ms"
        )
    first = max(step["p50_first_half_ms"], unloaded["p50_ms"])
    if not step["p50_second_half_ms"] <= STEP_GROWTH_BOUND * first:
        problems.append(
            f"median grew from {step['p50_first_half_ms']:g} to {step['p50_second_half_ms']:g} ms"
        )
    return problems


def next_rate(held: float, failed: float | None, resolution: float) -> float | None:
    """The next rate to try given the highest held and lowest failed rates (None: the search is done).

    Doubles until a step fails, then bisects until the bracket is narrower than ``resolution`` x the
    failed rate.
    """
    if failed is None:
        return 2 * held
    if failed - held <= resolution * failed:
        return None
    return (held + failed) / 2


def search_capacity(
    run_step: Callable[[float], dict[str, Any]],
    start: float,
    resolution: float,
    max_steps: int,
    confirm: Callable[[float], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The highest rate ``run_step`` sustains, searched from ``start`` (see :func:`next_rate`).

    ``run_step(rate)`` runs one paced step and returns its figures with a ``problems`` list (empty: the
    step held). With ``confirm``, the rate the search settles on must hold once more in a longer step
    (``confirm(rate)``, marked ``"confirmation": True``): a short step can hold by luck at a rate the
    service does not sustain (measured: a 5 s step held at 2,694 req/s between failures at 2,566 and
    2,823, and the soak at 80 % of it failed). A refuted rate counts as failed and the search goes on
    below it. Stops after ``max_steps`` steps at the latest (confirmations included); the capacity is
    then the highest unrefuted held rate so far (0 when none held).
    """
    steps: list[dict[str, Any]] = []
    held_rates: list[float] = []
    confirmed: set[float] = set()
    failed: float | None = None

    def best_held() -> float:
        return max((r for r in held_rates if failed is None or r < failed), default=0.0)

    rate: float | None = start
    while len(steps) < max_steps:
        if rate is None:  # the search has settled on best_held()
            held = best_held()
            if confirm is None or held == 0.0 or held in confirmed:
                break
            check = confirm(held) | {"confirmation": True}
            steps.append(check)
            if check["problems"]:
                failed = held
            else:
                confirmed.add(held)
        else:
            step = run_step(rate)
            steps.append(step)
            if step["problems"]:
                failed = rate if failed is None else min(failed, rate)
            else:
                held_rates.append(rate)
        rate = next_rate(best_held(), failed, resolution)
    held = best_held()
    settled = rate is None and (confirm is None or held == 0.0 or held in confirmed)
    return {"capacity_rps": round(held, 1), "failed_rps": failed, "converged": settled, "steps": steps}
