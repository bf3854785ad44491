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
from flows.monitoring import BIAS_JSON, DRIFT_HTML, DRIFT_JSON, REPORT_DIR, drift_monitoring_flow
from recsys import registry
from recsys.columns import Col
from recsys.config import SplitParams
from recsys.feedback import FeedbackEvent, FeedbackStore
from recsys.io import write_parquet
from recsys.models.baselines import MostPopular
from recsys.split import load_split, make_split, save_split
from tests.conftest import PROJECT_ROOT
from tests.test_monitoring import sample_listening, tiny_items

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
    root = make_project(tmp_path / "project")

    result = run(root, feedback_store(tmp_path / "fb.db", rock_share=0.9, seed=1)).result()

    out = root / REPORT_DIR
    drift = json.loads((out / DRIFT_JSON).read_text(encoding="utf-8"))
    assert (out / DRIFT_HTML).stat().st_size > 0
    assert drift["n_events"] == 400 and drift["drift"]["columns"][Col.GENRE]["drifted"]
    assert drift["drift"]["share"] >= 0.5 and drift["decision"]["triggered"]
    assert json.loads((out / BIAS_JSON).read_text(encoding="utf-8"))["status"].startswith("no champion")
    assert result["action"] == "flag"


def test_a_fresh_window_is_not_flagged_and_bias_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "project", on_trigger="retrain")
    split = load_split(root / "data/split")
    champion = SimpleNamespace(
        tag="fake:1",
        model=MostPopular().fit(split.train_full),
        known=sp.csr_matrix(split.train_full),
        user_index={user: index for index, user in enumerate(split.user_ids)},
    )
    monkeypatch.setattr(registry, "load_artifact", lambda *args, **kwargs: champion)
    retrained: list[str] = []
    monkeypatch.setattr(monitoring_flow_module, "trigger_retraining", retrained.append)

    state = run(root, feedback_store(tmp_path / "fb.db", rock_share=None, seed=2))

    result = state.result()
    assert result["drift"]["share"] < 0.5 and not result["decision"]["drift"]
    bias = result["bias"]
    assert bias["status"] == "ok" and bias["n_users"] == 30
    assert bias["popularity_lift"] > 1.0  # most-popular lists are more mainstream than the listeners
    assert result["action"] == ("retrain" if bias["popularity_lift"] >= 2.0 else "none")
    assert retrained == ([str(root.resolve())] if result["action"] == "retrain" else [])
    assert {"monitoring-summary", "monitoring-drift-html", "monitoring-bias-json"} <= artifact_keys(state)


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
