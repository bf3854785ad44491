"""The experiment flow: measure the running online experiment and act on it.

``python -m flows.experiment`` (or ``recsys experiment decide``, or a scheduled deployment) reads the served
lists and feedback events from the feedback store, measures the latest experiment's challenger
(:func:`recsys.loop.experiment_report.experiment_report`), writes ``reports/experiment.json``, and:

- challenger wins: promotes it (it passed the offline gate when it was packaged as a candidate), stops the
  experiment and asks the service to reload (``POST /admin/reload``);
- challenger loses: stops the experiment; the champion stays;
- needs more traffic: changes nothing.

Wiring only: the measurement is the library's; the reload is the retraining flow's task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retraining import reload_service
from recsys.config import load_params
from recsys.io import write_json
from recsys.loop.experiment_report import LOSES, WINS, experiment_report
from recsys.loop.feedback import feedback_url as default_feedback_url
from recsys.paths import PARAMS_FILE, REPORTS_DIR

REPORT_FILE = REPORTS_DIR / "experiment.json"
TIMEOUT_S = 30.0


@task(name="measure-experiment", cache_policy=NO_CACHE)
def measure(project_dir: str, feedback_url: str, challenger: str | None) -> dict[str, Any]:
    """The experiment's report from the store's served lists and events; written to ``reports/``."""
    from recsys.loop.feedback import FeedbackStore

    params = load_params(Path(project_dir) / PARAMS_FILE)
    with FeedbackStore(feedback_url, create=False) as store:
        served, events = store.served_frame(), store.export_frame()
    report = experiment_report(served, events, params.experiment, challenger)
    write_json(Path(project_dir) / REPORT_FILE, report)
    create_markdown_artifact(
        f"**{report['decision']}** for `{report['challenger']}`: {report['reason']}",
        key="experiment-report",
        description="Online experiment",
    )
    return report


@task(name="promote-challenger", cache_policy=NO_CACHE)
def promote(tag: str) -> str:
    """Make the experiment's challenger the champion."""
    from recsys import registry

    registry.promote(tag)
    return tag


@task(name="stop-experiment", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def stop_experiment(service_url: str, admin_token: str | None) -> int:
    """``POST {service_url}/admin/experiment`` with mode off; fails on a 4xx/5xx answer."""
    headers = {"X-Admin-Token": admin_token} if admin_token else {}
    url = f"{service_url.rstrip('/')}/admin/experiment"
    answer = httpx.post(url, json={"mode": "off"}, headers=headers, timeout=TIMEOUT_S)
    answer.raise_for_status()
    return answer.status_code


@flow(name="experiment")
def experiment_flow(
    project_dir: str = ".",
    feedback_url: str | None = None,
    service_url: str | None = None,
    admin_token: str | None = None,
    challenger: str | None = None,
) -> dict[str, Any]:
    """Measure the experiment of ``challenger`` (default: the latest logged); promote or stop on a decision.

    Returns the report with ``action``: ``promoted``, ``stopped`` or ``none``.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    report = measure(str(root), feedback_url or default_feedback_url(root), challenger)
    action = "none"
    if report["decision"] == WINS and report["challenger"]:
        promote(report["challenger"])
        action = "promoted"
    elif report["decision"] == LOSES:
        action = "stopped"
    if action != "none" and service_url:
        stop_experiment(service_url, admin_token)
        if action == "promoted":
            reload_service(service_url, admin_token)
    logger.info("experiment of %s: %s -> %s", report["challenger"], report["decision"], action)
    return report | {"action": action}


if __name__ == "__main__":
    experiment_flow()
