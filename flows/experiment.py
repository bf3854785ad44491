"""The experiment flow: measure the running online experiment and act on it.

``python -m flows.experiment`` (or ``recsys experiment decide``, or a scheduled deployment) reads the served
lists and feedback events from the feedback store, measures the latest experiment's challenger
(:func:`recsys.experiments.report.experiment_report`), writes ``reports/experiment.json``, and:

- challenger wins: promotes it (it passed the offline gate when it was packaged as a candidate), under the
  project's run lock like every promotion (a retraining run in between could otherwise replace or delete
  what it just promoted), stops the experiment and asks the service to reload (``POST /admin/reload``);
- challenger loses: stops the experiment; the champion stays;
- needs more traffic: changes nothing.

Wiring only: the measurement is the library's; the calls to the service are :mod:`flows.service`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import dvc
from flows.service import reload_service, stop_experiment
from recsys.config import load_params
from recsys.experiments.report import LOSES, WINS, measure_experiment
from recsys.feedback.store import feedback_url as default_feedback_url
from recsys.paths import PARAMS_FILE, REPORTS_DIR

REPORT_FILE = REPORTS_DIR / "experiment.json"


@task(name="measure-experiment", cache_policy=NO_CACHE)
def measure(project_dir: str, feedback_url: str, challenger: str | None) -> dict[str, Any]:
    """The experiment's report from the store's served lists and events; written to ``reports/``."""
    params = load_params(Path(project_dir) / PARAMS_FILE)
    report = measure_experiment(feedback_url, params.experiment, challenger, Path(project_dir) / REPORT_FILE)
    create_markdown_artifact(
        f"**{report['decision']}** for `{report['challenger']}`: {report['reason']}",
        key="experiment-report",
        description="Online experiment",
    )
    return report


@task(name="promote-challenger", cache_policy=NO_CACHE)
def promote(project_dir: str, feedback_url: str, tag: str, lock_timeout_s: float) -> str:
    """Make the experiment's challenger the champion, under the project's run lock, and announce it to every
    replica."""
    from recsys import registry
    from recsys.registry.publishing import publish_champion

    with dvc.run_lock(Path(project_dir), lock_timeout_s):
        registry.promote(tag)
    publish_champion(tag, feedback_url, load_params(Path(project_dir) / PARAMS_FILE).dataset.name)
    return tag


@flow(name="experiment")
def experiment_flow(
    project_dir: str = ".",
    feedback_url: str | None = None,
    service_url: str | None = None,
    admin_token_block: str | None = None,
    challenger: str | None = None,
    lock_timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Measure the experiment of ``challenger`` (default: the latest logged); promote or stop on a decision.

    The admin token for the service calls comes from the Prefect ``Secret`` block ``admin_token_block``, else
    ``$RECSYS_ADMIN_TOKEN`` (:mod:`flows.service`); it is never a parameter. Returns the report with
    ``action``: ``promoted``, ``stopped`` or ``none``.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    url = feedback_url or default_feedback_url(root)
    report = measure(str(root), url, challenger)
    action = "none"
    if report["decision"] == WINS and report["challenger"]:
        promote(str(root), url, report["challenger"], lock_timeout_s)
        action = "promoted"
    elif report["decision"] == LOSES:
        action = "stopped"
    if action != "none" and service_url:
        stop_experiment(service_url, admin_token_block)
        if action == "promoted":
            reload_service(service_url, admin_token_block)
    logger.info("experiment of %s: %s -> %s", report["challenger"], report["decision"], action)
    return report | {"action": action}


if __name__ == "__main__":
    experiment_flow()
