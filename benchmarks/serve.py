"""Serving benchmark: the BentoML service against a bare Starlette app with the same scorer.

``python -m benchmarks.serve`` serves the champion of ``BENTOML_HOME`` (or, without one, a quick
hybrid trained on the pipeline's ``data/`` outputs and packaged into a temporary store), drives
``POST /recommend`` (known users, k=10, each with 5 feedback events since the model was trained, so every
list is adapted within the session: ``--session-events``) on loopback with ``wrk`` (16 connections, 10 s per
side; the service also once with ``"session": false``: ``service_as_trained``, and once without exploration:
``service_no_exploration``), and
writes ``bench/results/serve.json``: ``{"service": {"rps", "p50_ms", "p99_ms"}, "bare": {...},
"ratio_rps", "model_us_per_request", "client_cpu_share", ...}``. ``--model ranker`` serves the project's
two-stage ranker (``models/ranker.npz`` with the hybrid) instead of the champion, ``--model lightfm_hybrid``
the project's hybrid alone: the same run's models, side by side. ``wrk`` is Debian's package
(``apt-get install -y wrk``). Targets: >= 1,500 req/s, p99 <= 25 ms, >= half the bare app's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

from recsys import registry
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import FeedbackStore
from recsys.io import write_json
from recsys.serving.exploration import EXPLORE_SHARE_ENV
from recsys.serving.exploration import params_of as explore_params_of

HOME_ENV = "BENTOML_HOME"
RESULTS = Path("bench/results/serve.json")
TARGETS = {"rps": 1500.0, "p99_ms": 25.0, "ratio_rps": 0.5}
CLIENT_TOKEN = "bench-client-token"
"""The load generators act as the platform's backend: known users' ids need a client token."""
_LUA = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local n = 0
request = function()
  n = n %% #bodies + 1
  return wrk.format("POST", "/recommend", {["Content-Type"] = "application/json",
                    ["X-Client-Token"] = "bench-client-token"}, bodies[n])
end
"""


def bare_app() -> Starlette:
    """A bare Starlette ``/recommend``: the same scorer and exclusions, no validation, reasons or names."""
    from recsys.serving.state import ServingState

    threadpool_limits(limits=1)
    artifact = registry.load_artifact("champion", home=os.environ.get(HOME_ENV))
    scorer, index, known = artifact.model.scorer(), artifact.user_index, artifact.known.tocsr()
    item_ids = artifact.item_ids

    # A ranker is served through the service's own cached lists (its per-listener work is not one product).
    state = ServingState(artifact) if artifact.ranker is not None else None

    async def recommend(request: Request) -> Response:
        body = orjson.loads(await request.body())
        user = index[body["user_id"]]
        if state is not None:
            items, scores = state.rank_known(user, int(body.get("k", 10)))
        else:
            listened = known.indices[known.indptr[user] : known.indptr[user + 1]]
            items, scores = scorer.top_k_for_vector(
                scorer.user_vectors[user], int(body.get("k", 10)), listened
            )
        answer = [
            {"item_id": item_ids[i], "score": float(s)}
            for i, s in zip(items.tolist(), scores.tolist(), strict=True)
        ]
        return Response(orjson.dumps({"items": answer}), media_type="application/json")

    return Starlette(routes=[Route("/recommend", recommend, methods=["POST"])])


def quick_champion(data_root: Path, home: Path, epochs: int) -> str:
    """Train a hybrid on ``data_root``'s split and features, package it into ``home`` and promote it."""
    from recsys.config import load_params
    from recsys.offline.new_listener import train_hybrid
    from recsys.offline.split import load_split

    params = load_params()
    lightfm = params.train.lightfm.model_copy(update={"epochs": epochs})
    split = load_split(data_root / "split")
    with tempfile.TemporaryDirectory(prefix="recsys-bench-model-") as models:
        train_hybrid(split, data_root / "features", lightfm, params.seed).save(
            Path(models) / "lightfm_hybrid.npz"
        )
        return project_champion(data_root, Path(models), home, "lightfm_hybrid")


def project_champion(data_root: Path, models_dir: Path, home: Path, model: str) -> str:
    """Package the project's trained ``model`` (``models/``: the hybrid, or the ranker with the hybrid beside
    it) with its split and features into ``home`` and promote it."""
    tag = registry.save_candidate(
        models_dir,
        data_root / "features",
        data_root / "split",
        {},
        params_dict={"bench": True},
        dvc_lock_hash="bench",
        git_commit="bench",
        prepared_dir=data_root / "prepared",
        source_model=model,
        home=home,
    )
    registry.promote(tag, home=home)
    return tag


