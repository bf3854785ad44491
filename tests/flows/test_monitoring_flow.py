"""The monitoring flow on a tiny project: reports written, artifacts published, triggers acted on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from prefect import get_client
from prefect.states import State

import flows.monitoring as monitoring_flow_module
from flows.monitoring import BIAS_JSON, DRIFT_HTML, DRIFT_JSON, drift_monitoring_flow
from recsys import registry
from recsys.columns import Col
from recsys.config import SplitParams
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import ServedRecommendation
from recsys.io import write_parquet
from recsys.models.baselines import MostPopular
from recsys.monitoring.workspace import read_history
from recsys.offline.split import load_split, make_split, save_split
from recsys.paths import MONITORING_DIR as REPORT_DIR
from tests.helpers import PROJECT_ROOT, sample_listening, tiny_items

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def make_project(root: Path, **monitoring: Any) -> Path:
    """params.yaml (with ``monitoring`` overrides), data/prepared/items.parquet and data/split."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["monitoring"] |= {"min_events": 50, **monitoring}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    items = tiny_items()
    write_parquet(root / "data/prepared/items.parquet", items)
    rng = np.random.default_rng(0)
    pairs = [(f"u{u}", item) for u in range(30) for item in rng.choice(items[Col.ITEM], 15, replace=False)]
    interactions = pd.DataFrame(pairs, columns=[Col.USER, Col.ITEM]).assign(**{Col.WEIGHT: 1.0})
    split = make_split(interactions, SplitParams(cold_item_fraction=0.0), 0, items[Col.ITEM].tolist())
    save_split(split, root / "data/split")
    return root


def feedback_store(path: Path, rock_share: float | None, seed: int) -> str:
    """A SQLite store holding 400 plays of the last day (``rock_share`` of them on rock artists)."""
    url = f"sqlite:///{path}"
    listening = sample_listening(tiny_items(), 400, seed=seed, rock_share=rock_share)
    events = [
        FeedbackEvent(
            user_id=u, item_id=i, event="play", timestamp=NOW - timedelta(hours=1), event_id=f"e{n}"
        )
        for n, (u, i) in enumerate(zip(listening[Col.USER], listening[Col.ITEM], strict=True))
    ]
    with FeedbackStore(url) as store:
        store.add_events(events)
    return url


def run(root: Path, url: str) -> State[Any]:
    state: State[Any] = drift_monitoring_flow(
        project_dir=str(root), feedback_url=url, now=NOW, return_state=True
    )
    assert state.is_completed(), state.message
    return state


def artifact_keys(state: State[Any]) -> set[str]:
    run_id = state.state_details.flow_run_id
    body = {"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 50, "offset": 0}
    with get_client(sync_client=True) as client:
        found: list[dict[str, Any]] = client.request("POST", "/artifacts/filter", json=body).json()
    return {artifact["key"] for artifact in found}


@pytest.fixture
def no_champion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "empty-bentoml"))


@pytest.mark.usefixtures("no_champion")
def test_a_rock_heavy_window_is_flagged(tmp_path: Path) -> None:
    # The Evidently workspace cannot be written (a file where its folder should be): the run still decides.
    root = make_project(tmp_path / "project", workspace="blocked/workspace")
    (root / "blocked").write_text("not a folder", encoding="utf-8")

    result = run(root, feedback_store(tmp_path / "fb.db", rock_share=0.9, seed=1)).result()
    assert result["workspace"]["status"].startswith("failed: ")

    out = root / REPORT_DIR
    drift = json.loads((out / DRIFT_JSON).read_text(encoding="utf-8"))
    assert (out / DRIFT_HTML).stat().st_size > 0
    assert drift["n_events"] == 400 and drift["drift"]["columns"][Col.GENRE]["drifted"]
    assert drift["drift"]["share"] >= 0.5 and drift["decision"]["triggered"]
    assert json.loads((out / BIAS_JSON).read_text(encoding="utf-8"))["status"].startswith("no champion")
    assert result["action"] == "flag"


