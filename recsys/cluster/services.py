"""What runs on each host: PostgreSQL, the Prefect server and worker, the replicas, HAProxy, Dask."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from recsys.cluster.hosts import (
    BIN,
    DASK_PORT,
    LB_PORT,
    PG_PORT,
    POOL,
    PREFECT_PORT,
    PROJECT_ROOT,
    REPLICAS,
    SERVICE_PORT,
    START_TIMEOUT_S,
    SUBNET,
    Cluster,
    address,
)
from recsys.errors import ConfigError, RecsysError


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``check`` until it holds; a :class:`RecsysError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise RecsysError(f"{what} not up within {timeout_s:g} s")


def answers(url: str, expect: int = 200) -> bool:
    """Whether ``url`` answers ``expect``."""
    return httpx.get(url, timeout=2.0).status_code == expect


def start_database(cluster: Cluster) -> None:
    """PostgreSQL on the db host, reachable from the cluster's network with a password."""
    folder = cluster.home("db") / "pg"
    url = cluster.run(
        "db",
        [
            "bash",
            str(PROJECT_ROOT / "scripts" / "postgres.sh"),
            "start",
            "--dir",
            str(folder),
            "--port",
            str(PG_PORT),
            "--listen",
            address("db"),
            "--allow",
            f"{SUBNET}.0/24",
            "--no-install",
        ],
    ).strip()
    cluster.feedback_url = url
    cluster.save()


def start_control(cluster: Cluster) -> None:
    """The Prefect server on the control host, then the work pool."""
    cluster.spawn(
        "control",
        "prefect-server",
        [str(BIN / "prefect"), "server", "start", "--host", address("control"), "--port", str(PREFECT_PORT)],
    )


def start_worker(cluster: Cluster, worker_env: Mapping[str, str] | None = None) -> None:
    """The work pool, the project's training and feedback retraining deployments (:func:`deploy`), and a
    process worker on the worker host that runs them in the project (with ``worker_env`` added)."""
    # The worker asks for scheduled runs every 2 s (Prefect's default is 10 s).
    env = {
        "RECSYS_PROJECT_DIR": str(cluster.project),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        **(worker_env or {}),
    }
    cluster.run(
        "worker", [str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"]
    )
    code = f"from recsys.cluster import deploy; deploy({str(cluster.project)!r})"
    cluster.run("worker", [sys.executable, "-c", code], env=env, cwd=cluster.project)
    cluster.spawn(
        "worker", "prefect-worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL], env=env
    )


def deploy(project: str) -> None:
    """Register the nightly training and feedback retraining deployments of ``project`` in the work pool
    (``PREFECT_API_URL``), with the schedules of :mod:`recsys.schedules`; the worker runs them from the
    project folder. (``prefect deploy --all`` and ``Flow.deploy`` of this Prefect version fail against its
    own server, a 422 on the workers filter they read after registering, so ``to_deployment().apply()``.)"""
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

    from recsys.schedules import FEEDBACK_CRON, FEEDBACK_DEPLOYMENT, NIGHTLY_CRON, TRAINING_DEPLOYMENT

    for entrypoint, name, cron in (
        ("flows/training.py:training_flow", TRAINING_DEPLOYMENT, NIGHTLY_CRON),
        ("flows/retraining.py:retraining_flow", FEEDBACK_DEPLOYMENT, FEEDBACK_CRON),
    ):
        source = Flow.from_source(source=project, entrypoint=entrypoint)
        assert isinstance(source, Flow)  # called from synchronous code
        deployment = source.to_deployment(
            name=name,
            work_pool_name=POOL,
            cron=cron,
            parameters={"project_dir": project},
            concurrency_limit=1,
        )
        assert isinstance(deployment, RunnerDeployment)  # called from synchronous code
        deployment.apply()


def start_replica(cluster: Cluster, host: str) -> None:
    """The BentoML service on ``host``, one worker (it loads the announced champion when there is one)."""
    (cluster.home(host) / "runtime").mkdir(mode=0o700, parents=True, exist_ok=True)
    cluster.spawn(
        host,
        "service",
        [
            str(BIN / "bentoml"),
            "serve",
            "recsys.serving.service:Recommender",
            "--host",
            address(host),
            "--port",
            str(SERVICE_PORT),
        ],
        env={"BENTOML_CONFIG_OPTIONS": "services.Recommender.workers=1"},
    )


def haproxy_config(replicas: tuple[str, ...] = REPLICAS) -> str:
    """HAProxy's configuration: round robin over the ready replicas; a request whose connection fails is
    sent to another (feedback is idempotent by ``event_id``, so a retried POST cannot count twice)."""
    servers = "\n".join(
        f"    server {host} {address(host)}:{SERVICE_PORT} check inter 500ms fall 2 rise 2"
        for host in replicas
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout

frontend service
    bind {address("lb")}:{LB_PORT}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


def start_balancer(cluster: Cluster, replicas: tuple[str, ...] = REPLICAS) -> None:
    """HAProxy on the lb host."""
    config = cluster.home("lb") / "haproxy.cfg"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(haproxy_config(replicas), encoding="utf-8")
    cluster.spawn("lb", "haproxy", ["haproxy", "-W", "-db", "-f", str(config)])


def start_evaluation(cluster: Cluster) -> None:
    """A Dask scheduler and two single-threaded workers on the eval host."""
    cluster.spawn(
        "eval",
        "dask-scheduler",
        [str(BIN / "dask"), "scheduler", "--host", address("eval"), "--port", str(DASK_PORT)],
    )
    for worker in ("dask-worker-1", "dask-worker-2"):
        cluster.spawn(
            "eval",
            worker,
            [str(BIN / "dask"), "worker", cluster.dask_address, "--nthreads", "1", "--host", address("eval")],
        )


def run_deployment(cluster: Cluster, deployment: str, timeout_s: float = 900.0) -> str:
    """Start a run of ``deployment`` (``flow/deployment``) through the Prefect server, as the scheduler or a
    trigger would, and wait for it (the worker host's worker picks it up); returns its final state's name.

    Raises
    ------
    RecsysError
        The run did not complete (its state and the worker's log are named).
    """
    code = (
        "from prefect.deployments import run_deployment\n"
        f"run = run_deployment({deployment!r}, timeout={timeout_s!r})\n"
        "print(run.state.type.value if run.state else 'UNKNOWN')"
    )
    state = cluster.run("control", [sys.executable, "-c", code]).strip().splitlines()[-1]
    if state != "COMPLETED":
        raise RecsysError(f"{deployment} ended {state}: see {cluster.log('worker', 'prefect-worker')}")
    return state


def seed(cluster: Cluster, home: Path) -> str:
    """Make the champion of the model store ``home`` (this checkout's, after ``make run``) the worker host's
    champion and publish it to every replica; returns its tag."""
    from recsys import registry
    from recsys.registry import exchange as model_exchange
    from recsys.registry.publishing import publish_champion

    champion = registry.champion(home)
    if champion is None:
        raise ConfigError(
            f"no champion in {home} to seed the cluster with: `make run` first, or run the training flow"
        )
    model_exchange.push(champion.tag, cluster.exchange, home)
    registry_home = cluster.home("worker") / "bentoml"
    model_exchange.pull(champion.tag, cluster.exchange, registry_home)
    registry.promote(champion.tag, registry_home)
    publish_champion(champion.tag, cluster.feedback_url, exchange=cluster.exchange, home=registry_home)
    return champion.tag