def model_work_us(home: Path, users: list[str], repeat: int = 2000) -> dict[str, Any]:
    """Mean microseconds per request of the service's model work (and of the bare scorer call), and a
    listener's first request (nothing cached: the served model ranks the whole catalogue for them)."""
    from recsys.serving import logic
    from recsys.serving.schemas import RecommendRequest
    from recsys.serving.state import ServingState

    threadpool_limits(limits=1)  # as in the servers' workers: multi-threaded BLAS is slower for one row
    state = ServingState(registry.load_artifact("champion", home=home))
    first = []
    for listener in users[:200]:
        begin = time.perf_counter()
        logic.recommend(state, RecommendRequest(user_id=listener), frozenset())
        first.append(time.perf_counter() - begin)
    requests = [RecommendRequest(user_id=users[i % len(users)]) for i in range(repeat)]
    start = time.perf_counter()
    for request in requests:
        logic.recommend(state, request, frozenset())
    service = (time.perf_counter() - start) / repeat * 1e6
    start = time.perf_counter()
    for request in requests:
        user = state.user_index[request.user_id]
        state.scorer.top_k_for_vector(state.user_vectors[user], 10, state.known_items(user))
    return {
        "service": round(service, 1),
        "bare_scorer": round((time.perf_counter() - start) / repeat * 1e6, 1),
        "first_request_median": round(float(np.median(first)) * 1e6, 1),
        "first_request_p99": round(float(np.percentile(first, 99)) * 1e6, 1),
        "served_model": state.served_model,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start a server process group and wait until it answers a request."""
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            answer = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_id": "?"}, timeout=5)
            if answer.status_code != 503:  # any answer but 'no model loaded yet' means it serves
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    stop(process)
    raise RuntimeError(f"{command[:4]} did not answer in 180 s")


def stop(process: subprocess.Popen[Any]) -> None:
    """Stop ``bentoml serve`` and every worker it started.

    BentoML's process manager starts each worker in a session of its own, so signalling the server's
    process group alone would leave the workers running: they are collected first and killed if they
    outlive the server.
    """
    import psutil

    if process.poll() is not None:
        return
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:
        worker.kill()


def run_wrk(port: int, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """``wrk`` against ``/recommend``: requests/s, p50 and p99 in ms, errors, and wrk's CPU share."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    before = os.times()
    done = subprocess.run([*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {**parse_wrk(done.stdout), "client_cpu_share": round(cpu / seconds / (os.cpu_count() or 1), 3)}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50/p99 (ms) and non-2xx count from ``wrk --latency`` output."""
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percent}% latency in wrk output:\n{text}")
        return round(float(found.group(1)) * units[found.group(2)], 3)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    return {
        "rps": round(float(rps.group(1)), 1),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def experiment_challenger(home: Path, data_root: Path) -> str:
    """A challenger for ``--experiment``: the newest stored model that is not the champion, else the
    pipeline's hybrid (``models/``) packaged again as a candidate (the same weights under a new tag)."""
    champion = registry.champion(home)
    others = [info.tag for info in registry.list_models(home) if champion is None or info.tag != champion.tag]
    if others:
        return others[-1]
    return registry.save_candidate(
        "models", data_root / "features", data_root / "split", {}, params_dict={"bench": True},
        dvc_lock_hash="bench", git_commit="bench", prepared_dir=data_root / "prepared", home=home,
    )  # fmt: skip


def seed_sessions(url: str, users: list[str], item_ids: list[str], per_user: int, seed: int = 0) -> int:
    """Store ``per_user`` events (likes and skips of random items, stamped now) for each of ``users``, so
    that every benchmarked request takes the session path (its vector moved, its list ranked afresh)."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    events = [
        FeedbackEvent(
            user_id=user,
            item_id=item_ids[int(rng.integers(len(item_ids)))],
            event="like" if n % 2 == 0 else "skip",
            timestamp=now,
            event_id=f"bench:{user}:{n}",
        )
        for user in users
        for n in range(per_user)
    ]
    with FeedbackStore(url) as store:
        return store.add_events(events).inserted


def measure(
    home: Path,
    seconds: int,
    connections: int,
    work: Path,
    experiment: dict[str, Any] | None = None,
    session_events: int = 0,
) -> dict[str, Any]:
    """Benchmark the service and the bare app one after the other on the same users; with ``experiment``
    (a ``POST /admin/experiment`` body) the service also runs a second time with that experiment on. With
    ``session_events`` every listener has that many events since the model was trained (the session path);
    the service then also runs with ``"session": false`` (``service_as_trained``: the cached lists)."""
    artifact = registry.load_artifact("champion", home=home)
    users = artifact.user_ids[: min(len(artifact.user_ids), 1000)]
    url = f"sqlite:///{work / 'feedback.db'}"
    if session_events:
        seed_sessions(url, users, artifact.item_ids, session_events)
    script, plain_script = work / "recommend.lua", work / "as_trained.lua"
    for path, extra in ((script, {}), (plain_script, {"session": False})):
        bodies = path.with_suffix(".txt")
        lines = (json.dumps({"user_id": u, "k": 10} | extra) for u in users)
        bodies.write_text("\n".join(lines) + "\n", encoding="utf-8")
        path.write_text(_LUA % bodies, encoding="utf-8")
    env = {
        **os.environ,
        HOME_ENV: str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "RECSYS_RUNTIME_DIR": str(work / "rt"),
        "RECSYS_FEEDBACK_URL": url,
        "RECSYS_ADMIN_TOKEN": "serve-bench",
        "RECSYS_CLIENT_TOKENS": CLIENT_TOKEN,
    }
    py = sys.executable
    sides = {
        "service": [
            py,
            "-m",
            "bentoml",
            "serve",
            "recsys.serving.service:Recommender",
            "--host",
            "127.0.0.1",
        ],
        "bare": [
            py,
            "-m",
            "uvicorn",
            "benchmarks.serve:bare_app",
            "--factory",
            "--workers",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
            "--host",
            "127.0.0.1",
        ],
    }
    if experiment is not None:
        sides = {"service": sides["service"], "service_experiment": sides["service"], "bare": sides["bare"]}
    if session_events:
        sides = {"service": sides["service"], "service_as_trained": sides["service"]} | sides
    # The same service without exploration (the model's explore.share otherwise): what exploring costs.
    sides = {"service": sides["service"], "service_no_exploration": sides["service"]} | sides
    side_env = {"service_no_exploration": {EXPLORE_SHARE_ENV: "0"}}
    results: dict[str, Any] = {
        "session_events_per_listener": session_events,
        "explore": explore_params_of(artifact.metadata).model_dump(),
        "explore_share_env": os.environ.get(EXPLORE_SHARE_ENV),
    }
    for side, command in sides.items():
        port = free_port()
        process = start(
            [*command, "--port", str(port)], env | side_env.get(side, {}), port, work / f"{side}.log"
        )
        try:
            if side == "service_experiment":
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/admin/experiment", json=experiment,
                    headers={"X-Admin-Token": "serve-bench"}, timeout=120,
                )  # fmt: skip
                answer.raise_for_status()
            drive = plain_script if side == "service_as_trained" else script
            run_wrk(port, drive, 2, connections)  # warm-up: caches, allocator, connections
            results[side] = run_wrk(port, drive, seconds, connections)
        finally:
            stop(process)
    results["ratio_rps"] = round(results["service"]["rps"] / results["bare"]["rps"], 3)
    results["ratio_rps_exploring"] = round(
        results["service"]["rps"] / results["service_no_exploration"]["rps"], 3
    )
    if experiment is not None:
        results["experiment"] = experiment
        results["ratio_rps_experiment"] = round(
            results["service_experiment"]["rps"] / results["bare"]["rps"], 3
        )
    results["model_us_per_request"] = model_work_us(home, users)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the quick model when no champion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--experiment", choices=["shadow", "ab", "interleave"], help="also measure the service running it"
    )
    parser.add_argument(
        "--traffic", type=float, default=1.0, help="share of listeners interleaved or shadowed (--experiment)"
    )
    parser.add_argument(
        "--replicas", type=int, choices=[1, 2], default=1, help="2: two replicas through HAProxy (root)"
    )
    parser.add_argument(
        "--model",
        choices=["champion", "lightfm_hybrid", "ranker"],
        default="champion",
        help="the store's champion, or the project's models/<name> (the ranker with the hybrid)",
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--session-events",
        type=int,
        default=5,
        help="events each listener made since the model was trained (0: none; the lists as trained)",
    )
    args = parser.parse_args(argv)
    if args.replicas == 2:  # the several-host topology has a benchmark of its own
        command = ["--seconds", str(args.seconds), "--connections", str(args.connections)]
        return subprocess.run([sys.executable, "-m", "benchmarks.cluster", *command], check=False).returncode
    if shutil.which("wrk") is None:
        print("serve_bench: wrk is missing; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="recsys-serve-bench-") as tmp:
        work = Path(tmp)
        home = registry.bentoml_home()
        if args.model != "champion":
            home = work / "bentoml"
            project_champion(args.data_root, args.models_dir, home, args.model)
        elif registry.champion(home) is None:
            home = work / "bentoml"
            print(
                f"serve_bench: no champion in {registry.bentoml_home()}; training a quick one",
                file=sys.stderr,
            )
            quick_champion(args.data_root, home, args.epochs)
        experiment = None
        if args.experiment:
            challenger = experiment_challenger(home, args.data_root)
            experiment = {
                "mode": args.experiment,
                "challenger": challenger,
                "share": 0.5,
                "salt": "bench",
                "traffic": args.traffic,
            }
        results = measure(home, args.seconds, args.connections, work, experiment, args.session_events)
    results["connections"], results["seconds"], results["cpus"] = (
        args.connections,
        args.seconds,
        os.cpu_count(),
    )
    results["targets"] = TARGETS
    results["meets_targets"] = bool(
        results["service"]["rps"] >= TARGETS["rps"]
        and results["service"]["p99_ms"] <= TARGETS["p99_ms"]
        and results["ratio_rps"] >= TARGETS["ratio_rps"]
    )
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
