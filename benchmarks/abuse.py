"""Abuse benchmark: ``/recommend`` latency with anonymous callers hammering ``/search`` and erasures.

``python -m benchmarks.abuse`` (``make bench-abuse``) serves the champion of ``BENTOML_HOME`` (or a quick one)
with a feedback store already holding many listeners' dislikes, then alternates, ``--rounds`` times:

- **quiet**: ``/recommend`` for known listeners at a fixed rate (the open-loop pacer of
  :mod:`benchmarks.pacer`, no coordinated omission), nothing else;
- **abused**: the same paced ``/recommend``, while two ``wrk`` loops without any token send, each at
  ``--abuse-rps`` (100 a second by default: a hundred times what a listener's page does), ``GET /search``
  with random made-up names (every search a full fuzzy and substring scan of the catalogue) and
  ``DELETE /users/web-<random uuid>/feedback`` (anonymous erasures).

A flood without any rate (a closed loop as fast as the service answers) saturates the worker whatever the
application does, since even a refusal costs it a parse and an answer: that is for a rate limit in front of
the service (HAProxy, an ingress), not for the service itself.

Before the bounds of #28, each search held the worker's event loop for its whole scan, and each anonymous
erasure made every worker reread the whole dislike table on its next request. The target: the abused p99 of
``/recommend`` within 2x the quiet one (median over the rounds). As in the soak, the load generators run on
one CPU and the service on the others (one worker a CPU).

Writes ``bench/results/abuse.json`` and prints the table for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.cpus import pinned, split_cpus
from benchmarks.pacer import run_pacer
from recsys.io import write_json

RESULTS = Path("bench/results/abuse.json")
TARGET_P99_RATIO = 2.0
DISLIKERS, DISLIKES_EACH = 20_000, 5
ABUSE_CONNECTIONS = 4
_SEARCH_LUA = """
local letters = "abcdefghijklmnopqrstuvwxyz"
math.randomseed(os.time())
delay = function()
  return %(delay)d
end
request = function()
  local n = math.random(5, 12)
  local q = ""
  for i = 1, n do
    local k = math.random(1, #letters)
    q = q .. letters:sub(k, k)
  end
  return wrk.format("GET", "/search?q=" .. q .. "&limit=10")
end
"""
_ERASE_LUA = """
math.randomseed(os.time() + 7)
local hex = "0123456789abcdef"
local function part(n)
  local s = ""
  for i = 1, n do
    local k = math.random(1, 16)
    s = s .. hex:sub(k, k)
  end
  return s
end
delay = function()
  return %(delay)d
end
request = function()
  local id = "web-" .. part(8) .. "-" .. part(4) .. "-4" .. part(3) .. "-a" .. part(3) .. "-" .. part(12)
  return wrk.format("DELETE", "/users/" .. id .. "/feedback")
end
"""


def _progress(message: str) -> None:
    print(f"abuse_bench: {message}", file=sys.stderr, flush=True)


def fill_dislikes(url: str) -> int:
    """Many listeners' dislikes in the store, so that rereading the table (what an erasure used to cost
    every worker) would show."""
    from recsys.feedback.events import FeedbackEvent
    from recsys.feedback.store import FeedbackStore

    with FeedbackStore(url) as store:
        for start in range(0, DISLIKERS, 2_000):
            events = [
                FeedbackEvent(
                    user_id=f"web-fill-{user}", item_id=f"i{n}", event="dislike", event_id=f"f{user}-{n}"
                )
                for user in range(start, start + 2_000)
                for n in range(DISLIKES_EACH)
            ]
            store.add_events(events)
        return store.count()


def _abusers(port: int, work: Path, seconds: float, rate: float) -> list[subprocess.Popen[bytes]]:
    """The two abusive loops, each at about ``rate`` requests a second (4 connections, each pausing)."""
    started = []
    delay = round(ABUSE_CONNECTIONS * 1000 / rate)
    for name, script in (("search", _SEARCH_LUA), ("erase", _ERASE_LUA)):
        path = work / f"{name}.lua"
        path.write_text(script.replace("%(delay)d", str(delay)), encoding="utf-8")
        command = [
            "wrk",
            "-t1",
            f"-c{ABUSE_CONNECTIONS}",
            f"-d{int(seconds) + 2}s",
            "--latency",
            "-s",
            str(path),
        ]
        command.append(f"http://127.0.0.1:{port}")
        started.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return started


def _abuse_counts(processes: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    from benchmarks.serve import parse_wrk

    counts: dict[str, Any] = {}
    for name, process in zip(("search", "erase"), processes, strict=True):
        output = process.communicate(timeout=120)[0].decode()
        try:
            counts[name] = parse_wrk(output)
        except ValueError:
            counts[name] = {"output": output[-300:]}
    return counts


def measure(
    home: Path,
    work: Path,
    rate: float,
    seconds: float,
    rounds: int,
    abuse_rate: float,
    service_code: Path | None = None,
) -> dict[str, Any]:
    """Quiet and abused paced runs, alternated ``rounds`` times, against one service."""
    from benchmarks.serve import free_port, start, stop
    from benchmarks.soak import service_env, write_inputs

    cpus = split_cpus(os.sched_getaffinity(0))
    bodies, _ = write_inputs(home, work)
    url_db = f"sqlite:///{work / 'feedback.db'}"
    stored = fill_dislikes(url_db)
    _progress(f"feedback store holds {stored} dislikes of {DISLIKERS} listeners")
    env = service_env(dict(os.environ), home, work, len(cpus[1]) if cpus else None)
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", "recsys.serving.service:Recommender"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    if service_code is not None:  # the service from another checkout (an earlier commit, say)
        env["PYTHONPATH"] = str(service_code.resolve())
        command += ["--working-dir", str(service_code.resolve())]
    runs: dict[str, list[dict[str, Any]]] = {"quiet": [], "abused": []}
    abuse: list[dict[str, Any]] = []
    with pinned(cpus[0]) if cpus else contextlib.nullcontext():
        with pinned(cpus[1]) if cpus else contextlib.nullcontext():
            process = start(command, env, port, work / "service.log")
        try:
            url = f"http://127.0.0.1:{port}"
            run_pacer(url, bodies, rate, 3, 16, process.pid)  # warm-up
            for round_ in range(rounds):
                runs["quiet"].append(run_pacer(url, bodies, rate, seconds, 16, process.pid))
                abusers = _abusers(port, work, seconds, abuse_rate)
                runs["abused"].append(run_pacer(url, bodies, rate, seconds, 16, process.pid))
                abuse.append(_abuse_counts(abusers))
                _progress(
                    f"round {round_ + 1}: p99 quiet {runs['quiet'][-1]['p99_ms']} ms, abused "
                    f"{runs['abused'][-1]['p99_ms']} ms; abusers {json.dumps(abuse[-1])[:200]}"
                )
        finally:
            stop(process)
    return {
        "runs": runs,
        "abusers": abuse,
        "cpus": {"load": sorted(cpus[0]), "service": sorted(cpus[1])} if cpus else None,
    }


def summarise(figures: dict[str, Any], rate: float, seconds: float) -> dict[str, Any]:
    """Median and spread of each side's p99, and the verdict against the 2x target."""
    quiet = [run["p99_ms"] for run in figures["runs"]["quiet"]]
    abused = [run["p99_ms"] for run in figures["runs"]["abused"]]
    ratios = [a / q for a, q in zip(abused, quiet, strict=True)]
    errors = [run["errors"] for side in figures["runs"].values() for run in side]
    return {
        "rate_rps": rate,
        "seconds": seconds,
        "p99_quiet_ms": {"median": statistics.median(quiet), "min": min(quiet), "max": max(quiet)},
        "p99_abused_ms": {"median": statistics.median(abused), "min": min(abused), "max": max(abused)},
        "ratio": {
            "median": round(statistics.median(ratios), 2),
            "min": round(min(ratios), 2),
            "max": round(max(ratios), 2),
        },
        "recommend_errors": sum(errors),
        "met": statistics.median(ratios) <= TARGET_P99_RATIO,
    }


