"""The training flow end to end: real ``dvc repro`` of every stage in a tiny temporary project.

The first run (trains, promotes) happens once per module (:func:`first_run`); every other test works on
its own copy of the project and model store after it (:func:`trained`): no-change rerun (skips, keeps),
concurrent runs (the lock), failing stage then resumed rerun, a worse configuration refused. The tests
pass alone and in any order.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.states import State
from typer.testing import CliRunner

from flows.dvc import LOCK_NAME, LockBusyError, StageFailedError
from flows.monitoring import monitoring_flow
from flows.training import dvc_stage, training_flow
from recsys import registry
from recsys.cli.main import app
from recsys.models.ranker import TwoStageRanker
from recsys.reporting.card_sections import results_section
from recsys.reporting.formatting import load_offline
from recsys.reporting.run_summary import summary_table
from recsys.specs import HYBRID, MODEL_NAMES, RANKER
from tests.helpers import PROJECT_ROOT, TINY_OVERRIDES, TinyProject, init_repo, make_tiny_project, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

ALL_MODELS = set(MODEL_NAMES)


def run(project: TinyProject, **kwargs: Any) -> State[Any]:
    """One training flow run on the tiny project (no retry delay), returning its final state."""
    options: dict[str, Any] = {"retry_delay_s": 0.0, "lock_timeout_s": 600.0} | kwargs
    state: State[Any] = training_flow(
        data_dir=str(project.raw), project_dir=str(project.root), return_state=True, **options
    )
    return state


def flow_run_id(state: State[Any]) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def artifact_of(state: State[Any], key: str) -> dict[str, Any] | None:
    """The artifact with ``key`` that this flow run (or one of its tasks) made, if any."""
    body = {
        "artifacts": {"flow_run_id": {"any_": [str(flow_run_id(state))]}, "key": {"any_": [key]}},
        "limit": 10,
        "offset": 0,
        "sort": "CREATED_DESC",
    }
    with get_client(sync_client=True) as client:
        # Not client.read_artifacts / Artifact.get: in Prefect 3.8.8 they send every omitted option
        # as null, which the server refuses (422).
        found: list[dict[str, Any]] = client.request("POST", "/artifacts/filter", json=body).json()
    return found[0] if found else None


def log_lines(state: State[Any], page: int = 200) -> list[str]:
    """Messages of the flow run's logs (its tasks' included), oldest first."""
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send the queued logs before reading them back
    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id(state)]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=run_filter, limit=page, offset=len(messages))
            messages += [log.message for log in logs]
            if len(logs) < page:
                return messages


def mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.iterdir())}


def champion_tag() -> str | None:
    found = registry.champion()
    return found.tag if found else None


@dataclass(frozen=True)
class FirstRun:
    """The module's first training run: its project, its model store and its final state."""

    project: TinyProject
    home: Path
    state: State[Any]