def fake_champion(root: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A most-popular "champion" of the project's split, returned by ``registry.load_artifact``."""
    split = load_split(root / "data/split")
    model = MostPopular().fit(split.train_full)
    champion = SimpleNamespace(
        tag="fake:1",
        model=model,
        scoring=model,  # what ranks known listeners (a packaged ranker, else the model)
        known=sp.csr_matrix(split.train_full),
        user_index={user: index for index, user in enumerate(split.user_ids)},
        item_index={item: index for index, item in enumerate(split.item_ids)},
        item_ids=list(split.item_ids),
    )
    monkeypatch.setattr(registry, "load_artifact", lambda *args, **kwargs: champion)
    return champion


def test_a_fresh_window_is_not_flagged_and_bias_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "project", on_trigger="retrain")
    fake_champion(root, monkeypatch)
    retrained: list[str] = []
    monkeypatch.setattr(monitoring_flow_module, "trigger_retraining", retrained.append)

    state = run(root, feedback_store(tmp_path / "fb.db", rock_share=None, seed=2))

    result = state.result()
    assert result["drift"]["share"] < 0.5 and not result["decision"]["drift"]
    bias = result["bias"]
    assert bias["status"] == "ok" and bias["source"] == "test_set" and bias["test_set"]["n_users"] == 30
    assert bias["n_served"] == 0 and bias["served"]["status"].startswith("only 0 served lists")
    assert bias["popularity_lift"] == bias["test_set"]["popularity_lift"]
    assert bias["popularity_lift"] > 1.0  # most-popular lists are more mainstream than the listeners
    assert result["action"] == ("retrain" if bias["popularity_lift"] >= 2.0 else "none")
    assert retrained == ([str(root.resolve())] if result["action"] == "retrain" else [])
    assert {"monitoring-summary", "monitoring-drift-html", "monitoring-bias-json"} <= artifact_keys(state)


def add_served_lists(url: str, items: list[str], liked_by: set[str]) -> int:
    """Two lists of ``items`` for each of u0..u29 in the window (and one stale list), and a later like
    of the first item by each user of ``liked_by``; returns the number of lists in the window. The first
    list of each listener explored its last place (:mod:`recsys.serving.exploration`), the second did not."""
    users = [f"u{n}" for n in range(30)]
    fixed = (1.0,) * (len(items) - 1)
    explored = {3: ((*fixed, 0.01), (len(items) - 1,)), 2: ((*fixed, 0.9), ())}
    lists = [
        ServedRecommendation(
            NOW - timedelta(hours=hours),
            user,
            "recommend",
            "fake:1",
            False,
            tuple(items),
            0.0,
            propensities=explored[hours][0],
            explored=explored[hours][1],
        )
        for hours in (3, 2)
        for user in users
    ]
    stale = ServedRecommendation(NOW - timedelta(days=30), "u0", "recommend", "old:0", False, ("x",), 0.0)
    likes = [
        FeedbackEvent(
            user_id=user,
            item_id=items[0],
            event="like",
            timestamp=NOW - timedelta(hours=1),
            event_id=f"l{user}",
        )
        for user in liked_by
    ]
    with FeedbackStore(url) as store:
        store.add_served([stale, *lists])
        store.add_events(likes)
    return len(lists)


def test_bias_is_measured_on_the_served_lists_of_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "project", on_trigger="retrain")
    champion = fake_champion(root, monkeypatch)
    retrained: list[str] = []
    monkeypatch.setattr(monitoring_flow_module, "trigger_retraining", retrained.append)
    popularity = np.asarray((champion.known > 0).sum(axis=0)).ravel()
    niche = [champion.item_ids[i] for i in np.argsort(popularity, kind="stable")[:10]]
    url = feedback_store(tmp_path / "fb.db", rock_share=None, seed=2)
    n_lists = add_served_lists(url, niche, liked_by={"u1", "u2", "u3"})

    state = run(root, url)

    result, bias = state.result(), state.result()["bias"]
    served, test_set = bias["served"], bias["test_set"]
    assert bias["source"] == "served" and served["status"] == "ok"
    assert bias["n_served"] == served["n_lists"] == n_lists == result["n_served"]
    assert served["model_versions"] == {"fake:1": n_lists}
    assert bias["popularity_lift"] == served["popularity_lift"] < 1.0 < test_set["popularity_lift"]
    assert served["arp"] < test_set["arp"] and served["long_tail_share"] > test_set["long_tail_share"]
    assert served["personalisation"] == 0.0  # every listener got the same list
    assert served["hit_rate"] == pytest.approx(2 * 3 / n_lists)  # both lists of each liker are hits
    assert not result["decision"]["bias"] and result["action"] == "none" and retrained == []
    on_disk = json.loads((root / REPORT_DIR / BIAS_JSON).read_text(encoding="utf-8"))
    assert on_disk["served"]["n_lists"] == n_lists and on_disk["test_set"]["status"] == "ok"
    # Retention (monitoring.served_retention_days, 30): the 30-day-old list is deleted, the window's kept.
    assert result["served_pruned"] == 1
    with FeedbackStore(url, create=False) as store:
        assert store.count_served() == n_lists

    # The run is in the Evidently workspace, and an hour later the next one beside it.
    later = drift_monitoring_flow(project_dir=str(root), feedback_url=url, now=NOW + timedelta(hours=1))
    workspace = root / "reports/monitoring/workspace"
    assert result["workspace"]["status"] == later["workspace"]["status"] == "ok"
    recorded = read_history(workspace, "lastfm-artists")
    assert [stamp.to_pydatetime() for stamp in recorded["timestamp"]] == [NOW, NOW + timedelta(hours=1)]
    first = recorded.iloc[0]
    assert first["drift_share"] == pytest.approx(result["drift"]["share"])
    assert first["popularity_lift"] == pytest.approx(served["popularity_lift"])
    assert (first["arp"], first["long_tail_share"]) == pytest.approx(
        (served["arp"], served["long_tail_share"])
    )
    assert first["like_rate_champion"] == pytest.approx(3 / (n_lists * len(niche)))  # one like each of 3
    assert (first["n_events"], first["n_served"]) == (result["n_events"], n_lists)
    exploring = result["exploration"]
    assert exploring["lists"] == n_lists and exploring["list_share"] == 0.5
    assert first["exploration_share"] == pytest.approx(0.5 / len(niche))
    assert first["like_rate_explored"] == 0.0 and first["like_rate_model"] > 0.0  # likes of the first item


