"""The reference topology on several hosts, built on one machine from network namespaces.

``recsys cluster up`` (root: it makes namespaces) starts, each on a host of its own (a network namespace
with its own address, reached over a bridge, with its own folders and processes):

====================  =============  ================================================================
host                  address        runs
====================  =============  ================================================================
``db``                10.231.0.10    PostgreSQL: the feedback store and the announcements every replica
                                     follows (:mod:`recsys.loop.feedback_announcements`)
``control``           10.231.0.20    the Prefect server (API and UI on port 4200)
``worker``            10.231.0.21    a Prefect process worker of the ``recsys-process`` pool: the
                                     project's deployments run here; its BentoML store is the registry
``replica-a``, ``-b`` 10.231.0.31-32 the BentoML service, one worker each, its own store and runtime
``lb``                10.231.0.40    HAProxy on port 8080: round robin over the replicas' ``/readyz``
``eval``              10.231.0.50    a Dask scheduler (port 8786) and two workers: sharded evaluation
====================  =============  ================================================================

The hosts share one disk, so nothing passes between them through a folder except the **model exchange**
(``shared/exchange``), which stands for the volume every host mounts in the documented deployment
(``docs/deployment.md``): promoted models are exported there and imported by the replicas. The project
checkout is the worker host's. ``recsys cluster down`` stops every process and removes the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from recsys.errors import ConfigError, RecsysError

SUBNET = "10.231.0"
BRIDGE = "rsbr0"
GATEWAY = f"{SUBNET}.1"
HOSTS: dict[str, int] = {
    "db": 10,
    "control": 20,
    "worker": 21,
    "replica-a": 31,
    "replica-b": 32,
    "lb": 40,
    "eval": 50,
}
REPLICAS = ("replica-a", "replica-b")
PG_PORT, PREFECT_PORT, SERVICE_PORT, LB_PORT, DASK_PORT = 5432, 4200, 3000, 8080, 8786
POOL = "recsys-process"
STATE_FILE = "cluster.json"
START_TIMEOUT_S = 180.0
BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def address(host: str) -> str:
    """The host's address on the cluster's network."""
    return f"{SUBNET}.{HOSTS[host]}"


def namespace(host: str) -> str:
    """The host's network namespace."""
    return f"rs-{host}"