@pytest.fixture(scope="module")
def first_run(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    """A tiny project trained, evaluated, gated and packaged once, into a model store of its own."""
    base = tmp_path_factory.mktemp("first-run")
    project, home = make_tiny_project(base / "project"), base / "bentoml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(home))
        state = run(project, params_overrides=TINY_OVERRIDES)
    return FirstRun(project, home, state)


@pytest.fixture
def trained(first_run: FirstRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyProject:
    """A copy of the project and the model store after the first run: each test changes only its own."""
    assert first_run.state.is_completed(), first_run.state.message
    root, home = tmp_path / "project", tmp_path / "bentoml"
    shutil.copytree(first_run.project.root, root, symlinks=True)
    shutil.copytree(first_run.home, home, symlinks=True)
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return TinyProject(root, root / first_run.project.raw.relative_to(first_run.project.root))


def test_first_run_trains_evaluates_and_promotes(
    first_run: FirstRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(first_run.home))
    tiny_project, state = first_run.project, first_run.state

    assert state.is_completed(), state.message
    summary = state.result()
    assert set(summary["stages"].values()) == {"ran"}
    assert [row["model"] for row in summary["metrics"]] and {
        r["model"] for r in summary["metrics"]
    } == ALL_MODELS
    report = json.loads((tiny_project.root / "metrics/offline.json").read_text(encoding="utf-8"))
    assert set(report["models"]) == ALL_MODELS
    # The overrides went through params.yaml, so dvc.lock records what the train stage ran with.
    lock = yaml.safe_load((tiny_project.root / "dvc.lock").read_text(encoding="utf-8"))
    assert lock["stages"]["train"]["params"]["params.yaml"]["train.lightfm"]["epochs"] == 3
    assert summary["overrides"] == TINY_OVERRIDES
    assert summary["decision"]["promote"] and summary["decision"]["champion_tag"] is None
    assert summary["model_tag"] == champion_tag() is not None
    served = summary["decision"]["served"]  # what listeners get, as the summary's "served:" line says it
    assert isinstance(served["ndcg@10"], float) and served["strength"] >= 0
    assert "packaged: " in summary_table(summary | {"reports": {}})
    # The packaged champion is traceable to this run's dvc.lock and metrics.
    packaged = registry.champion()
    assert packaged is not None
    assert packaged.metadata["dvc_lock_hash"] == registry.dvc_lock_hash(tiny_project.root / "dvc.lock")
    # Packaged with the mitigation the bias stage's rule chose (none, popularity re-ranking at its strength,
    # or calibration), its metrics measured with it: what the gate compared is what the service serves.
    bias = json.loads((tiny_project.root / "metrics/bias.json").read_text(encoding="utf-8"))
    mitigation = bias["mitigation"]
    if mitigation["served"] == "calibration":
        measured = mitigation["served_metrics"]["metrics"]
        assert packaged.metadata["bias_strength"] == 0.0
        assert packaged.metadata["calibration"] == mitigation["calibration"]
    else:
        chosen = mitigation["strength"]
        measured = next(row for row in bias["strengths"] if row["strength"] == chosen)
        assert packaged.metadata["bias_strength"] == chosen and not packaged.metadata["calibration"]
        if chosen == 0:
            unmitigated = report["models"]["lightfm_hybrid"]["ndcg@10"]
            assert packaged.metrics["ndcg@10"] == pytest.approx(unmitigated)
    assert packaged.metrics["ndcg@10"] == pytest.approx(measured["ndcg@10"])
    assert packaged.metrics["recall@10"] == pytest.approx(measured["recall@10"])
    assert packaged.metadata["params"]["train"]["search"]["n_trials"] == 2
    assert Path(summary["reports"]["eda"]).name == "eda.html"
    # The run rewrote the model card from its own metrics: card and metrics/ agree on any machine.
    card = Path(summary["reports"]["model_card"])
    assert card.parent == tiny_project.root / "docs"
    assert results_section(load_offline(tiny_project.root / "metrics"), 10) in card.read_text(
        encoding="utf-8"
    )

    keys = ("offline-metrics", "eda-report", "metrics-report", "model-card", "training-reports")
    for key in (*keys, "gate-decision"):
        assert artifact_of(state, key) is not None, key
    table = artifact_of(state, "offline-metrics") or {}
    assert "lightfm_hybrid" in str(table["data"]) and "ndcg@10" in str(table["data"])
    assert "promote the challenger" in str((artifact_of(state, "gate-decision") or {})["data"])
    messages = log_lines(state)
    assert any("[train] Running stage 'train'" in message for message in messages)
    assert any(message.startswith("training finished") for message in messages)
    assert any("skipping bentoml build" in message for message in messages)


def test_no_change_rerun_skips_every_stage_and_keeps_the_champion(trained: TinyProject) -> None:
    tiny_project = trained
    models_before, champion_before = mtimes(tiny_project.root / "models"), champion_tag()

    state = run(tiny_project)

    assert state.is_completed(), state.message
    summary = state.result()
    assert set(summary["stages"].values()) == {"skipped"}
    assert mtimes(tiny_project.root / "models") == models_before
    assert not summary["decision"]["promote"]
    assert any("does not improve" in reason for reason in summary["decision"]["reasons"])
    assert summary["model_tag"] == champion_before == champion_tag()
    assert len(registry.list_models()) == 1  # a kept challenger is not saved


def test_monitoring_refreshes_and_publishes_the_metrics(trained: TinyProject) -> None:
    tiny_project = trained
    state: State[Any] = monitoring_flow(project_dir=str(tiny_project.root), return_state=True)

    assert state.is_completed(), state.message
    rows = state.result()
    assert {row["model"] for row in rows} == ALL_MODELS
    assert artifact_of(state, "monitoring-metrics") is not None
    assert any("evaluate skipped" in message for message in log_lines(state))
    # No feedback store yet: the drift report records an empty window and triggers nothing.
    drift = json.loads((tiny_project.root / "reports/monitoring/drift.json").read_text(encoding="utf-8"))
    assert drift["n_events"] == 0 and not drift["decision"]["triggered"]


def test_a_concurrent_run_fails_naming_the_lock(trained: TinyProject) -> None:
    tiny_project = trained
    from filelock import FileLock, Timeout

    first: dict[str, State[Any]] = {}
    runner = threading.Thread(target=lambda: first.setdefault("state", run(tiny_project)))
    runner.start()
    try:
        wait_until(lambda: _held(FileLock(str(tiny_project.root / LOCK_NAME), timeout=0), Timeout), 60.0)
        second = run(tiny_project, lock_timeout_s=0.5)
    finally:
        runner.join(timeout=600)

    assert second.is_failed()
    with pytest.raises(LockBusyError, match=LOCK_NAME):
        second.result()
    assert first["state"].is_completed(), first["state"].message


def test_failing_stage_fails_the_flow_and_a_fixed_rerun_resumes(trained: TinyProject) -> None:
    tiny_project = trained
    champion_before, models_before = champion_tag(), mtimes(tiny_project.root / "models")
    good = tiny_project.users_file.read_bytes()
    tiny_project.users_file.write_text("userID\tartistID\tweight\n1\tnot-a-number\t5\n", encoding="utf-8")
    try:
        failed = run(tiny_project)
    finally:
        tiny_project.users_file.write_bytes(good)

    assert failed.is_failed()
    with pytest.raises(StageFailedError) as raised:
        failed.result()
    assert raised.value.stage == "prepare" and not raised.value.transient
    assert "user_artists.dat" in str(raised.value)  # the prepare stage's own error message
    assert champion_tag() == champion_before
    assert artifact_of(failed, "gate-decision") is None

    resumed = run(tiny_project)

    assert resumed.is_completed(), resumed.message
    stages = resumed.result()["stages"]
    # The raw folder changed back: DVC restores the earlier good raw copy from its run cache.
    assert stages["ingest"] in {"ran", "restored"}
    assert stages["train"] == "skipped" and stages["evaluate"] == "skipped"
    assert mtimes(tiny_project.root / "models") == models_before
    assert champion_tag() == champion_before


def _held(lock: Any, timeout_error: type[Exception]) -> bool:
    """True when another run holds ``lock`` (we cannot take it at once)."""
    try:
        lock.acquire()
    except timeout_error:
        return True
    lock.release()
    return False


def _counting_stage(counter: Path, exit_codes: str) -> str:
    """A stage command that counts its runs in ``counter`` and exits with ``exit_codes[run]``."""
    return (
        'python -c "import pathlib, sys; p = pathlib.Path(sys.argv[1]); '
        "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
        f"print(f'error: attempt {{n}}'); sys.exit(int(sys.argv[2][min(n, len(sys.argv[2]) - 1)]))\" "
        f"{counter} {exit_codes}"
    )


def test_transient_failures_are_retried_but_bad_data_is_not(tmp_path: Path) -> None:
    stages = {
        "flaky": {"cmd": _counting_stage(tmp_path / "flaky.count", "10")},  # fails once, then works
        "bad_data": {"cmd": _counting_stage(tmp_path / "bad.count", "2")},  # the CLI's user-error code
    }
    project = init_repo(tmp_path / "project", {"stages": stages})

    @flow
    def both() -> tuple[State[Any], State[Any]]:
        stage_task = dvc_stage.with_options(retries=2, retry_delay_seconds=0)
        return (
            stage_task("flaky", str(project), return_state=True),
            stage_task("bad_data", str(project), return_state=True),
        )

    flaky, bad = both()

    assert flaky.is_completed() and flaky.result().outcome == "ran"
    assert (tmp_path / "flaky.count").read_text() == "2"
    assert bad.is_failed() and (tmp_path / "bad.count").read_text() == "1"
    with pytest.raises(StageFailedError, match="error: attempt 0"):
        bad.result()


def test_a_deliberately_worse_configuration_is_refused_by_the_gate(trained: TinyProject) -> None:
    tiny_project = trained
    champion_before = champion_tag()
    worse = {"train.search.n_trials": 1, "train.lightfm.epochs": 1, "train.lightfm.learning_rate": 1.0e-5}

    state = run(tiny_project, params_overrides=worse)

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["stages"]["train"] == "ran"  # the worse model really was trained and evaluated
    decision = summary["decision"]
    assert not decision["promote"]
    assert any("ndcg@10" in reason for reason in decision["reasons"]), decision["reasons"]
    challenger = decision["comparison"]["ndcg@10"]
    assert challenger["challenger"] < challenger["champion"]
    assert champion_tag() == champion_before == summary["model_tag"]
    assert "keep the champion" in str((artifact_of(state, "gate-decision") or {})["data"])


def test_the_ranker_as_challenger_is_packaged_and_served_with_its_generators(trained: TinyProject) -> None:
    champion_before = champion_tag()
    # A candidate whatever the offline gate says: the tiny data decides nothing about which model is better.
    state = run(trained, params_overrides={"gate.challenger": RANKER}, candidate=True)

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["stages"]["train"] == "skipped"  # the gate's settings retrain nothing
    report = json.loads((trained.root / "metrics/offline.json").read_text(encoding="utf-8"))
    # The bias stage measured the ranker itself: it is gated and packaged with the mitigation chosen for it.
    bias = json.loads((trained.root / "metrics/bias.json").read_text(encoding="utf-8"))
    assert bias["model"] == RANKER and summary["stages"]["bias"] == "ran"
    mitigation = bias["mitigation"]
    if mitigation["served"] == "calibration":
        as_served = mitigation["served_metrics"]["metrics"]
    elif mitigation["served"] == "popularity":
        as_served = next(r for r in bias["strengths"] if r["strength"] == mitigation["strength"])
    else:
        as_served = report["models"][RANKER]
    compared = summary["decision"]["comparison"]["ndcg@10"]
    assert compared["challenger"] == pytest.approx(as_served["ndcg@10"])
    strength = mitigation["strength"] if mitigation["served"] == "popularity" else 0
    assert summary["decision"]["served"]["strength"] == strength
    held = summary["candidate"]
    assert held is not None and champion_tag() == champion_before
    artifact = registry.load_artifact(held)
    assert artifact.served_model == RANKER and artifact.metadata["source_model"] == RANKER
    assert artifact.metadata["metrics"]["ndcg@10"] == pytest.approx(as_served["ndcg@10"])
    assert artifact.bias_strength == strength
    assert (artifact.calibration is not None) == (mitigation["served"] == "calibration")
    assert isinstance(artifact.ranker, TwoStageRanker) and next(iter(artifact.ranker.generators)) == HYBRID


def flow_project(root: Path) -> Path:
    """A fresh project at ``root`` (params, the package, the pipeline) in its own git + DVC repo."""
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(PROJECT_ROOT / "recsys", root / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    init_repo(root, yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8")))
    return root


def test_a_teams_own_files_run_through_the_whole_flow_to_their_own_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's worked example, at a size that trains: the real ingest stage copies the two files.
    rng = np.random.default_rng(3)
    songs = [f"s{n:02d}" for n in range(40)]
    listens = pd.DataFrame(
        [
            (f"fan{u:02d}", song, int(rng.integers(1, 9)))
            for u in range(30)
            for song in rng.choice(songs, 8, False)
        ],
        columns=["who", "song", "n"],
    )
    items = pd.DataFrame(
        {
            "song": songs,
            "title": [f"Song {n}" for n in range(40)],
            "singer": [f"Singer {n % 7}" for n in range(40)],
            "style": [["pop", "rock", "jazz"][n % 3] for n in range(40)],
            "labels": [f"mood{n % 5}|era{n % 4}" for n in range(40)],
            "energy": rng.random(40),
        }
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    listens.to_csv(mine / "listens.csv", index=False)
    items.to_parquet(mine / "songs.parquet", index=False)
    root = flow_project(tmp_path / "project")
    files = {
        "dataset.name": "files",
        "dataset.files.interactions": str(mine / "listens.csv"),
        "dataset.files.items": str(mine / "songs.parquet"),
        "dataset.files.columns": {
            "user": "who", "item": "song", "plays": "n", "name": "title", "artist": "singer",
            "genre": "style", "tags": "labels",
        },
    }  # fmt: skip
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    state = run(TinyProject(root, mine), params_overrides=TINY_OVERRIDES | files)

    assert state.is_completed(), state.message
    summary = state.result()
    assert {row["model"] for row in summary["metrics"]} == ALL_MODELS
    quality = json.loads((root / "data/prepared/quality.json").read_text(encoding="utf-8"))
    assert quality["dataset"] == "files" and quality["summary"]["users"] == 30
    champion = registry.champion(dataset="files")
    assert champion is not None and champion.tag.startswith("music_recommender_files:")
    assert summary["model_tag"] == champion.tag
    assert registry.champion() is None  # the artists' champion is a different model

    # A bad row: the flow fails at prepare with the stage's one-line error, and the last good tables stay.
    prepared = {path.name: path.read_bytes() for path in (root / "data/prepared").iterdir()}
    broken = listens.astype({"n": object})
    broken.loc[4, "n"] = "lots"
    broken.to_csv(mine / "listens.csv", index=False)
    monkeypatch.chdir(root)
    cli = CliRunner().invoke(app, ["run", "--data-dir", str(mine)])
    assert cli.exit_code == 2, cli.output
    assert cli.output.strip().splitlines()[-1] == (
        f"error: stage 'prepare': {mine / 'listens.csv'}, row 5, column 'n': "
        "'lots' is not a finite number >= 0 of at most 1e+12"
    )
    assert {path.name: path.read_bytes() for path in (root / "data/prepared").iterdir()} == prepared
    # The fixed file read again and retrained on: tests/test_newcomer.py, through the README's commands.


@pytest.mark.slow
def test_generated_data_runs_through_the_whole_flow_with_the_large_catalogue_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The synthetic source through every DVC stage's command (ingest generates the data), with the
    large-catalogue preset's hybrid, to its own champion: the path of a run at S50, at a size that trains."""
    from recsys.cli.main import load_preset

    root = flow_project(tmp_path / "project")
    generated = {"dataset.name": "synthetic", "dataset.synthetic": {"users": 80, "items": 60, "pairs": 1200}}
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    overrides = TINY_OVERRIDES | load_preset("large-catalogue") | generated
    state = run(TinyProject(root, tmp_path / "no-raw-data"), params_overrides=overrides)

    assert state.is_completed(), state.message
    summary = state.result()
    # The preset switches the two-stage ranker off: it is neither trained nor measured.
    assert {row["model"] for row in summary["metrics"]} == ALL_MODELS - {RANKER}
    assert not (root / "models" / f"{RANKER}.npz").exists()
    ingested = json.loads((root / "data/raw/ingest.json").read_text(encoding="utf-8"))
    assert ingested["dataset"] == "synthetic" and ingested["shape"]["users"] == 80
    champion = registry.champion(dataset="synthetic")
    assert champion is not None and champion.tag.startswith("music_recommender_synthetic:")
