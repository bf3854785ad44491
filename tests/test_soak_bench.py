"""The soak benchmark's pure parts: percentiles, step figures and verdicts, capacity search, targets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import soak as soak_bench
from benchmarks.soak import (
    busiest_others,
    cpu_speed_probe,
    cpu_split,
    next_rate,
    percentile_ms,
    pinned,
    search_capacity,
    service_env,
    split_cpus,
    step_problems,
    summarize,
    verdict,
)

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


def test_percentile_ms_converts_seconds_and_is_nan_when_empty() -> None:
    assert percentile_ms([0.001, 0.002, 0.003], 50) == 2.0
    assert percentile_ms(np.array([0.010] * 99 + [1.0]), 100) == 1000.0
    assert np.isnan(percentile_ms([], 99))


def test_summarize_splits_halves_and_windows_by_due_time_and_counts_unanswered() -> None:
    rate = 2.0  # 5 s windows of 10 requests each
    latency = np.array([0.001] * 10 + [0.100] * 9 + [np.nan])
    lag = np.zeros(20)
    figures = summarize(latency, lag, Counter({"200": 18, "503": 1}), rate, elapsed=10.0)
    assert figures["requests"] == 20
    assert figures["errors"] == 2  # one 503, one never answered
    assert figures["outcomes"]["unanswered"] == 1
    assert figures["achieved_rps"] == 1.9
    assert figures["p50_first_half_ms"] == pytest.approx(1.0)
    assert figures["p50_second_half_ms"] == pytest.approx(100.0)
    assert figures["p99_by_window_ms"] == [pytest.approx(1.0), pytest.approx(100.0)]


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


def test_verdict_checks_each_target() -> None:
    good = verdict({"errors": 0, "p99_ms": 7.9}, unloaded_p99_ms=4.0, rss_growth=0.02)
    assert good["meets_targets"]
    assert good["p99_ratio"] == 1.98
    bad = verdict({"errors": 1, "p99_ms": 8.1}, unloaded_p99_ms=4.0, rss_growth=0.10)
    assert bad["checks"] == {
        "zero_errors": False,
        "p99_within_2x_unloaded": False,
        "rss_growth_below_10pct": False,
    }
    assert not bad["meets_targets"]


def test_busiest_others_leaves_out_our_processes_and_idle_ones() -> None:
    before = {1: ("sim", 10.0), 2: ("service", 5.0), 3: ("idle", 1.0)}
    after = {1: ("sim", 40.0), 2: ("service", 50.0), 3: ("idle", 1.0), 4: ("new", 2.0)}
    assert busiest_others(before, after, ours={2}) == [
        {"process": "sim", "cpu_s": 30.0},
        {"process": "new", "cpu_s": 2.0},
    ]


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs, 40 ms a request

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"items": []}' if self.path == "/recommend" else b"no"
        self.send_response(200 if self.path == "/recommend" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _AnswerOnce(_Answer):
    protocol_version = "HTTP/1.0"  # closes the connection after each answer


@pytest.mark.parametrize("handler", [_Answer, _AnswerOnce], ids=["keep-alive", "closing"])
def test_the_pacer_answers_every_request_and_reconnects_when_closed(
    handler: type[BaseHTTPRequestHandler],
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        figures = asyncio.run(
            soak_bench._pace(url, [b'{"user_id": "1"}'], rate=200.0, seconds=0.5, connections=2)
        )
    finally:
        server.shutdown()
        server.server_close()
    assert figures["requests"] == 100
    assert figures["outcomes"] == {"200": 100}
    assert figures["errors"] == 0


def test_cpu_split_attributes_the_rest_of_the_machine_to_others() -> None:
    cores = cpu_split((100.0, 10.0, 1.0), (118.0, 25.0, 2.0), seconds=10.0)
    assert cores == {"machine": 1.8, "service": 1.5, "pacer": 0.1, "others": 0.2}
    assert cpu_split((0.0, 0.0, 0.0), (1.0, 1.0, 0.5), seconds=1.0)["others"] == 0.0


def test_the_cpu_speed_probe_reports_per_second_medians_against_the_fastest_second() -> None:
    probe = cpu_speed_probe(2.5)
    low, middle, high = probe["per_second_median_ms_q10_q50_q90"]
    assert 0 < low <= middle <= high
    assert probe["work_ms_median"] > 0
    assert probe["slowest_second_x_fastest"] >= 1.0
    assert 0.0 <= probe["share_of_seconds_1_3x_slower"] <= 1.0


@pytest.mark.parametrize(
    ("available", "expected"),
    [({0, 1}, ({0}, {1})), ({3, 5, 7}, ({3}, {5, 7})), ({2}, None), (set(), None)],
)
def test_split_cpus_gives_the_load_generators_one_cpu_and_the_service_the_rest(
    available: set[int], expected: tuple[set[int], set[int]] | None
) -> None:
    assert split_cpus(available) == expected


def test_a_process_started_while_pinned_keeps_the_cpus_and_this_process_gets_its_own_back() -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)
    with pinned({cpu}):
        assert os.sched_getaffinity(0) == {cpu}
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert child.stdout.strip() == str([cpu])
    assert os.sched_getaffinity(0) == before


def test_the_service_gets_one_worker_per_cpu_after_any_configured_overrides(tmp_path: Path) -> None:
    base = {"BENTOML_CONFIG_OPTIONS": "services.Recommender.traffic.timeout=5", "PATH": "/bin"}
    env = service_env(base, tmp_path / "home", tmp_path, workers=3)
    assert env["BENTOML_CONFIG_OPTIONS"].split() == [
        "services.Recommender.traffic.timeout=5",
        "services.Recommender.workers=3",
    ]
    assert env["BENTOML_HOME"] == str(tmp_path / "home") and env["PATH"] == "/bin"
    assert env["RECSYS_FEEDBACK_URL"] == f"sqlite:///{tmp_path / 'feedback.db'}"
    assert "BENTOML_CONFIG_OPTIONS" not in service_env({}, tmp_path, tmp_path, workers=None)