@dataclass
class Cluster:
    """A running topology: its folder, addresses, secrets and process ids (``cluster.json``)."""

    root: Path
    project: Path
    feedback_url: str = ""
    admin_token: str = ""
    client_token: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def exchange(self) -> Path:
        """The model exchange: the one folder the hosts share (a mounted volume in production)."""
        return self.root / "shared" / "exchange"

    @property
    def prefect_api(self) -> str:
        """The Prefect server's API."""
        return f"http://{address('control')}:{PREFECT_PORT}/api"

    @property
    def lb_url(self) -> str:
        """The load balancer, as clients reach the service."""
        return f"http://{address('lb')}:{LB_PORT}"

    @property
    def dask_address(self) -> str:
        """The Dask scheduler."""
        return f"tcp://{address('eval')}:{DASK_PORT}"

    def replica_url(self, host: str) -> str:
        """One replica, directly."""
        return f"http://{address(host)}:{SERVICE_PORT}"

    def home(self, host: str) -> Path:
        """The host's own folder (its model store, runtime folder, Prefect home, logs)."""
        return self.root / "hosts" / host

    def log(self, host: str, process: str) -> Path:
        """Where a process of ``host`` writes its output."""
        return self.home(host) / f"{process}.log"

    def save(self) -> None:
        """Write ``cluster.json`` (mode 600: it holds the database password and the tokens)."""
        state = {
            "project": str(self.project),
            "feedback_url": self.feedback_url,
            "admin_token": self.admin_token,
            "client_token": self.client_token,
            "pids": self.pids,
        }
        path = self.root / STATE_FILE
        path.touch(mode=0o600)
        path.write_text(json.dumps(state, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, root: Path) -> Cluster:
        """The cluster whose state is in ``root``."""
        path = root / STATE_FILE
        if not path.exists():
            raise ConfigError(
                f"no cluster in {root} ({STATE_FILE} missing): start one with `recsys cluster up`"
            )
        state = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            root,
            Path(state["project"]),
            state["feedback_url"],
            state["admin_token"],
            state["client_token"],
            {key: int(value) for key, value in state["pids"].items()},
        )

    def host_env(self, host: str) -> dict[str, str]:
        """The environment of the project's processes on ``host``: its own folders, the shared store."""
        home = self.home(host)
        return {
            "BENTOML_HOME": str(home / "bentoml"),
            "PREFECT_HOME": str(home / "prefect"),
            "RECSYS_RUNTIME_DIR": str(home / "runtime"),
            "RECSYS_FEEDBACK_URL": self.feedback_url,
            "RECSYS_MODEL_EXCHANGE": str(self.exchange),
            "RECSYS_ADMIN_TOKEN": self.admin_token,
            "RECSYS_CLIENT_TOKENS": self.client_token,
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "BENTOML_DO_NOT_TRACK": "true",
            "DVC_NO_ANALYTICS": "1",
            "PYTHONHASHSEED": "0",
        }

    def run(self, host: str, args: list[str], env: Mapping[str, str] | None = None, **kwargs: Any) -> str:
        """Run a command on ``host`` to completion: its output (a :class:`RecsysError` when it fails)."""
        full = {**os.environ, **self.host_env(host), **(env or {})}
        result = subprocess.run(
            ["ip", "netns", "exec", namespace(host), *args],
            env=full,
            capture_output=True,
            text=True,
            check=False,
            **kwargs,
        )
        if result.returncode != 0:
            raise RecsysError(
                f"{host}: {' '.join(args[:4])} failed ({result.returncode}): {result.stderr[-2000:]}"
            )
        return result.stdout

    def spawn(self, host: str, process: str, args: list[str], env: Mapping[str, str] | None = None) -> int:
        """Start a long-running process on ``host`` in its own session (so it can be killed whole)."""
        self.home(host).mkdir(parents=True, exist_ok=True)
        full = {**os.environ, **self.host_env(host), **(env or {})}
        with open(self.log(host, process), "ab") as log:
            child = subprocess.Popen(
                ["ip", "netns", "exec", namespace(host), *args],
                env=full,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.project,
            )
        self.pids[f"{host}/{process}"] = child.pid
        self.save()
        return child.pid

    def kill(self, key: str, sig: int = signal.SIGTERM) -> None:
        """Signal ``host/process`` and every process it started: BentoML's and Dask's workers run in
        sessions of their own, so signalling the process group alone would leave them serving."""
        import psutil

        pid = self.pids.get(key)
        if pid is None:
            return
        try:
            parent = psutil.Process(pid)
            tree = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                process.send_signal(sig)


def preflight() -> None:
    """Refuse before changing anything when the machine cannot host the topology.

    Raises
    ------
    ConfigError
        Not root, or ``ip``, ``haproxy`` or the PostgreSQL server missing.
    """
    if os.geteuid() != 0:
        raise ConfigError("the cluster makes network namespaces: run it as root (CI is)")
    for tool, package in (("ip", "iproute2"), ("haproxy", "haproxy")):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is missing: apt-get install -y {package} (make cluster-up does)")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    if namespace("db") in listed.split():
        raise ConfigError(
            "a cluster already runs on this machine (namespace rs-db exists; they share fixed addresses): "
            "`recsys cluster down --dir <its folder>` first (any folder also removes stale namespaces)"
        )
    found = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "postgres.sh"), "bindir"], capture_output=True
    )
    if found.returncode != 0:
        raise ConfigError("the PostgreSQL server is missing: scripts/postgres.sh install")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def make_network() -> None:
    """The bridge and one namespace per host, each with its address and loopback."""
    remove_network()
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for host in HOSTS:
        ns, outside, inside = namespace(host), f"rs{HOSTS[host]}h", f"rs{HOSTS[host]}c"
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", BRIDGE)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{address(host)}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", GATEWAY)


