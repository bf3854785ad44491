"""Memory of the service under soak: the resident set (RSS) of each worker, sampled while the load runs."""

from __future__ import annotations

import threading
from typing import Any


def worker_rss(arbiter: int) -> dict[int, int]:
    """Resident bytes of each worker process under the ``bentoml serve`` arbiter ``arbiter``."""
    import psutil

    rss: dict[int, int] = {}
    for child in psutil.Process(arbiter).children(recursive=True):
        try:
            if "_bentoml_impl.worker" in " ".join(child.cmdline()):
                rss[child.pid] = child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return rss


def sample_rss(arbiter: int, stop_event: threading.Event, every_s: float = 2.0) -> list[dict[int, int]]:
    """Sample :func:`worker_rss` until ``stop_event`` is set (run in a thread)."""
    samples = []
    while not stop_event.wait(every_s):
        samples.append(worker_rss(arbiter))
    return samples


def rss_report(before: dict[int, int], after: dict[int, int], peak: int) -> dict[str, Any]:
    """Total worker RSS before/after the soak in MiB and its relative growth."""
    total_before, total_after = sum(before.values()), sum(after.values())
    return {
        "workers": len(before),
        "same_workers": sorted(before) == sorted(after),
        "before_mib": round(total_before / 2**20, 1),
        "after_mib": round(total_after / 2**20, 1),
        "peak_mib": round(peak / 2**20, 1),
        "growth": round(total_after / total_before - 1, 4) if total_before else float("nan"),
    }
