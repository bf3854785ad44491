"""The experiment flow and ``recsys experiment``: a real SQLite store measured, a real registry acted on."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.dvc import apply_overrides
from flows.experiment import experiment_flow
from recsys import registry
from recsys.cli.main import app
from recsys.experiments.design import CHALLENGER_ARM, CHAMPION_ARM, arm_of
from recsys.experiments.report import LOSES, WINS
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import ServedRecommendation
from tests.helpers import PROJECT_ROOT, build_project

pytestmark = pytest.mark.slow
T0 = datetime(2026, 12, 1, tzinfo=UTC)
SALT = "test-salt"


def _log_ab(store: FeedbackStore, champion: str, challenger: str, like: dict[str, float], seed: int) -> None:
    """400 listeners in an A/B test (half each way); a listener likes the first item with ``like[arm]``."""
    rng = np.random.default_rng(seed)
    served, events = [], []
    for n in range(400):
        user = f"listener-{seed}-{n}"  # not the tag: a random tag would reshuffle the arms each run
        arm = arm_of(user, SALT, 0.5)
        version = challenger if arm == CHALLENGER_ARM else champion
        when = T0 + timedelta(minutes=n)
        served.append(
            ServedRecommendation(
                when, user, "recommend", version, False, ("a", "b", "c"), 0.0, arm, None, challenger
            )
        )
        if rng.random() < like[arm]:
            events.append(
                FeedbackEvent(
                    user_id=user,
                    item_id="a",
                    event="like",
                    timestamp=when + timedelta(minutes=5),
                    event_id=f"{challenger}-{n}",
                    arm=arm,
                )
            )
    store.add_served(served)
    store.add_events(events)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, list[str]]:
    """A project folder with params, a promoted champion and two candidates in a private model store."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    built = build_project(tmp_path / "data")
    champion = built.save(0.2, home)
    registry.promote(champion, home=home)
    candidates = [built.save(0.3, home), built.save(0.25, home)]
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", {"experiment.min_units": 50, "experiment.salt": SALT})
    return tmp_path, champion, candidates


def test_a_winning_challenger_is_promoted_and_a_losing_one_is_stopped(
    prefect_harness: None, project: tuple[Path, str, list[str]]
) -> None:
    root, champion, (better, worse) = project
    url = f"sqlite:///{root / 'feedback.db'}"
    with FeedbackStore(url) as store:
        _log_ab(store, champion, worse, {CHAMPION_ARM: 0.4, CHALLENGER_ARM: 0.15}, seed=1)
    lost = experiment_flow(project_dir=str(root), feedback_url=url)
    assert lost["challenger"] == worse and lost["decision"] == LOSES and lost["action"] == "stopped"
    assert registry.champion().tag == champion
    with FeedbackStore(url) as store:
        _log_ab(store, champion, better, {CHAMPION_ARM: 0.2, CHALLENGER_ARM: 0.5}, seed=2)
    won = experiment_flow(project_dir=str(root), feedback_url=url)  # the latest experiment: the better one
    assert won["challenger"] == better and won["decision"] == WINS and won["action"] == "promoted"
    difference = won["ab"]["difference"]["hit_rate"]
    assert difference["low"] > 0 and difference["value"] == pytest.approx(0.3, abs=0.1)
    assert registry.champion().tag == better
    assert json.loads((root / "reports/experiment.json").read_text())["challenger"] == better