def remove_network() -> None:
    """Delete the namespaces and the bridge (the veth pairs go with them); what is missing is skipped."""
    for host in HOSTS:
        _ip("netns", "delete", namespace(host), check=False)
        _ip("link", "delete", f"rs{HOSTS[host]}h", check=False)
    _ip("link", "delete", BRIDGE, check=False)


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
    (``PREFECT_API_URL``), with the schedules of :mod:`flows.deployments`; the worker runs them from the
    project folder. (``prefect deploy --all`` and ``Flow.deploy`` of this Prefect version fail against its
    own server, a 422 on the workers filter they read after registering, so ``to_deployment().apply()``.)"""
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

    from flows.deployments import FEEDBACK_CRON, FEEDBACK_DEPLOYMENT, NIGHTLY_CRON, TRAINING_DEPLOYMENT

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


def up(
    root: Path, project: Path, evaluation: bool = True, worker_env: Mapping[str, str] | None = None
) -> Cluster:
    """Build the network and start every host's processes; returns once each answers (the replicas are
    up, but ready only once a champion is announced: ``recsys cluster publish`` or a training run).

    Raises
    ------
    ConfigError
        Before anything is changed, when the machine cannot host the topology.
    RecsysError
        A process did not come up (its log is named); what started is stopped again.
    """
    preflight()
    root = root.resolve()
    if (root / STATE_FILE).exists():
        raise ConfigError(f"a cluster already runs from {root}: `recsys cluster down --dir {root}` first")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # the postgres OS user reaches its data folder below
    cluster = Cluster(root, project.resolve(), admin_token=secrets.token_urlsafe(24))
    cluster.client_token = secrets.token_urlsafe(24)
    for host in HOSTS:
        cluster.home(host).mkdir(parents=True, exist_ok=True)
    cluster.exchange.mkdir(parents=True, exist_ok=True)
    cluster.save()
    try:
        make_network()
        start_database(cluster)
        start_control(cluster)
        for host in REPLICAS:
            start_replica(cluster, host)
        start_balancer(cluster)
        if evaluation:
            start_evaluation(cluster)
        wait_for(
            lambda: answers(f"{cluster.prefect_api}/health"),
            f"Prefect server ({cluster.log('control', 'prefect-server')})",
        )
        start_worker(cluster, worker_env)
        for host in REPLICAS:
            wait_for(
                partial(answers, f"{cluster.replica_url(host)}/livez"),
                f"{host} ({cluster.log(host, 'service')})",
            )
    except BaseException:
        down(root, remove=False)
        raise
    return cluster


def down(root: Path, remove: bool = True) -> None:
    """Stop every process of the cluster in ``root``, the database, and delete the namespaces (and, with
    ``remove``, the folder). Safe to run twice, and after a failed ``up``."""
    root = root.resolve()
    with contextlib.suppress(ConfigError):
        cluster = Cluster.load(root)
        trees = {key: _tree(pid) for key, pid in cluster.pids.items()}
        for key in cluster.pids:
            cluster.kill(key, signal.SIGTERM)
        import psutil

        _, alive = psutil.wait_procs([p for tree in trees.values() for p in tree], timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    folder = root / "hosts" / "db" / "pg"
    if (folder / "data").exists():
        subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / "postgres.sh"), "stop", "--dir", str(folder)],
            capture_output=True,
            check=False,
        )
    remove_network()
    if remove:
        shutil.rmtree(root, ignore_errors=True)


def _tree(pid: int) -> list[Any]:
    """The process ``pid`` and every process it started (none when it is gone)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@contextlib.contextmanager
def running(
    root: Path, project: Path, evaluation: bool = True, worker_env: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """:func:`up` for the block, :func:`down` after it whatever happens."""
    cluster = up(root, project, evaluation, worker_env)
    try:
        yield cluster
    finally:
        down(root)


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
    from recsys.loop.publishing import publish_champion
    from recsys.registry import exchange as model_exchange

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
