"""CPU accounting, the CPU speed probe and pinning of the load generators and the service."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.cpus import busiest_others, cpu_speed_probe, cpu_split, pinned, split_cpus


def test_busiest_others_leaves_out_our_processes_and_idle_ones() -> None:
    before = {1: ("sim", 10.0), 2: ("service", 5.0), 3: ("idle", 1.0)}
    after = {1: ("sim", 40.0), 2: ("service", 50.0), 3: ("idle", 1.0), 4: ("new", 2.0)}
    assert busiest_others(before, after, ours={2}) == [
        {"process": "sim", "cpu_s": 30.0},
        {"process": "new", "cpu_s": 2.0},
    ]


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
