"""Scheduled and event-driven runs: nightly retraining and tuning, hourly monitoring, and feedback retraining
started by the monitoring flow's events (drift, popularity lift, enough new feedback) as well as nightly.

On one machine, ``python -m flows.deployments`` serves the four deployments with :func:`prefect.serve`
(the process runs the flows itself and must stay up; stop it with Ctrl-C). With a Prefect server and
a work pool, ``prefect deploy --all`` reads the same deployments from ``prefect.yaml`` instead.

Times are cron expressions in UTC.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.monitoring import monitoring_flow
from flows.retraining import retraining_flow
from flows.training import training_flow
from flows.tuning import search_flow
from recsys.schedules import (
    FEEDBACK_CRON,
    FEEDBACK_DEPLOYMENT,
    HOURLY_CRON,
    MONITORING_DEPLOYMENT,
    NIGHTLY_CRON,
    RETRAIN_DEBOUNCE_S,
    SEARCH_CRON,
    SEARCH_DEPLOYMENT,
    TRAINING_DEPLOYMENT,
)

__all__ = [
    "FEEDBACK_CRON",
    "FEEDBACK_DEPLOYMENT",
    "HOURLY_CRON",
    "MONITORING_DEPLOYMENT",
    "NIGHTLY_CRON",
    "RETRAIN_DEBOUNCE_S",
    "SEARCH_CRON",
    "SEARCH_DEPLOYMENT",
    "TRAINING_DEPLOYMENT",
    "build_deployments",
    "retraining_trigger",
    "serve_all",
]


def retraining_trigger() -> DeploymentEventTrigger:
    """The feedback retraining's trigger: any monitoring event of any data set's project, debounced."""
    from datetime import timedelta

    from recsys.monitoring.decisions import MONITORING_EVENTS

    return DeploymentEventTrigger(
        name="retrain-on-monitoring-events",
        match={"prefect.resource.id": "recsys.project.*"},
        expect=set(MONITORING_EVENTS),
        posture="Reactive",
        threshold=1,
        within=timedelta(seconds=RETRAIN_DEBOUNCE_S),
    )


def build_deployments(project_dir: str = ".", data_dir: str | None = None) -> list[RunnerDeployment]:
    """The nightly training, nightly feedback retraining, hourly monitoring and nightly tuning deployments.

    Not yet registered or served: :func:`serve_all` serves them; ``prefect.yaml`` declares the same.

    Parameters
    ----------
    project_dir : str
        The project root the flows run in.
    data_dir : str, optional
        Raw-data folder for the ingest stage (default: ``RECSYS_DATA_DIR`` of the serving process).
    """
    parameters = {"project_dir": project_dir, "data_dir": data_dir}
    return [
        _made(
            training_flow.to_deployment(
                name=TRAINING_DEPLOYMENT,
                cron=NIGHTLY_CRON,
                parameters=parameters,
                concurrency_limit=1,
                tags=["recsys", "training"],
                description="Retrain, evaluate, gate and package every night.",
            )
        ),
        _made(
            monitoring_flow.to_deployment(
                name=MONITORING_DEPLOYMENT,
                cron=HOURLY_CRON,
                parameters=parameters,
                concurrency_limit=1,
                tags=["recsys", "monitoring"],
                description="Refresh offline metrics, then Evidently drift and popularity bias, hourly.",
            )
        ),
        _made(
            retraining_flow.to_deployment(
                name=FEEDBACK_DEPLOYMENT,
                cron=FEEDBACK_CRON,
                # Add service_url (and admin_token_block, the name of a Prefect Secret block holding the admin
                # token, or RECSYS_ADMIN_TOKEN in the worker's environment) to reload a service after a
                # promotion.
                parameters={"project_dir": project_dir},
                concurrency_limit=1,
                triggers=[retraining_trigger()],
                tags=["recsys", "retraining"],
                description=(
                    "Fold the day's feedback into the champion (warm start), gate, promote, reload; run the "
                    "pending erasure jobs."
                ),
            )
        ),
        _made(
            search_flow.to_deployment(
                name=SEARCH_DEPLOYMENT,
                cron=SEARCH_CRON,
                parameters={"project_dir": project_dir},
                concurrency_limit=1,
                tags=["recsys", "tuning"],
                description="Tune every model on validation; the winners go to reports/tuning/ for review.",
            )
        ),
    ]


def _made(deployment: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment]) -> RunnerDeployment:
    # ``to_deployment`` is dispatched on the caller: from synchronous code it returns the deployment itself.
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError("build_deployments must be called from synchronous code")
    return deployment


def serve_all(project_dir: str = ".", data_dir: str | None = None) -> None:
    """Serve every schedule from this process until it is stopped (one-machine use)."""
    from prefect import serve

    serve(*build_deployments(project_dir, data_dir))


if __name__ == "__main__":
    serve_all()