def test_the_command_line_reports_an_experiment_and_refuses_an_empty_ab_arm(
    project: tuple[Path, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, champion, (better, _) = project
    url = f"sqlite:///{root / 'feedback.db'}"
    with FeedbackStore(url) as store:
        _log_ab(store, champion, better, {CHAMPION_ARM: 0.3, CHALLENGER_ARM: 0.3}, seed=3)
    monkeypatch.chdir(root)
    runner = CliRunner()
    out = root / "report.json"
    answer = runner.invoke(app, ["experiment", "report", "--feedback-url", url, "--out", str(out)])
    assert answer.exit_code == 0, answer.output
    report = json.loads(out.read_text())
    assert report["challenger"] == better and report["lists"] == {
        CHAMPION_ARM: report["lists"][CHAMPION_ARM],
        CHALLENGER_ARM: report["lists"][CHALLENGER_ARM],
    }
    assert sum(report["lists"].values()) == 400 and report["decision"] == "needs more traffic"
    assert 0.2 < report["ab"][CHALLENGER_ARM]["hit_rate"]["value"] < 0.4
    refused = runner.invoke(app, ["experiment", "start", "--mode", "ab", "--challenger", better])
    assert refused.exit_code == 2 and "share" in refused.output


def package_step(
    root: Path, promote: bool, champion: str, ndcg: float
) -> Callable[[bool], tuple[str | None, str | None]]:
    """The training flow's package task alone, as a flow, on a gate decision with this verdict and score."""
    from prefect import flow

    from flows.training import package
    from recsys.offline.gate import GateDecision
    from recsys.registry.comparison import RunGate

    shutil.copytree(root / "data" / "models", root / "models")
    challenger = {"metrics": {"ndcg@10": ndcg}, "groups": {}}
    verdict = RunGate(GateDecision(promote), challenger, champion, "recorded", 0.0, "ndcg@10")

    @flow
    def package_only(candidate: bool) -> tuple[str | None, str | None]:
        return package(str(root), verdict, candidate)

    return package_only


def test_gate_online_required_packages_an_offline_winner_as_a_candidate_only(
    prefect_harness: None, project: tuple[Path, str, list[str]]
) -> None:
    """The training flow's package step: the champion stays until an experiment decides."""
    root, champion, _ = project
    package_only = package_step(root, promote=True, champion=champion, ndcg=0.4)
    apply_overrides(root / "params.yaml", {"gate.online": "required"})
    kept, candidate = package_only(False)
    assert kept == champion == registry.champion().tag
    assert candidate is not None and candidate != champion
    assert registry.load_artifact(candidate).metadata["metrics"]["ndcg@10"] == 0.4
    apply_overrides(root / "params.yaml", {"gate.online": "off"})
    promoted, none = package_only(False)
    assert none is None and promoted == registry.champion().tag != champion


def test_a_candidate_run_packages_a_challenger_the_offline_gate_kept_out_and_promotes_nothing(
    prefect_harness: None, project: tuple[Path, str, list[str]]
) -> None:
    """`recsys run --candidate`: a model the held-out history does not favour still reaches listeners."""
    root, champion, _ = project
    package_only = package_step(root, promote=False, champion=champion, ndcg=0.1)

    before = {info.tag for info in registry.list_models()}
    assert package_only(False) == (champion, None)  # the gate said no: nothing packaged
    assert {info.tag for info in registry.list_models()} == before
    kept, candidate = package_only(True)
    assert kept == champion == registry.champion().tag
    assert candidate is not None and candidate not in before
    assert registry.get_model(candidate).stage == "candidate"
    assert registry.load_artifact(candidate).metadata["metrics"]["ndcg@10"] == 0.1


def test_every_promotion_waits_for_the_projects_run_lock(
    prefect_harness: None, project: tuple[Path, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retraining run holds the lock from reading the champion to deleting erased versions: a promotion
    by the experiment flow or by hand in between could be undone or leave no champion, so it waits."""
    from flows.experiment import promote
    from recsys.cli import registry as registry_cli
    from recsys.run_lock import LockBusyError, run_lock

    root, champion, (better, worse) = project
    monkeypatch.chdir(root)
    monkeypatch.setattr(registry_cli, "PROMOTION_LOCK_TIMEOUT_S", 0.5)
    with run_lock(root, timeout_s=5):  # a retraining run in progress
        with pytest.raises(LockBusyError, match="another run holds the lock"):
            promote.fn(str(root), _store_url(root), better, lock_timeout_s=0.5)
        by_hand = CliRunner().invoke(app, ["model", "promote", worse])
        assert by_hand.exit_code == 2 and "another run holds the lock" in by_hand.output
        rolled = CliRunner().invoke(app, ["model", "rollback"])
        assert rolled.exit_code == 2 and "another run holds the lock" in rolled.output
        assert registry.champion().tag == champion
    assert promote.fn(str(root), _store_url(root), better, lock_timeout_s=0.5) == better
    assert registry.champion().tag == better


def _store_url(root: Path) -> str:
    return f"sqlite:///{root / 'data' / 'feedback' / 'feedback.db'}"
