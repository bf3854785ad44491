"""The Evidently workspace of the monitoring history: runs recorded, the dashboard set up once, read back."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.errors import RecsysError
from recsys.monitoring import workspace as history
from recsys.monitoring.decisions import exploration_lines
from recsys.monitoring.drift import drift_snapshot, listening_frame, popularity_edges
from tests.helpers import sample_listening, tiny_items

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _drift_snapshot(day: int) -> object:
    items = tiny_items()
    edges = popularity_edges(sample_listening(items, 300, seed=0), items)
    reference = listening_frame(sample_listening(items, 300, seed=0), items, edges)
    current = listening_frame(sample_listening(items, 200, seed=day + 1, rock_share=0.9), items, edges)
    return drift_snapshot(reference, current, 0.5, T0 + timedelta(days=day))


def test_summary_values_keep_the_measured_numbers_and_leave_out_the_rest() -> None:
    report = {"drift": None, "n_events": 12, "n_served": 80}
    bias = {
        "source": "served",
        "popularity_lift": 1.4,
        "served": {"arp": 33.0, "long_tail_share": float("nan")},
    }
    values = history.summary_values(report, bias, {"champion": 0.05, "challenger": 0.07})
    assert values == {
        "popularity_lift": 1.4,
        "arp": 33.0,
        "n_events": 12.0,
        "n_served": 80.0,
        "like_rate_champion": 0.05,
        "like_rate_challenger": 0.07,
    }  # no drift measured, a NaN long-tail share: gaps, not zeros


def test_exploration_is_summarised_for_the_dashboard_and_the_report() -> None:
    rate = {"value": 0.02, "se": 0.01, "low": 0.0, "high": 0.04, "units": 30}
    outcome = {
        "lists": 400,
        "list_share": 0.1,
        "slot_share": 0.01,
        "explored_like_rate": rate,
        "model_like_rate": rate | {"value": 0.12, "low": 0.1, "high": 0.14},
    }
    report = {"drift": None, "n_events": 12, "n_served": 400, "exploration": outcome}
    values = history.summary_values(report, {"source": None}, {})
    assert values["exploration_share"] == 0.01
    assert values["like_rate_explored"] == 0.02 and values["like_rate_model"] == 0.12
    assert any("exploration_share" in columns for _, _, columns in history.PANELS)
    line = " ".join(exploration_lines(outcome))
    assert "10.0% of 400 logged lists explored (1.0% of slots)" in line
    assert "explored slots 0.0200 [0.0000, 0.0400]" in line and "model's slots 0.1200" in line
    assert "no logged list carries propensities" in " ".join(exploration_lines({"lists": 0}))
    assert "like_rate_explored" not in history.summary_values(report | {"exploration": {"lists": 0}}, {}, {})


def test_runs_are_recorded_with_a_dashboard_and_read_back_in_time_order(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    runs = [
        {"drift_share": 0.1, "popularity_lift": 1.3, "arp": 40.0, "like_rate_champion": 0.04},
        {"drift_share": 0.6, "popularity_lift": 1.2, "arp": 38.0, "like_rate_champion": 0.05},
    ]
    # Recorded out of order: the history is ordered by the window's end, not by when it was written.
    second = history.record_run(
        workspace, "lastfm-artists", runs[1], T0 + timedelta(days=1), _drift_snapshot(1)
    )
    first = history.record_run(workspace, "lastfm-artists", runs[0], T0, _drift_snapshot(0))
    assert first["project_id"] == second["project_id"] and len(first["snapshots"]) == 2

    frame = history.read_history(workspace, "lastfm-artists")
    assert list(frame["timestamp"].dt.date) == [T0.date(), (T0 + timedelta(days=1)).date()]
    for row, expected in zip(frame.to_dict("records"), runs, strict=True):
        assert {key: row[key] for key in expected} == pytest.approx(expected)

    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    (project,) = ws.search_project(history.project_name("lastfm-artists"))
    assert len(ws.list_runs(project.id)) == 4  # two drift reports and two summaries
    dashboard = project.dashboard.model()
    titles = [panel.title for panel in dashboard.panels]
    assert titles == [title for _, title in history.COUNTERS] + [title for title, _, _ in history.PANELS]
    plotted = {value.metric_labels["column"] for panel in dashboard.panels for value in panel.values}
    assert {"drift_share", "popularity_lift", "arp", "long_tail_share", "like_rate_challenger"} <= plotted
    assert {"drift_share_threshold", "popularity_lift_threshold"} <= plotted  # drawn beside their numbers
    # Another data set is another project; this one's history is untouched.
    history.record_run(workspace, "spotify-songs", {"drift_share": 0.2}, T0, None)
    assert len(history.read_history(workspace, "lastfm-artists")) == 2
    assert history.read_history(workspace, "spotify-songs")["drift_share"].tolist() == [0.2]


def test_reading_a_missing_history_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecsysError, match="no monitoring run has been recorded"):
        history.read_history(tmp_path / "nowhere", "lastfm-artists")
    history.record_run(tmp_path / "ws", "spotify-songs", {"n_events": 3.0}, T0, None)
    with pytest.raises(RecsysError, match="no project 'recsys lastfm-artists'"):
        history.read_history(tmp_path / "ws", "lastfm-artists")


def _record(workspace: str, day: int) -> None:
    history.record_run(
        Path(workspace), "lastfm-artists", {"n_events": float(day)}, T0 + timedelta(days=day), None
    )


def test_concurrent_first_runs_make_one_project(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_record, args=(str(workspace), day)) for day in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    projects = [json.loads(path.read_text())["name"] for path in workspace.glob("*/metadata.json")]
    assert projects == [history.project_name("lastfm-artists")]
    frame = history.read_history(workspace, "lastfm-artists")
    assert np.array_equal(frame["n_events"].to_numpy(), [0.0, 1.0, 2.0])
    assert isinstance(frame["timestamp"].iloc[0], pd.Timestamp)
