"""The monitoring history in a local Evidently workspace: one project per data set, its dashboard, and the
snapshots every monitoring run adds.

Each run adds two snapshots stamped with the end of its window: the Evidently data-drift report (per column,
as in ``drift.html``) and a summary whose metrics are the run's headline numbers, one ``MeanValue`` per
number over a one-row table (drift share, popularity lift, ARP, long-tail share, like rate per model,
exploration's share of slots and the like rates of explored and model slots, volumes).
The dashboard plots the summary numbers over time; ``recsys monitor ui`` starts the Evidently UI on the
workspace, and :func:`read_history` reads the numbers back.

>>> summary_values({"drift": {"share": 0.25}, "n_events": 40, "n_served": 0}, {"source": None}, {})
{'drift_share': 0.25, 'n_events': 40.0, 'n_served': 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from recsys.errors import RecsysError

SUMMARY_TAG, DRIFT_TAG = "monitoring-summary", "data-drift"
TAB = "Monitoring"
LIKE_RATE = "like_rate_"
"""Prefix of the like-rate numbers: ``like_rate_champion``, ``like_rate_challenger``."""
THRESHOLD = "_threshold"
"""Suffix of a threshold recorded beside its number (``drift_share_threshold``), drawn as its own line."""
COUNTERS: tuple[tuple[str, str], ...] = (
    ("drift_share", "Drift share, last run (retraining is flagged at the threshold)"),
    ("popularity_lift", "Popularity lift, last run (flagged at the threshold)"),
)
"""The latest value as a number: a chart of one run shows a lone point on an unlabelled axis."""
PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Data drift",
        "Share of the listening columns that drifted from the training data, and the threshold",
        ("drift_share", f"drift_share{THRESHOLD}"),
    ),
    (
        "Popularity lift of served lists",
        "Mean popularity of lists over the listeners' own (1 = as popular as they play), and the threshold",
        ("popularity_lift", f"popularity_lift{THRESHOLD}"),
    ),
    ("Average recommendation popularity", "ARP@k: mean listeners per recommended item", ("arp",)),
    ("Long-tail share", "Share of recommended items outside the popular head", ("long_tail_share",)),
    (
        "Like rate per model",
        "Likes per shown item, by the model that placed it (experiments split it by arm)",
        (f"{LIKE_RATE}champion", f"{LIKE_RATE}challenger"),
    ),
    (
        "Exploration",
        "Share of served slots that explored, and the like rates of explored and of the model's slots",
        ("exploration_share", f"{LIKE_RATE}explored", f"{LIKE_RATE}model"),
    ),
    ("Volume", "Feedback events and served lists in the window", ("n_events", "n_served")),
)


def project_name(dataset: str) -> str:
    """The workspace project of a data set."""
    return f"recsys {dataset}"


def summary_values(
    report: Mapping[str, Any],
    bias: Mapping[str, Any],
    like_rates: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The headline numbers of one monitoring run (``drift.json`` payload, ``bias.json``, like rates by
    model) and the thresholds they were judged by (``{"drift_share": 0.5}`` is recorded as
    ``drift_share_threshold``); numbers a run could not measure are left out, so the dashboard shows a gap,
    not a zero."""
    drift = report.get("drift") or {}
    source = bias.get("source")
    block = bias.get(source) or {} if source else {}
    explored = report.get("exploration") or {}
    values: dict[str, Any] = {
        "drift_share": drift.get("share"),
        "popularity_lift": bias.get("popularity_lift"),
        "arp": block.get("arp"),
        "long_tail_share": block.get("long_tail_share"),
        "n_events": report.get("n_events"),
        "n_served": report.get("n_served"),
        "exploration_share": explored.get("slot_share"),
    } | {f"{LIKE_RATE}{model}": rate for model, rate in like_rates.items()}
    for name in ("explored", "model"):
        values[f"{LIKE_RATE}{name}"] = (explored.get(f"{name}_like_rate") or {}).get("value")
    values |= {f"{name}{THRESHOLD}": limit for name, limit in (thresholds or {}).items()}
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def record_run(
    workspace: Path,
    dataset: str,
    values: Mapping[str, float],
    timestamp: datetime,
    drift_snapshot: Any | None = None,
) -> dict[str, Any]:
    """Add a monitoring run to the data set's project (created, with its dashboard, on first use).

    Returns
    -------
    dict
        ``{"workspace", "project_id", "snapshots"}`` (the ids of the snapshots added).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    snapshot = None
    if values:
        frame = pd.DataFrame({name: [value] for name, value in values.items()})
        data = Dataset.from_pandas(
            frame, data_definition=DataDefinition(numerical_columns=list(frame.columns))
        )
        report = Report([MeanValue(column=name) for name in frame.columns])
        snapshot = report.run(current_data=data, timestamp=timestamp, tags=[SUMMARY_TAG])
    # One writer at a time from opening to the last snapshot: opening a workspace reads every snapshot, and
    # another run's snapshot half written made it fail (JSONDecodeError in a concurrent first run).
    with _lock(workspace):
        ws, project = _open_project(workspace, dataset)
        added = []
        if drift_snapshot is not None:
            added.append(ws.add_run(project.id, drift_snapshot, include_data=False, name=DRIFT_TAG))
        if snapshot is not None:
            added.append(ws.add_run(project.id, snapshot, include_data=False, name=SUMMARY_TAG))
    return {
        "workspace": str(workspace),
        "project_id": str(project.id),
        "snapshots": [str(i.id) for i in added],
    }


def open_project(workspace: Path, dataset: str) -> tuple[Any, Any]:
    """The workspace and the data set's project, created with its dashboard when missing (under a lock, so
    concurrent monitoring runs make one project)."""
    with _lock(workspace):
        return _open_project(workspace, dataset)


def _lock(workspace: Path) -> FileLock:
    """The workspace's writers' lock (a file beside it); the folder is made first."""
    workspace.mkdir(parents=True, exist_ok=True)
    return FileLock(str(workspace.with_name(workspace.name + ".lock")), timeout=60)


def _open_project(workspace: Path, dataset: str) -> tuple[Any, Any]:
    """:func:`open_project` for a caller holding :func:`_lock`."""
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    found = ws.search_project(project_name(dataset))
    if found:
        return ws, found[0]
    project = ws.create_project(
        project_name(dataset), description=f"Monitoring runs of the {dataset} recommender (recsys)"
    )
    for column, title in COUNTERS:
        project.dashboard.add_panel(_counter_panel(title, column), tab=TAB)
    for title, subtitle, columns in PANELS:
        project.dashboard.add_panel(_line_panel(title, subtitle, columns), tab=TAB)
    project.save()
    return ws, project


def read_history(workspace: Path, dataset: str) -> pd.DataFrame:
    """The summary numbers of every recorded run, oldest first: ``timestamp`` and one column per number.

    Raises
    ------
    RecsysError
        When the workspace has no project for ``dataset`` (no monitoring run recorded there yet).
    """
    from evidently.ui.workspace import Workspace

    if not workspace.is_dir():
        raise RecsysError(f"{workspace} does not exist: no monitoring run has been recorded there yet")
    with _lock(workspace):  # never beside a writer: a half-written snapshot does not parse
        ws = Workspace(str(workspace))
        found = ws.search_project(project_name(dataset))
        if not found:
            raise RecsysError(
                f"{workspace} has no project {project_name(dataset)!r}: run the monitoring flow first"
            )
        snapshots = [ws.get_run(found[0].id, snapshot_id) for snapshot_id in ws.list_runs(found[0].id)]
    rows = []
    for snapshot in snapshots:
        if snapshot is None or SUMMARY_TAG not in snapshot.tags:
            continue
        row: dict[str, Any] = {"timestamp": pd.Timestamp(snapshot.timestamp)}
        for result in snapshot.metric_results.values():
            column = result.metric_value_location.metric.params.get("column")
            if column is not None:
                row[column] = float(result.value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("timestamp", ignore_index=True) if rows else frame


def _counter_panel(title: str, column: str) -> Any:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel

    value = PanelMetric(legend=column, metric="MeanValue", metric_labels={"column": column})
    return counter_panel(title=title, values=[value], size="half", aggregation="last")


def _line_panel(title: str, subtitle: str, columns: tuple[str, ...]) -> Any:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    values = [
        PanelMetric(
            legend="threshold" if column.endswith(THRESHOLD) else column.removeprefix(LIKE_RATE),
            metric="MeanValue",
            metric_labels={"column": column},
        )
        for column in columns
    ]
    return line_plot_panel(title=title, values=values, description=subtitle, size="half")
