"""Soak benchmark: the BentoML service held at 80 % of its open-loop capacity for a minute.

``python -m benchmarks.soak`` serves the champion of ``BENTOML_HOME`` (or a quick one, as
:mod:`benchmarks.serve` does), then

0. times a fixed piece of work on the idle machine for 20 s: how steady the CPU's speed is (on a VM the
   host can halve it for seconds at a time; see :func:`cpu_speed_probe`);
1. measures ``wrk``'s closed-loop rate (16 connections, 5 s after a 2 s warm-up): kept as a reference;
2. measures the unloaded latency with a light paced run (50 req/s, 20 s);
3. measures the open-loop capacity: paced steps (10 s each), bisected, with the same pacer and
   connections as the soak; a step holds when it is answered in full without errors, the pacer kept up,
   and its latency neither blew up nor grew over the step (see :func:`step_problems`); the rate found
   must then hold again for 20 s, or the search goes on below it;
4. holds ``fraction`` x that capacity for ``soak_seconds``, sampling the resident memory (RSS) of the
   service's worker processes every 2 s.

Debian's ``wrk`` cannot hold a fixed rate (no ``-R`` as in wrk2), so the pacer is an asyncio HTTP/1.1
client (keep-alive connections driven by protocol callbacks, uvloop) in its own process: request ``i`` is
due at ``start + i / rate`` and its latency is counted from that due time, so a stalled server is not
hidden by the client waiting (no coordinated omission). Stamps come from ``time.perf_counter``: uvloop's
``loop.time()`` is libuv's millisecond clock, cached per loop iteration.

The load generators (``wrk``, the pacer) and this process run on one CPU and the service on the others,
one worker per CPU (:func:`split_cpus`; ``--shared-cpus`` lets them all share every CPU, with the
service's configured workers). Sharing, the pacer's 0.2 of a core came from the service's two, the kernel
split its connections unevenly between the two workers, and the p99 target was missed in 2 of 5 soaks
against 1 of 11 split (``docs/benchmarks.md``).

Every paced run also records the cores the machine, the service, the pacer and everything else used
meanwhile (from the machine's busy time, so short-lived processes of other people's tests count too):
on a shared machine a tail that coincides with "others" near a core is contention, not the service.

Writes ``bench/results/soak.json``. Targets: zero errors, soak p99 <= 2 x unloaded p99, worker RSS growth
< 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

RESULTS = Path("bench/results/soak.json")
TARGETS = {"errors": 0, "p99_ratio": 2.0, "rss_growth": 0.10}
LIGHT_RATE, LIGHT_SECONDS = 50.0, 20.0
"""The unloaded run: 1,000 requests, so its p99 is not one unlucky request (200 gave the 2nd largest)."""
STEP_SECONDS = 10.0
PROBE_SECONDS = 20.0
"""Length of the CPU-speed probe run before the service starts (see :func:`cpu_speed_probe`)."""
CONFIRM_SECONDS = 20.0
"""The rate the capacity search settles on must hold again for this long (see :func:`search_capacity`)."""
CONNECT_GAP_S = 0.02
KEEP_UP_SHARE = 0.99
"""A step holds only if the answered rate is at least this share of the offered rate."""
STEP_P99_BOUND = 10.0
"""A step holds only if its p99 is at most this many times the unloaded p99 ..."""
STEP_GROWTH_BOUND = 2.0
"""... and the median of its second half at most this many times that of its first (no queue building)."""
RESOLUTION = 0.05
"""The capacity search stops when the bracket between a held and a failed rate is this narrow (relative)."""
WINDOW_S = 5.0
DRAIN_S = 30.0
"""How long the pacer waits for the last answers after the last request was due."""
TICK_S = 0.001
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class SoakOptions:
    """How long to soak, at which share of the capacity, and how the pacer and the search run."""

    soak_seconds: float = 60.0
    fraction: float = 0.8
    connections: int = 16
    shared_cpus: bool = False
    """Let the load generators and the service share every CPU instead of :func:`split_cpus`."""
    step_seconds: float = STEP_SECONDS
    max_steps: int = 16
    confirm_seconds: float = CONFIRM_SECONDS


def percentile_ms(seconds: list[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile of durations in seconds, in milliseconds (NaN when empty)."""
    return round(float(np.percentile(seconds, q)) * 1e3, 3) if len(seconds) else float("nan")


