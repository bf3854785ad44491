"""Starting and stopping the whole topology."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

from recsys.cluster.hosts import (
    HOSTS,
    PROJECT_ROOT,
    REPLICAS,
    STATE_FILE,
    Cluster,
    _tree,
)
from recsys.cluster.network import make_network, preflight, remove_network
from recsys.cluster.services import (
    answers,
    start_balancer,
    start_control,
    start_database,
    start_evaluation,
    start_replica,
    start_worker,
    wait_for,
)
from recsys.errors import ConfigError


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


@contextlib.contextmanager
def running(
    root: Path, project: Path, evaluation: bool = True, worker_env: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """:func:`up` for the block, :func:`down` after it whatever happens (the folder, with every host's logs,
    is kept when ``RECSYS_KEEP_CLUSTER=1``)."""
    cluster = up(root, project, evaluation, worker_env)
    try:
        yield cluster
    finally:
        down(root, remove=os.environ.get("RECSYS_KEEP_CLUSTER") != "1")