@pytest.mark.usefixtures("no_champion")
def test_retrain_on_trigger_starts_retraining(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "project", on_trigger="retrain")
    retrained: list[str] = []
    monkeypatch.setattr(monitoring_flow_module, "trigger_retraining", retrained.append)

    state = run(root, feedback_store(tmp_path / "fb.db", rock_share=0.9, seed=3))

    assert state.result()["action"] == "retrain" and retrained == [str(root.resolve())]
    assert "monitoring-alert" in artifact_keys(state)


@pytest.mark.usefixtures("no_champion")
def test_without_a_feedback_store_nothing_triggers(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")

    result = run(root, f"sqlite:///{tmp_path / 'missing.db'}").result()

    assert result["n_events"] == 0 and result["drift"] is None and result["action"] == "none"
    assert not (tmp_path / "missing.db").exists()


def test_monitoring_a_song_data_set_measures_that_data_sets_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "project")
    settings = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    settings["dataset"]["name"] = "spotify-songs"
    (root / "params.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    champion = fake_champion(root, monkeypatch)
    asked: list[dict[str, Any]] = []

    def load_artifact(*args: Any, **kwargs: Any) -> SimpleNamespace:
        asked.append(kwargs)
        return champion

    monkeypatch.setattr(registry, "load_artifact", load_artifact)

    result = run(root, feedback_store(tmp_path / "fb.db", rock_share=None, seed=2)).result()

    assert asked and all(kwargs.get("dataset") == "spotify-songs" for kwargs in asked)
    assert result["bias"]["status"] == "ok" and result["bias"]["test_set"]["n_users"] == 30


@pytest.mark.usefixtures("no_champion")
def test_monitor_run_monitors_once_and_says_each_number_against_its_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from recsys.cli.main import app

    root = make_project(tmp_path / "project")
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    recent = datetime.now(UTC) - timedelta(hours=1)
    listening = sample_listening(tiny_items(), 400, seed=1, rock_share=0.9)
    events = [
        FeedbackEvent(user_id=u, item_id=i, event="play", timestamp=recent, event_id=f"e{n}")
        for n, (u, i) in enumerate(zip(listening[Col.USER], listening[Col.ITEM], strict=True))
    ]
    with FeedbackStore(url) as store:
        store.add_events(events)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["monitor", "run", "--no-evaluate", "--feedback-url", url])
    assert result.exit_code == 0, result.output
    drift = json.loads((root / REPORT_DIR / DRIFT_JSON).read_text(encoding="utf-8"))
    lines = result.output.strip().splitlines()
    assert lines[-5] == f"drift share: {drift['drift']['share']:.2f} (threshold 0.5: drifted)"
    assert lines[-4] == "popularity lift: not measured"  # no champion has served anything
    assert lines[-3] == "window: 400 feedback events, 0 served lists"
    assert lines[-2].startswith("action: flag; ")
    assert "recsys monitor ui" in lines[-1]
    history = CliRunner().invoke(app, ["monitor", "history"])
    assert history.exit_code == 0 and '"drift_share_threshold": 0.5' in history.output
