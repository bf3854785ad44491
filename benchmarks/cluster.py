"""The several-host topology (:mod:`recsys.cluster`) measured: coordination delay, failover, two replicas.

``python -m benchmarks.cluster`` (root; ``make bench-cluster``, or ``make bench-serve
BENCH_SERVE_ARGS='--replicas 2'``) starts the topology, publishes this checkout's champion, and measures:

- **coordination delay**: 100 dislikes sent to replica A, each timed until replica B's next answer leaves
  the disliked item out (B polls its answer every 2 ms); 20 experiments started on A, timed until B
  describes the same design;
- **failover**: feedback and recommendations through HAProxy paced at 100 requests/s; replica A killed
  (SIGKILL) after 3 s; failed requests, acknowledged events missing from the store (must be 0), and the
  seconds until A, started again, is ready;
- **two replicas against one**: ``wrk`` on ``POST /recommend`` (16 connections, 10 s, after a 2 s warm-up)
  through HAProxy to both replicas, through HAProxy to replica A alone (a second frontend), and to replica
  A directly; ``--runs`` alternated rounds, median and range. Each replica runs one worker; on a 2-core
  machine the two replicas, HAProxy and ``wrk`` share the same cores, so little gain is expected.

Writes ``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.serve import _LUA, CLIENT_TOKEN, parse_wrk
from recsys import cluster as topology
from recsys import registry
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import EVENTS
from recsys.io import write_json

RESULTS = Path("bench/results/cluster.json")
ONE_REPLICA_PORT = 8081


def _client(cluster: topology.Cluster) -> httpx.Client:
    return httpx.Client(timeout=30, headers={"x-client-token": cluster.client_token})


def _top(client: httpx.Client, url: str, user: str, k: int) -> list[str]:
    answer = client.post(f"{url}/recommend", json={"user_id": user, "k": k})
    answer.raise_for_status()
    return [item["item_id"] for item in answer.json()["items"]]


def coordination(cluster: topology.Cluster, users: list[str], changes: int) -> dict[str, Any]:
    """Seconds from a dislike acknowledged by A until B honours it, over ``changes`` dislikes."""
    a, b = cluster.replica_url("replica-a"), cluster.replica_url("replica-b")
    delays = []
    with _client(cluster) as client:
        for n in range(changes):
            user = users[n % len(users)]
            item = _top(client, b, user, 1)[0]
            event = {"event_id": uuid.uuid4().hex, "user_id": user, "item_id": item, "event": "dislike"}
            client.post(f"{a}/feedback", json={"events": [event]}).raise_for_status()
            started = time.perf_counter()
            while item in _top(client, b, user, 10):
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"dislike {n} not honoured by replica-b within 10 s")
                time.sleep(0.002)
            delays.append(time.perf_counter() - started)
    return _summary(delays)


def experiments(cluster: topology.Cluster, challenger: str, changes: int) -> dict[str, Any]:
    """Seconds from an experiment acknowledged by A until B describes it (challenger loaded)."""
    a, b = cluster.replica_url("replica-a"), cluster.replica_url("replica-b")
    admin = {"x-admin-token": cluster.admin_token}
    delays = []
    with httpx.Client(timeout=60, headers=admin) as client:
        for n in range(changes):
            design = {"mode": "ab", "challenger": challenger, "share": 0.5, "salt": f"bench-{n}"}
            client.post(f"{a}/admin/experiment", json=design).raise_for_status()
            started = time.perf_counter()
            while client.get(f"{b}/admin/experiment").json().get("salt") != design["salt"]:
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"experiment {n} not run by replica-b within 30 s")
                time.sleep(0.002)
            delays.append(time.perf_counter() - started)
        client.post(f"{a}/admin/experiment", json={"mode": "off"}).raise_for_status()
    return _summary(delays)


def failover(cluster: topology.Cluster, users: list[str], items: list[str], per_s: float) -> dict[str, Any]:
    """Paced feedback and recommendations through HAProxy while replica A is killed."""
    results: list[tuple[float, int, str | None]] = []
    interval = 1.0 / per_s
    with _client(cluster) as client:
        started = next_at = time.perf_counter()
        killed_at = None
        down = False
        n = 0
        while time.perf_counter() - started < 9.0:
            if killed_at is None and time.perf_counter() - started >= 3.0:
                cluster.kill("replica-a/service", 9)
                killed_at = time.perf_counter()
                down = _refuses(cluster.replica_url("replica-a"))
            n += 1
            user = users[n % len(users)]
            event_id = None
            try:
                if n % 2:
                    event_id = uuid.uuid4().hex
                    event = {
                        "event_id": event_id,
                        "user_id": user,
                        "item_id": items[n % len(items)],
                        "event": "play",
                    }
                    status = client.post(f"{cluster.lb_url}/feedback", json={"events": [event]}).status_code
                else:
                    status = client.post(
                        f"{cluster.lb_url}/recommend", json={"user_id": user, "k": 10}
                    ).status_code
            except httpx.HTTPError:
                status = 0
            results.append((time.perf_counter(), status, event_id))
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    assert killed_at is not None
    acked = {event_id for _, status, event_id in results if event_id and status == 200}
    with FeedbackStore(cluster.feedback_url, create=False) as store, store.engine.connect() as conn:
        stored = set(conn.execute(sa.select(EVENTS.c.event_id).where(EVENTS.c.event_id.in_(acked))).scalars())
    failed = [at - killed_at for at, status, _ in results if status != 200]
    restart = time.perf_counter()
    topology.start_replica(cluster, "replica-a")
    topology.wait_for(lambda: topology.answers(f"{cluster.replica_url('replica-a')}/readyz"), "replica-a")
    return {
        "requests": len(results),
        "per_s": per_s,
        "failed": len(failed),
        "last_failure_after_kill_s": round(max(failed), 3) if failed else None,
        "acknowledged_events": len(acked),
        "acknowledged_lost": len(acked - stored),
        "restart_to_ready_s": round(time.perf_counter() - restart, 1),
        "replica_a_refused_connections_after_kill": down,
    }


def _refuses(url: str) -> bool:
    """Whether nothing listens at ``url`` any more (checked for up to a second)."""
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        try:
            httpx.get(f"{url}/livez", timeout=0.2)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def throughput(
    cluster: topology.Cluster, script: Path, seconds: int, connections: int, runs: int
) -> dict[str, Any]:
    """``wrk`` through HAProxy to both replicas, to replica A alone, and to A directly; alternated rounds."""
    targets = {
        "haproxy_two_replicas": cluster.lb_url,
        "haproxy_one_replica": f"http://{topology.address('lb')}:{ONE_REPLICA_PORT}",
        "direct_one_replica": cluster.replica_url("replica-a"),
    }
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(runs):
        for name, url in targets.items():
            _wrk(url, script, 2, connections)
            rounds[name].append(_wrk(url, script, seconds, connections))
    result: dict[str, Any] = {}
    for name, measured in rounds.items():
        rps, p99 = [m["rps"] for m in measured], [m["p99_ms"] for m in measured]
        result[name] = {
            "rps_median": statistics.median(rps),
            "rps_range": [min(rps), max(rps)],
            "p99_ms_median": statistics.median(p99),
            "p99_ms_range": [min(p99), max(p99)],
            "non_2xx": sum(m["non_2xx"] for m in measured),
        }
    result["ratio_two_to_one"] = round(
        result["haproxy_two_replicas"]["rps_median"] / result["haproxy_one_replica"]["rps_median"], 3
    )
    return result


def _wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    return parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def _summary(delays: list[float]) -> dict[str, Any]:
    ms = sorted(d * 1e3 for d in delays)
    return {
        "changes": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
    }


def _challenger(cluster: topology.Cluster, champion: str) -> str:
    """A challenger in the cluster's registry and exchange: the champion's files under a new tag."""
    import shutil

    from recsys.registry import exchange as model_exchange
    from recsys.registry.store import add_model

    worker_home = cluster.home("worker") / "bentoml"
    info = registry.get_model(champion, worker_home)
    staging = Path(tempfile.mkdtemp())
    shutil.copytree(info.path, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.yaml"))
    tag = add_model(staging, info.metadata, worker_home)
    shutil.rmtree(staging)
    model_exchange.push(tag, cluster.exchange, worker_home)
    return tag


def _one_replica_frontend(cluster: topology.Cluster) -> None:
    """Add a frontend that sends everything to replica A, and restart HAProxy with it."""
    config = cluster.home("lb") / "haproxy.cfg"
    server = f"server replica-a {topology.address('replica-a')}:{topology.SERVICE_PORT} check inter 500ms"
    config.write_text(
        topology.haproxy_config()
        + f"\nfrontend one\n    bind {topology.address('lb')}:{ONE_REPLICA_PORT}\n    default_backend one\n\n"
        + f"backend one\n    option httpchk GET /readyz\n    {server}\n",
        encoding="utf-8",
    )
    cluster.kill("lb/haproxy", 15)
    time.sleep(1.0)
    cluster.spawn("lb", "haproxy", ["haproxy", "-W", "-db", "-f", str(config)])
    topology.wait_for(lambda: topology.answers(f"{cluster.lb_url}/readyz"), "HAProxy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    home = registry.bentoml_home()
    champion = registry.champion(home)
    if champion is None:
        print(f"bench-cluster: no champion in {home}: `make run` first", file=sys.stderr)
        return 2
    artifact = registry.load_artifact(champion.tag, home=home)
    users, items = artifact.user_ids[:1000], artifact.item_ids[:200]
    root = Path(tempfile.mkdtemp(prefix="recsys-bench-cluster-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="recsys-bench-cluster-work-"))
    bodies = work / "bodies.txt"
    bodies.write_text("\n".join(json.dumps({"user_id": u, "k": 10}) for u in users) + "\n", encoding="utf-8")
    script = work / "recommend.lua"
    results: dict[str, Any] = {"champion": champion.tag}
    with topology.running(root, Path.cwd(), evaluation=False) as cluster:
        # The cluster draws its own client token.
        script.write_text((_LUA % bodies).replace(CLIENT_TOKEN, cluster.client_token), encoding="utf-8")
        started = time.perf_counter()
        topology.seed(cluster, home)
        for host in topology.REPLICAS:
            topology.wait_for(partial(topology.answers, f"{cluster.replica_url(host)}/readyz"), host)
        results["first_champion_ready_s"] = round(time.perf_counter() - started, 1)
        challenger = _challenger(cluster, champion.tag)
        results["experiment_delay"] = experiments(cluster, challenger, min(20, args.changes))
        results["dislike_delay"] = coordination(cluster, users[:50], args.changes)
        results["failover"] = failover(cluster, users, items, per_s=100.0)
        _one_replica_frontend(cluster)
        results["throughput"] = throughput(cluster, script, args.seconds, args.connections, args.runs)
    results["settings"] = {"seconds": args.seconds, "connections": args.connections, "runs": args.runs}
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