def table(summary: dict[str, Any], figures: dict[str, Any]) -> str:
    searches = [a["search"].get("rps", 0.0) for a in figures["abusers"]]
    erasures = [a["erase"].get("rps", 0.0) for a in figures["abusers"]]
    return "\n".join(
        [
            "| | median | min | max |",
            "| --- | ---: | ---: | ---: |",
            "| /recommend p99 quiet (ms) | {median} | {min} | {max} |".format(**summary["p99_quiet_ms"]),
            "| /recommend p99 abused (ms) | {median} | {min} | {max} |".format(**summary["p99_abused_ms"]),
            "| abused / quiet | {median} | {min} | {max} |".format(**summary["ratio"]),
            f"| abusive /search answered (req/s) | {statistics.median(searches):.0f} | {min(searches):.0f} | "
            f"{max(searches):.0f} |",
            f"| abusive DELETE answered (req/s) | {statistics.median(erasures):.0f} | {min(erasures):.0f} | "
            f"{max(erasures):.0f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="paced /recommend requests a second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--abuse-rps", type=float, default=100.0, help="each abusive loop's requests a second"
    )
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--service-code",
        type=Path,
        help="serve from the code of this checkout instead (a worktree of an earlier commit: before/after)",
    )
    args = parser.parse_args(argv)
    from benchmarks.soak import _champion_home

    with tempfile.TemporaryDirectory(prefix="recsys-abuse-") as scratch:
        work = Path(scratch)
        home = _champion_home(work, args.data_root, 10)
        figures = measure(home, work, args.rate, args.seconds, args.rounds, args.abuse_rps, args.service_code)
    summary = summarise(figures, args.rate, args.seconds) | {
        "abuse_rps_each": args.abuse_rps,
        "service_code": str(args.service_code or "this checkout"),
    }
    result = {
        "measured_at": datetime.now(UTC).isoformat(),
        "summary": summary,
        **figures,
        "run": str(uuid.uuid4()),
    }
    write_json(args.out, result)
    print(table(summary, figures))
    print(json.dumps(summary, indent=2))
    return 0 if summary["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
