"""Soak benchmark: the BentoML service held at ~80 % of its capacity for a minute.

``python -m recsys.soak_bench`` serves the champion of ``BENTOML_HOME`` (or a quick one, as
:mod:`recsys.serve_bench` does), then

1. measures capacity with ``wrk`` (closed loop, 16 connections, 5 s after a 2 s warm-up);
2. measures the unloaded p99 with a light paced run (20 req/s, 10 s);
3. holds ``fraction`` x capacity for ``soak_seconds`` with an open-loop pacer, sampling the resident
   memory (RSS) of the service's worker processes every 2 s.

Debian's ``wrk`` cannot hold a fixed rate (no ``-R`` as in wrk2), so the pacer is an asyncio HTTP/1.1
client (keep-alive connections over asyncio streams, uvloop) in its own process: request ``i`` is due
at ``start + i / rate`` and its latency is counted from that due time, so a stalled server is not
hidden by the client waiting (no coordinated omission). Whether the pacer kept up (achieved rate, lag
between due and actual send: waiting for a free connection when the service falls behind) is
recorded too.

Writes ``bench/results/soak.json``. Targets: zero errors, soak p99 <= 2 x unloaded p99, worker RSS growth
< 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from recsys import registry
from recsys.io import write_json
from recsys.serve_bench import _LUA, HOME_ENV, free_port, quick_champion, run_wrk, start, stop

RESULTS = Path("bench/results/soak.json")
TARGETS = {"errors": 0, "p99_ratio": 2.0, "rss_growth": 0.10}
LIGHT_RATE, LIGHT_SECONDS = 20.0, 10
KEEP_UP_SHARE = 0.97  # of the target rate: below it, the pacer (not the service) was the limit


def percentile_ms(seconds: list[float], q: float) -> float:
    """The ``q``-th percentile of durations in seconds, in milliseconds (NaN when empty)."""
    return round(float(np.percentile(seconds, q)) * 1e3, 3) if seconds else float("nan")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> str:
    """One HTTP/1.1 keep-alive request; returns the response's status code."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _pace(
    url: str, bodies: list[bytes], rate: float, seconds: float, connections: int
) -> dict[str, Any]:
    """Send ``rate`` x ``seconds`` POST /recommend requests on a fixed schedule and time each one.

    A scheduler puts each request on a queue when it is due; ``connections`` workers, one keep-alive
    connection each, take them off. HTTP/1.1 is spoken over asyncio streams directly: an ``httpx``
    AsyncClient managed ~180 req/s on this 2-core machine, far below the rates to hold.
    """
    host, port = httpx.URL(url).host, httpx.URL(url).port or 80
    requests = [
        b"POST /recommend HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
        for body in bodies
    ]
    latency: list[float] = []
    lag: list[float] = []
    outcomes: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (job := await queue.get()) is not None:
            i, due = job
            sent = loop.time()
            try:
                outcomes[await _exchange(reader, writer, requests[i % len(requests)])] += 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                outcomes[type(exc).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            latency.append(loop.time() - due)
            lag.append(sent - due)
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    total, begun = int(rate * seconds), 0
    start_at = loop.time()
    while begun < total:
        due_now = min(total, int((loop.time() - start_at) * rate) + 1)
        for i in range(begun, due_now):
            queue.put_nowait((i, start_at + i / rate))
        begun = due_now
        await asyncio.sleep(0.001)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return summarize(latency, lag, outcomes, rate, loop.time() - start_at)


def summarize(
    latency: list[float], lag: list[float], outcomes: Counter[str], rate: float, elapsed: float
) -> dict[str, Any]:
    """Latency percentiles (from due time), errors, achieved rate and whether the pacer kept up."""
    errors = sum(count for outcome, count in outcomes.items() if outcome != "200")
    achieved = len(latency) / elapsed if elapsed > 0 else 0.0
    lag_p99 = percentile_ms(lag, 99)
    return {
        "target_rps": round(rate, 1),
        "achieved_rps": round(achieved, 1),
        "requests": len(latency),
        "errors": errors,
        "outcomes": dict(outcomes),
        "p50_ms": percentile_ms(latency, 50),
        "p99_ms": percentile_ms(latency, 99),
        "p999_ms": percentile_ms(latency, 99.9),
        "send_lag_p99_ms": lag_p99,
        "pacer_kept_up": bool(achieved >= KEEP_UP_SHARE * rate),
    }


def run_pacer(url: str, bodies: Path, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    """Run the pacer in its own process (so it does not share a GIL with the caller); its summary."""
    command = [sys.executable, "-m", "recsys.soak_bench", "--pace", url, "--bodies", str(bodies)]
    command += ["--rate", str(rate), "--seconds", str(seconds), "--connections", str(connections)]
    before = os.times()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    after = os.times()
    summary: dict[str, Any] = json.loads(done.stdout)
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    # the pacer competes with the service for the same cores: its share says how much it took
    summary["client_cpu_share"] = round(cpu / seconds / (os.cpu_count() or 1), 3)
    return summary


def worker_rss(arbiter: int) -> dict[int, int]:
    """Resident bytes of each worker process under the ``bentoml serve`` arbiter ``arbiter``."""
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


def write_inputs(home: Path, work: Path) -> tuple[Path, Path]:
    """Request bodies (known users, k=10) and the ``wrk`` script that cycles through them."""
    users = registry.load_artifact("champion", home=home).user_ids[:1000]
    bodies = work / "bodies.txt"
    bodies.write_text("\n".join(json.dumps({"user_id": u, "k": 10}) for u in users) + "\n", encoding="utf-8")
    script = work / "recommend.lua"
    script.write_text(_LUA % bodies, encoding="utf-8")
    return bodies, script


def _progress(message: str) -> None:
    print(f"soak_bench: {message}", file=sys.stderr, flush=True)


def soak(home: Path, work: Path, soak_seconds: float, fraction: float, connections: int) -> dict[str, Any]:
    """Capacity, unloaded p99 and the soak itself against one service process."""
    bodies, script = write_inputs(home, work)
    env = {
        **os.environ,
        HOME_ENV: str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "RECSYS_RUNTIME_DIR": str(work / "rt"),
        "RECSYS_FEEDBACK_URL": f"sqlite:///{work / 'feedback.db'}",
    }
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", "recsys.serving.service:Recommender"]
    process = start([*command, "--host", "127.0.0.1", "--port", str(port)], env, port, work / "service.log")
    url = f"http://127.0.0.1:{port}"
    _progress(f"service answers on {url}")
    try:
        run_wrk(port, script, 2, 16)  # warm-up: caches, allocator, connections
        capacity = run_wrk(port, script, 5, 16)
        _progress(f"capacity {capacity['rps']} req/s (wrk, 16 connections, 5 s)")
        unloaded = run_pacer(url, bodies, LIGHT_RATE, LIGHT_SECONDS, connections)
        _progress(f"unloaded p99 {unloaded['p99_ms']} ms at {LIGHT_RATE:g} req/s")
        rate = fraction * capacity["rps"]
        _progress(f"soak: {rate:.0f} req/s for {soak_seconds:g} s")
        before, stop_event = worker_rss(process.pid), threading.Event()
        samples: list[dict[int, int]] = []
        sampler = threading.Thread(target=lambda: samples.extend(sample_rss(process.pid, stop_event)))
        sampler.start()
        load_before = os.getloadavg()
        try:
            loaded = run_pacer(url, bodies, rate, soak_seconds, connections)
        finally:
            stop_event.set()
            sampler.join()
        load_after = os.getloadavg()
        after = worker_rss(process.pid)
    finally:
        stop(process)
    peak = max([sum(sample.values()) for sample in samples] + [sum(after.values())])
    return {
        "capacity": capacity,
        "unloaded": unloaded,
        "soak": loaded,
        "rss": rss_report(before, after, peak),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """The soak's figures against :data:`TARGETS`."""
    ratio = results["soak"]["p99_ms"] / results["unloaded"]["p99_ms"]
    checks = {
        "zero_errors": results["soak"]["errors"] == TARGETS["errors"],
        "p99_within_2x_unloaded": ratio <= TARGETS["p99_ratio"],
        "rss_growth_below_10pct": results["rss"]["growth"] < TARGETS["rss_growth"],
    }
    return {"p99_ratio": round(ratio, 2), "checks": checks, "meets_targets": all(checks.values())}


def _champion_home(work: Path, data_root: Path, epochs: int) -> Path:
    home = registry.bentoml_home()
    if registry.champion(home) is not None:
        return Path(home)
    print(f"soak_bench: no champion in {home}; training a quick one", file=sys.stderr)
    quick_champion(data_root, work / "bentoml", epochs)
    return work / "bentoml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the soak")
    parser.add_argument("--fraction", type=float, default=0.8, help="share of the measured capacity to hold")
    parser.add_argument("--connections", type=int, default=32, help="pacer's keep-alive connections")
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the quick model when no champion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pace", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pace:  # the pacer process of run_pacer
        bodies = [line.encode() for line in args.bodies.read_text(encoding="utf-8").splitlines() if line]
        import uvloop

        summary = uvloop.run(_pace(args.pace, bodies, args.rate, args.seconds, args.connections))
        print(json.dumps(summary))
        return 0
    if shutil.which("wrk") is None:
        print("soak_bench: wrk is missing; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="recsys-soak-bench-") as tmp:
        work = Path(tmp)
        results = soak(
            _champion_home(work, args.data_root, args.epochs),
            work,
            args.seconds,
            args.fraction,
            args.connections,
        )
    results |= verdict(results)
    results |= {
        "seconds": args.seconds,
        "fraction": args.fraction,
        "cpus": os.cpu_count(),
        "targets": TARGETS,
    }
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
