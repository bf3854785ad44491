"""CPUs of the soak: who used how much of them, how steady their speed is, and who runs where.

The load generators and the service are pinned to different CPUs (:func:`split_cpus`, :func:`pinned`),
the nearest one machine comes to a client on another machine; every paced run records the cores the
machine, the service, the pacer and everything else used (:func:`cpu_snapshot`, :func:`cpu_split`), and
:func:`cpu_speed_probe` times fixed work to see how steady the VM's CPU speed is.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

PROBE_SECONDS = 20.0
"""Length of the CPU-speed probe run before the service starts (see :func:`cpu_speed_probe`)."""


def cpu_snapshot(service: int | None) -> tuple[float, float, float]:
    """CPU seconds so far: the machine's busy time, ``service``'s process tree's and this process's."""
    import psutil

    machine = psutil.cpu_times()
    busy = machine.user + machine.nice + machine.system + machine.irq + machine.softirq + machine.steal
    served = 0.0
    if service is not None:
        root = psutil.Process(service)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                served += sum(process.cpu_times()[:2])
    return busy, served, time.process_time()


def cpu_split(
    before: tuple[float, float, float], after: tuple[float, float, float], seconds: float
) -> dict[str, float]:
    """Cores used over ``seconds`` by the machine, the service, the pacer and everything else.

    Everything else is what the machine used beyond the service and the pacer: other people's work,
    including processes too short-lived to be seen in a list of processes.
    """
    machine, service, pacer = ((end - begin) / seconds for begin, end in zip(before, after, strict=True))
    return {
        "machine": round(machine, 2),
        "service": round(service, 2),
        "pacer": round(pacer, 2),
        "others": round(max(0.0, machine - service - pacer), 2),
    }


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Name and CPU seconds so far of every process on the machine."""
    import psutil

    found = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times, cmdline = process.info["cpu_times"], process.info["cmdline"]
        if times is not None:
            name = " ".join(cmdline)[:80] if cmdline else process.info["name"]
            found[process.pid] = (name, times.user + times.system)
    return found


def busiest_others(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int], top: int = 5
) -> list[dict[str, Any]]:
    """The ``top`` processes outside ``ours`` that used the most CPU seconds between two snapshots."""
    used = [
        (cpu - before.get(pid, (name, 0.0))[1], name) for pid, (name, cpu) in after.items() if pid not in ours
    ]
    return [
        {"process": name, "cpu_s": round(cpu, 1)} for cpu, name in sorted(used, reverse=True)[:top] if cpu > 0
    ]


def _fixed_work() -> int:
    total = 0
    for i in range(20_000):  # about 1 ms of pure Python on this machine
        total += i * i
    return total


def cpu_speed_probe(seconds: float = PROBE_SECONDS) -> dict[str, Any]:
    """How steady this machine's CPU speed is: a fixed piece of pure-Python work, timed back to back.

    Run on the idle machine before the service starts. On a VM the host can slow a virtual CPU down
    (other guests, a busy hyper-thread sibling): measured here, the median time of the same work varied
    from one second to the next by up to 2x with nothing else running. A service held at 80 % of its
    capacity is overloaded while that lasts, whatever its own code does. Reports the per-second medians
    (as quantiles and relative to the fastest second) and the share of seconds at least 1.3x slower.
    """
    durations: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        _fixed_work()
        durations.append(time.perf_counter() - begin)
    times = np.array(durations)
    second = np.floor(np.cumsum(times)).astype(int)
    medians = np.array([np.median(times[second == k]) for k in np.unique(second)])
    fastest = float(medians.min())
    return {
        "seconds": seconds,
        "work_ms_median": round(float(np.median(times)) * 1e3, 3),
        "per_second_median_ms_q10_q50_q90": [
            round(float(q) * 1e3, 3) for q in np.quantile(medians, [0.1, 0.5, 0.9])
        ],
        "slowest_second_x_fastest": round(float(medians.max()) / fastest, 2),
        "share_of_seconds_1_3x_slower": round(float((medians >= 1.3 * fastest).mean()), 3),
    }


def split_cpus(available: set[int]) -> tuple[set[int], set[int]] | None:
    """One CPU for the load generators and the rest for the service; None when there are not two.

    On one machine, a load generator that shares the service's cores takes CPU from it exactly when the
    load peaks, and its own late sends count as the service's latency; a core of its own is the nearest
    this machine comes to a client on another machine.
    """
    if len(available) < 2:
        return None
    client = min(available)
    return {client}, available - {client}


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Run this process (and the processes it starts meanwhile) on ``cpus`` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
