"""The cluster's hosts: their addresses and folders, and how a process is run on one (``Cluster``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError, RecsysError
from recsys.project import VENV_BIN

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
BIN = VENV_BIN
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


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
        """Start a long-running process on ``host`` in its own session, in the host's own folder (the worker
        host's: the project checkout)."""
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
                cwd=self.project if host == "worker" else self.home(host),
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


def _tree(pid: int) -> list[Any]:
    """The process ``pid`` and every process it started (none when it is gone)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
