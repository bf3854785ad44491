"""The scheduled deployments: built for ``prefect.serve`` and declared in ``prefect.yaml``, in sync."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from flows.deployments import (
    FEEDBACK_CRON,
    FEEDBACK_DEPLOYMENT,
    HOURLY_CRON,
    MONITORING_DEPLOYMENT,
    NIGHTLY_CRON,
    SEARCH_CRON,
    SEARCH_DEPLOYMENT,
    TRAINING_DEPLOYMENT,
    build_deployments,
)
from flows.monitoring import monitoring_flow
from flows.retraining import retraining_flow
from flows.training import training_flow
from flows.tuning import search_flow
from tests.helpers import PROJECT_ROOT

EXPECTED = {
    TRAINING_DEPLOYMENT: ("flows/training.py:training_flow", NIGHTLY_CRON, training_flow.name),
    MONITORING_DEPLOYMENT: ("flows/monitoring.py:monitoring_flow", HOURLY_CRON, monitoring_flow.name),
    FEEDBACK_DEPLOYMENT: ("flows/retraining.py:retraining_flow", FEEDBACK_CRON, retraining_flow.name),
    SEARCH_DEPLOYMENT: ("flows/tuning.py:search_flow", SEARCH_CRON, search_flow.name),
}


def test_crons_are_nightly_and_hourly() -> None:
    assert (NIGHTLY_CRON, HOURLY_CRON) == ("0 2 * * *", "0 * * * *")


def test_served_deployments_have_their_schedules_and_entrypoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)  # entrypoints are relative to the working directory

    deployments = {d.name: d for d in build_deployments(project_dir="/srv/recsys", data_dir="/data")}

    assert set(deployments) == set(EXPECTED)
    for name, (entrypoint, cron, flow_name) in EXPECTED.items():
        deployment = deployments[name]
        assert deployment.entrypoint == entrypoint
        assert deployment.flow_name == flow_name
        assert [s.schedule.cron for s in deployment.schedules or []] == [cron]  # type: ignore[union-attr]
        expected = {"project_dir": "/srv/recsys"} | (
            {} if name in (FEEDBACK_DEPLOYMENT, SEARCH_DEPLOYMENT) else {"data_dir": "/data"}
        )
        assert deployment.parameters == expected
        assert deployment.concurrency_limit == 1


def _prefect_yaml() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return document


def test_prefect_yaml_declares_the_same_deployments() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    document = _prefect_yaml()
    PrefectYamlModel.model_validate(document)  # the schema `prefect deploy` reads
    declared = {entry["name"]: entry for entry in document["deployments"]}

    assert set(declared) == set(EXPECTED)
    for name, (entrypoint, cron, _) in EXPECTED.items():
        assert declared[name]["entrypoint"] == entrypoint
        assert [schedule["cron"] for schedule in declared[name]["schedules"]] == [cron]
        assert declared[name]["work_pool"]["name"]


@pytest.mark.parametrize(("entrypoint", "flow_name"), [(e, f) for e, _, f in EXPECTED.values()])
def test_entrypoints_load_the_flows(entrypoint: str, flow_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    assert load_flow_from_entrypoint(entrypoint).name == flow_name


def test_the_feedback_retraining_answers_monitoring_events_in_prefect_yaml_as_when_served() -> None:
    from prefect.events import DeploymentEventTrigger

    from flows.deployments import RETRAIN_DEBOUNCE_S, retraining_trigger
    from recsys.monitoring.decisions import MONITORING_EVENTS

    declared = {entry["name"]: entry for entry in _prefect_yaml()["deployments"]}
    assert all("triggers" not in declared[name] for name in EXPECTED if name != FEEDBACK_DEPLOYMENT)
    (yaml_trigger,) = declared[FEEDBACK_DEPLOYMENT]["triggers"]
    from_yaml = DeploymentEventTrigger.model_validate({k: v for k, v in yaml_trigger.items() if k != "type"})
    built = retraining_trigger()
    assert from_yaml.expect == built.expect == set(MONITORING_EVENTS)
    assert from_yaml.match == built.match and from_yaml.posture == built.posture == "Reactive"
    assert from_yaml.within.total_seconds() == built.within.total_seconds() == RETRAIN_DEBOUNCE_S > 0
    assert from_yaml.threshold == built.threshold == 1 and from_yaml.name == built.name
