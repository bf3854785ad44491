"""Event-driven retraining against a real Prefect server on loopback: injected drift -> exactly one run.

A Prefect server runs in its own process with its own home; the feedback retraining deployment (with the
trigger of :func:`flows.deployments.retraining_trigger`) is served by a second process; a third runs the
monitoring flow twice on a window whose feedback drifted (as :mod:`tests.flows.test_monitoring_flow` builds
it), so a burst of events (drift and new feedback, twice) reaches the server. The trigger must start the
retraining deployment once, not once per event.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.deployments import FEEDBACK_DEPLOYMENT
from tests.flows.test_monitoring_flow import feedback_store, make_project
from tests.helpers import PROJECT_ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:
        return subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    from benchmarks.serve import stop

    stop(process)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A Prefect server on a free loopback port; the environment that points clients at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "BENTOML_HOME": str(home / "bentoml"),
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    server = _start(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log"
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_for(healthy, timeout_s=120, interval_s=0.5), (home / "server.log").read_text()[-3000:]
        yield url, env
    finally:
        _stop(server)


def _triggered_runs(url: str) -> list[dict[str, Any]]:
    """Runs of the feedback retraining deployment that its schedule did not create."""
    deployments = httpx.post(f"{url}/deployments/filter", json={"limit": 50}, timeout=10).json()
    ids = [d["id"] for d in deployments if d["name"] == FEEDBACK_DEPLOYMENT]
    if not ids:
        return []
    body = {"flow_runs": {"deployment_id": {"any_": ids}}, "limit": 50}
    runs: list[dict[str, Any]] = httpx.post(f"{url}/flow_runs/filter", json=body, timeout=10).json()
    return [run for run in runs if not run["auto_scheduled"]]


def _automations(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.post(f"{url}/automations/filter", json={}, timeout=10).json()
    return found


def test_a_burst_of_drift_events_starts_exactly_one_retraining_run(
    prefect_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = prefect_server
    root = make_project(tmp_path / "project", min_new_feedback=100)
    store = feedback_store(tmp_path / "fb.db", rock_share=0.9, seed=1)  # drifted, and 400 new events
    serve_script = textwrap.dedent(
        f"""
        from prefect import serve
        from flows.deployments import FEEDBACK_DEPLOYMENT, build_deployments
        serve(next(d for d in build_deployments({str(root)!r}) if d.name == FEEDBACK_DEPLOYMENT))
        """
    )
    served = _start([sys.executable, "-c", serve_script], env, tmp_path / "serve.log")
    try:
        assert wait_for(
            lambda: any("retrain-on-monitoring" in a["name"] for a in _automations(url)), 90, 0.5
        ), (tmp_path / "serve.log").read_text()[-3000:]
        assert _triggered_runs(url) == []
        monitor_script = textwrap.dedent(
            f"""
            from datetime import datetime, timezone
            from flows.monitoring import drift_monitoring_flow
            now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
            for _ in range(2):
                result = drift_monitoring_flow(project_dir={str(root)!r}, feedback_url={store!r}, now=now)
                print("EMITTED", result["events_emitted"])
            """
        )
        monitored = subprocess.run(
            [sys.executable, "-c", monitor_script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert monitored.returncode == 0, monitored.stderr[-3000:]
        emitted = [line for line in monitored.stdout.splitlines() if line.startswith("EMITTED")]
        assert len(emitted) == 2 and all(
            "drift-detected" in line and "feedback.accumulated" in line for line in emitted
        )
        assert wait_for(lambda: len(_triggered_runs(url)) >= 1, timeout_s=90, interval_s=1.0)
        time.sleep(10)  # later events of the burst must not add runs
        runs = _triggered_runs(url)
        assert len(runs) == 1, [(r["name"], r["state_type"], r["created"]) for r in runs]
    finally:
        _stop(served)
