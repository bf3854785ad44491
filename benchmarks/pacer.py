"""The open-loop pacer: an asyncio HTTP/1.1 client that sends requests at a fixed rate, in its own process.

Debian's ``wrk`` cannot hold a fixed rate (no ``-R`` as in wrk2), so this client does: keep-alive
connections driven by protocol callbacks (uvloop); request ``i`` is due at ``start + i / rate`` and its
latency is counted from that due time, so a stalled server is not hidden by the client waiting (no
coordinated omission). Stamps come from ``time.perf_counter``: uvloop's ``loop.time()`` is libuv's
millisecond clock, cached per loop iteration. :func:`run_pacer` runs it as ``python -m benchmarks.pacer``
and returns its :func:`summarize` figures, with the cores every party used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmarks.cpus import cpu_snapshot, cpu_split
from benchmarks.serve import CLIENT_TOKEN

CONNECT_GAP_S = 0.02
WINDOW_S = 5.0
DRAIN_S = 30.0
"""How long the pacer waits for the last answers after the last request was due."""
TICK_S = 0.001
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


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
        self.reusable = True
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
                # HTTP/1.0 or "Connection: close": the server closes after this answer, so the
                # connection must not carry the next request (it would be lost in the race).
                self.reusable = head.startswith(b"HTTP/1.1") and not _CLOSE.search(head)
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need, job = -1, self.job
            self.job = -1
            self.pacer.answered(self, job, self.status, self.reusable)
            if not self.reusable and self.transport is not None:
                self.transport.close()  # connection_lost then opens a new one
                return

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

    def answered(self, client: _Client, job: int, status: str, reusable: bool = True) -> None:
        self._finish(job, status)
        if reusable:
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
        b"X-Client-Token: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (host.encode(), CLIENT_TOKEN.encode(), len(body), body)
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


def run_pacer(
    url: str,
    bodies: Path,
    rate: float,
    seconds: float,
    connections: int,
    service: int,
) -> dict[str, Any]:
    """Run the pacer in its own process (on this process's CPUs); its summary."""
    command = [sys.executable, "-m", "benchmarks.pacer", url, "--bodies", str(bodies)]
    command += ["--rate", str(rate), "--seconds", str(seconds), "--connections", str(connections)]
    command += ["--service-pid", str(service)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    summary: dict[str, Any] = json.loads(done.stdout)
    summary["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.pacer URL --bodies FILE --rate R --seconds S``: one paced run as JSON."""
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON request body a line")
    parser.add_argument("--rate", type=float, required=True, help="requests a second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--service-pid", type=int, help="the service, whose CPU time is recorded")
    args = parser.parse_args(argv)
    bodies = [line.encode() for line in args.bodies.read_text(encoding="utf-8").splitlines() if line]
    summary = uvloop.run(_pace(args.url, bodies, args.rate, args.seconds, args.connections, args.service_pid))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