class _Client(asyncio.Protocol):
    """One keep-alive connection: sends the request it is given, reports each complete response."""

    def __init__(self, pacer: _Pacer) -> None:
        self.pacer = pacer
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1  # body bytes still expected; -1 while the head is not complete
        self.status = ""
        self.job = -1  # index of the request in flight, -1 when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.pacer.ready(self)

    def send(self, job: int, request: bytes) -> None:
        self.job = job
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 4]
                length = _LENGTH.search(head)
                self.status, self.need = head[9:12].decode(), int(length.group(1)) if length else 0
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need, job = -1, self.job
            self.job = -1
            self.pacer.answered(self, job, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pacer.lost(self, self.job)


class _Pacer:
    """Releases request ``i`` at ``start + i / rate`` to the longest-idle connection; times each one."""

    def __init__(self, requests: list[bytes], rate: float, total: int, connect: Callable[[], None]) -> None:
        self.requests, self.rate, self.total, self.connect = requests, rate, total, connect
        self.start = 0.0
        self.latency = np.full(total, np.nan)
        self.lag = np.full(total, np.nan)
        self.outcomes: Counter[str] = Counter()
        self.pending: deque[int] = deque()
        self.idle: deque[_Client] = deque()
        self.released = self.finished = 0
        self.done = asyncio.Event()

    def release(self, upto: int) -> None:
        """Queue every request due up to (not including) index ``upto`` and hand them out."""
        self.pending.extend(range(self.released, upto))
        self.released = upto
        self._dispatch()

    def ready(self, client: _Client) -> None:
        self.idle.append(client)
        self._dispatch()

    def _dispatch(self) -> None:
        now = time.perf_counter()
        while self.pending and self.idle:
            job = self.pending.popleft()
            self.lag[job] = now - (self.start + job / self.rate)
            self.idle.popleft().send(job, self.requests[job % len(self.requests)])

    def _finish(self, job: int, outcome: str) -> None:
        self.latency[job] = time.perf_counter() - (self.start + job / self.rate)
        self.outcomes[outcome] += 1
        self.finished += 1
        if self.finished == self.total:
            self.done.set()

    def answered(self, client: _Client, job: int, status: str) -> None:
        self._finish(job, status)
        self.idle.append(client)
        self._dispatch()

    def lost(self, client: _Client, job: int) -> None:
        if client in self.idle:
            self.idle.remove(client)
        if job >= 0:
            self._finish(job, "connection_lost")
        if self.finished < self.total:
            self.connect()


async def _pace(
    url: str, bodies: list[bytes], rate: float, seconds: float, connections: int, service: int | None = None
) -> dict[str, Any]:
    """Offer ``rate`` x ``seconds`` POST /recommend requests on a fixed schedule and time each one.

    With ``service`` (the pid of ``bentoml serve``), the figures include the cores the machine, the
    service, the pacer and everything else used while the requests were due and answered.
    """
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    requests = [
        b"POST /recommend HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
        for body in bodies
    ]
    loop = asyncio.get_running_loop()
    opening: set[asyncio.Task[Any]] = set()

    def connect() -> None:
        task = loop.create_task(loop.create_connection(lambda: _Client(pacer), host, int(port or 80)))
        opening.add(task)
        task.add_done_callback(opening.discard)

    pacer = _Pacer(requests, rate, max(1, round(rate * seconds)), connect)
    for _ in range(connections):
        await loop.create_connection(lambda: _Client(pacer), host, int(port or 80))
        # Opened back to back, connections queue in the shared listening socket's backlog and one worker
        # accepts them all in one turn (measured: 15 of 16 on one worker); spaced out, as clients arrive,
        # each is accepted by whichever worker wakes first.
        await asyncio.sleep(CONNECT_GAP_S)
    # the pacer allocates no containers per request; freezing what exists keeps collections short
    gc.collect()
    gc.freeze()
    cpu_before = cpu_snapshot(service)
    pacer.start = time.perf_counter()
    while pacer.released < pacer.total:
        pacer.release(min(pacer.total, int((time.perf_counter() - pacer.start) * rate) + 1))
        # libuv's timers count whole milliseconds: a shorter sleep would spin and take a core from the service
        await asyncio.sleep(max(TICK_S, pacer.start + pacer.released / rate - time.perf_counter()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pacer.done.wait(), DRAIN_S)
    elapsed = time.perf_counter() - pacer.start
    cores = cpu_split(cpu_before, cpu_snapshot(service), elapsed)
    for client in list(pacer.idle):
        if client.transport is not None:
            client.transport.close()
    return summarize(pacer.latency, pacer.lag, pacer.outcomes, rate, elapsed) | {"cores": cores}


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


def summarize(
    latency: np.ndarray, lag: np.ndarray, outcomes: Counter[str], rate: float, elapsed: float
) -> dict[str, Any]:
    """Figures of one paced run from each request's latency (seconds from its due time; NaN: unanswered).

    Request ``i`` was due at ``i / rate``: the halves and the ``WINDOW_S`` windows go by due time.
    """
    answered = ~np.isnan(latency)
    half = len(latency) // 2
    windows = max(1, round(len(latency) / rate / WINDOW_S))  # equal parts, none a sliver
    failed = sum(count for outcome, count in outcomes.items() if outcome != "200")
    return {
        "target_rps": round(rate, 1),
        "achieved_rps": round(int(answered.sum()) / elapsed, 1) if elapsed > 0 else 0.0,
        "requests": len(latency),
        "errors": failed + int((~answered).sum()),
        "outcomes": dict(outcomes) | ({"unanswered": int((~answered).sum())} if not answered.all() else {}),
        "p50_ms": percentile_ms(latency[answered], 50),
        "p99_ms": percentile_ms(latency[answered], 99),
        "p999_ms": percentile_ms(latency[answered], 99.9),
        "max_ms": round(float(latency[answered].max()) * 1e3, 3) if answered.any() else float("nan"),
        "p50_first_half_ms": percentile_ms(latency[:half][answered[:half]], 50),
        "p50_second_half_ms": percentile_ms(latency[half:][answered[half:]], 50),
        "p99_by_window_ms": [
            percentile_ms(part[~np.isnan(part)], 99) for part in np.array_split(latency, windows)
        ],
        "send_lag_p99_ms": percentile_ms(lag[~np.isnan(lag)], 99),
    }


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


def verdict(soak: dict[str, Any], unloaded_p99_ms: float, rss_growth: float) -> dict[str, Any]:
    """The soak's figures against :data:`TARGETS`."""
    ratio = soak["p99_ms"] / unloaded_p99_ms
    checks = {
        "zero_errors": soak["errors"] == TARGETS["errors"],
        "p99_within_2x_unloaded": ratio <= TARGETS["p99_ratio"],
        "rss_growth_below_10pct": rss_growth < TARGETS["rss_growth"],
    }
    return {"p99_ratio": round(ratio, 2), "checks": checks, "meets_targets": all(checks.values())}


def run_pacer(
    url: str,
    bodies: Path,
    rate: float,
    seconds: float,
    options: SoakOptions,
    service: int,
) -> dict[str, Any]:
    """Run the pacer in its own process (on this process's CPUs); its summary."""
    command = [sys.executable, "-m", "benchmarks.soak", "--pace", url, "--bodies", str(bodies)]
    command += ["--rate", str(rate), "--seconds", str(seconds), "--connections", str(options.connections)]
    command += ["--service-pid", str(service)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    summary: dict[str, Any] = json.loads(done.stdout)
    summary["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return summary


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


def write_inputs(home: Path, work: Path) -> tuple[Path, Path]:
    """Request bodies (known users, k=10) and the ``wrk`` script that cycles through them."""
    from benchmarks.serve import _LUA
    from recsys import registry

    users = registry.load_artifact("champion", home=home).user_ids[:1000]
    bodies = work / "bodies.txt"
    bodies.write_text("\n".join(json.dumps({"user_id": u, "k": 10}) for u in users) + "\n", encoding="utf-8")
    script = work / "recommend.lua"
    script.write_text(_LUA % bodies, encoding="utf-8")
    return bodies, script


def _progress(message: str) -> None:
    print(f"soak_bench: {message}", file=sys.stderr, flush=True)


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


def service_env(base: dict[str, str], home: Path, work: Path, workers: int | None) -> dict[str, str]:
    """The service's environment: champion home, scratch store, and ``workers`` workers if given."""
    from benchmarks.serve import HOME_ENV

    env = {
        **base,
        HOME_ENV: str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "RECSYS_RUNTIME_DIR": str(work / "rt"),
        "RECSYS_FEEDBACK_URL": f"sqlite:///{work / 'feedback.db'}",
    }
    if workers is not None:  # BentoML reads space-separated overrides; the last one of a key wins
        override = f"services.Recommender.workers={workers}"
        env["BENTOML_CONFIG_OPTIONS"] = f"{base.get('BENTOML_CONFIG_OPTIONS', '')} {override}".strip()
    return env


def _service(home: Path, work: Path, cpus: set[int] | None) -> tuple[subprocess.Popen[bytes], int]:
    """``bentoml serve`` on its own port; on ``cpus`` with one worker each when given."""
    from benchmarks.serve import free_port, start

    env = service_env(dict(os.environ), home, work, len(cpus) if cpus else None)
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", "recsys.serving.service:Recommender"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with pinned(cpus) if cpus else contextlib.nullcontext():  # the service's processes inherit it
        return start(command, env, port, work / "service.log"), port


def _capacity(
    arbiter: int, url: str, bodies: Path, options: SoakOptions, unloaded: dict[str, Any], start: float
) -> dict[str, Any]:
    def step(rate: float, seconds: float = options.step_seconds) -> dict[str, Any]:
        figures = run_pacer(url, bodies, rate, seconds, options, arbiter)
        figures["problems"] = step_problems(figures, unloaded)
        verdict = "; ".join(figures["problems"]) or "holds"
        others = figures["cores"]["others"]
        _progress(
            f"step {rate:.0f} req/s for {seconds:g} s: p99 {figures['p99_ms']:g} ms, others {others} cores, "
            f"{verdict}"
        )
        return figures

    def confirm(rate: float) -> dict[str, Any]:
        return step(rate, options.confirm_seconds)

    return search_capacity(step, start, RESOLUTION, options.max_steps, confirm)


def _hold(arbiter: int, url: str, bodies: Path, rate: float, options: SoakOptions) -> dict[str, Any]:
    before, stop_event = worker_rss(arbiter), threading.Event()
    samples: list[dict[int, int]] = []
    sampler = threading.Thread(target=lambda: samples.extend(sample_rss(arbiter, stop_event)))
    cpu_before, load_before = cpu_seconds(), os.getloadavg()[0]
    sampler.start()
    try:
        loaded = run_pacer(url, bodies, rate, options.soak_seconds, options, arbiter)
    finally:
        stop_event.set()
        sampler.join()
    after = worker_rss(arbiter)
    peak = max([sum(sample.values()) for sample in samples] + [sum(after.values())])
    import psutil

    ours = {os.getpid(), arbiter} | {child.pid for child in psutil.Process(arbiter).children(recursive=True)}
    loaded["loadavg_1m_before_after"] = [round(load_before, 2), loaded.pop("loadavg_1m")]
    loaded["other_processes_cpu"] = busiest_others(cpu_before, cpu_seconds(), ours)
    return {"soak": loaded, "rss": rss_report(before, after, peak)}


def soak(home: Path, work: Path, options: SoakOptions) -> dict[str, Any]:
    """wrk's rate, unloaded latency, open-loop capacity and the soak itself against one service process.

    Unless ``options.shared_cpus``, this process, ``wrk`` and the pacer run on one CPU and the service on
    the others (:func:`split_cpus`).
    """
    cpus = None if options.shared_cpus else split_cpus(os.sched_getaffinity(0))
    with pinned(cpus[0]) if cpus else contextlib.nullcontext():
        figures = _soak(home, work, options, cpus[1] if cpus else None)
    machine = sorted(os.sched_getaffinity(0))
    return figures | {
        "cpus": {
            "load_generators": sorted(cpus[0]) if cpus else machine,
            "service": sorted(cpus[1]) if cpus else machine,
        }
    }


def _soak(home: Path, work: Path, options: SoakOptions, service_cpus: set[int] | None) -> dict[str, Any]:
    from benchmarks.serve import run_wrk, stop

    bodies, script = write_inputs(home, work)
    probe = cpu_speed_probe()
    _progress(
        f"CPU speed probe: slowest second {probe['slowest_second_x_fastest']}x the fastest, "
        f"{probe['share_of_seconds_1_3x_slower']:.0%} of seconds >= 1.3x slower"
    )
    process, port = _service(home, work, service_cpus)
    url = f"http://127.0.0.1:{port}"
    _progress(f"service answers on {url}; 1-min load {os.getloadavg()[0]:.2f}")
    try:
        run_wrk(port, script, 2, 16)  # warm-up: caches, allocator, connections
        wrk = run_wrk(port, script, 5, 16) | {"connections": 16, "loadavg_1m": round(os.getloadavg()[0], 2)}
        _progress(f"wrk closed loop: {wrk['rps']} req/s (16 connections, 5 s)")
        unloaded = run_pacer(url, bodies, LIGHT_RATE, LIGHT_SECONDS, options, process.pid)
        _progress(f"unloaded p99 {unloaded['p99_ms']} ms at {LIGHT_RATE:g} req/s")
        capacity = _capacity(process.pid, url, bodies, options, unloaded, 0.5 * wrk["rps"])
        rate = options.fraction * capacity["capacity_rps"]
        _progress(f"open-loop capacity {capacity['capacity_rps']} req/s; soak at {rate:.0f} req/s")
        held = _hold(process.pid, url, bodies, rate, options)
    finally:
        stop(process)
    capacity["over_wrk"] = round(capacity["capacity_rps"] / wrk["rps"], 3)
    return {
        "host_cpu_speed": probe,
        "wrk_closed_loop": wrk,
        "unloaded": unloaded,
        "capacity": capacity,
        **held,
    }


def _champion_home(work: Path, data_root: Path, epochs: int) -> Path:
    from benchmarks.serve import quick_champion
    from recsys import registry

    home = registry.bentoml_home()
    if registry.champion(home) is not None:
        return Path(home)
    _progress(f"no champion in {home}; training a quick one")
    quick_champion(data_root, work / "bentoml", epochs)
    return work / "bentoml"


def _pacer_main(args: argparse.Namespace) -> int:
    import uvloop

    bodies = [line.encode() for line in args.bodies.read_text(encoding="utf-8").splitlines() if line]
    summary = uvloop.run(
        _pace(args.pace, bodies, args.rate, args.seconds, args.connections, args.service_pid)
    )
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the soak")
    parser.add_argument("--fraction", type=float, default=0.8, help="share of the open-loop capacity to hold")
    parser.add_argument("--connections", type=int, default=16, help="pacer's keep-alive connections")
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="let wrk and the pacer share the service's CPUs (default: one CPU for them, the rest for it)",
    )
    parser.add_argument("--step-seconds", type=float, default=STEP_SECONDS, help="length of a capacity step")
    parser.add_argument("--max-steps", type=int, default=16, help="most capacity steps")
    parser.add_argument(
        "--confirm-seconds", type=float, default=CONFIRM_SECONDS, help="length of the confirmation step"
    )
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the quick model when no champion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pace", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--service-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pace:  # the pacer process of run_pacer
        return _pacer_main(args)
    if shutil.which("wrk") is None:
        _progress("wrk is missing; install it with `apt-get install -y wrk`")
        return 2
    options = SoakOptions(
        args.seconds,
        args.fraction,
        args.connections,
        args.shared_cpus,
        args.step_seconds,
        args.max_steps,
        args.confirm_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="recsys-soak-bench-") as tmp:
        results = soak(_champion_home(Path(tmp), args.data_root, args.epochs), Path(tmp), options)
    results |= verdict(results["soak"], results["unloaded"]["p99_ms"], results["rss"]["growth"])
    results |= {"options": asdict(options), "targets": TARGETS}
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    from recsys.io import write_json

    write_json(args.out, results)
    print(json.dumps({key: results[key] for key in ("capacity", "soak", "rss", "checks")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
