"""Drift and popularity-bias monitoring: Evidently reports over the reference and the current window.

Reference: the training interactions (``data/split``, train + valid) described by the listened items
(``data/prepared/items.parquet``). Current: what the feedback store (``RECSYS_FEEDBACK_URL``) holds for
the last ``monitoring.window_days`` days: the listening feedback (play, like), described the same way
for drift, and the recommendation lists the service served and logged.

Popularity bias is measured twice against the champion's popularity and listeners
(:func:`recsys.registry.load_artifact`): on the served lists, once the window holds at least
``monitoring.min_events`` of them (with a hit rate where listeners later liked a served item), and on
the champion's top-k for the users of the fixed test split (``test_set``). The served lift decides the
bias trigger when there are enough served lists; otherwise the test-set lift does, as before lists
were logged.

Writes ``reports/monitoring/drift.html``, ``drift.json`` and ``bias.json`` (``served`` and ``test_set``
blocks), publishes link and markdown artifacts, and when a threshold is crossed with enough evidence
either flags it (``on_trigger: flag``: an alert artifact and a warning) or also starts
:func:`trigger_retraining`. Every run also adds its drift snapshot and a summary snapshot (drift share,
popularity lift, ARP, long-tail share, like rate per model) to the Evidently workspace
(``monitoring.workspace``; :mod:`recsys.monitoring.workspace`), whose dashboard ``recsys monitor ui`` shows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import dvc
from flows.training import dvc_stage, training_flow
from recsys.config import load_params
from recsys.experiments import report as experiment_report
from recsys.experiments.replay import exploration_outcome
from recsys.feedback.events import FEEDBACK_COLUMNS
from recsys.feedback.store import FeedbackStore, FeedbackUnavailableError
from recsys.feedback.store import feedback_url as default_feedback_url
from recsys.feedback.tables import SERVED_COLUMNS, store_exists
from recsys.io import atomic_path, write_json
from recsys.monitoring import decisions as monitoring
from recsys.monitoring import drift
from recsys.monitoring import workspace as workspace_history
from recsys.monitoring.served_bias import champion_bias
from recsys.offline.metrics_files import metrics_rows, read_report
from recsys.offline.split import load_split
from recsys.paths import ITEMS_TABLE, MONITORING_DIR, PARAMS_FILE, PREPARED_DIR, SPLIT_DIR

DRIFT_HTML, DRIFT_JSON, BIAS_JSON = "drift.html", "drift.json", "bias.json"
MAX_REFERENCE_ROWS = 50_000  # Evidently's distances are stable well below this; more only costs time
MAX_SERVED_LISTS = 200_000  # the window's latest lists; bias averages are stable far below this


def trigger_retraining(project_dir: str) -> Any:
    """Start retraining after a monitoring trigger (for now the full training flow)."""
    return training_flow(project_dir=project_dir)


@task(name="load-reference", cache_policy=NO_CACHE)
def load_reference(project_dir: str, seed: int) -> drift.Reference:
    """The training listening the window is compared with
    (:func:`recsys.monitoring.drift.project_reference`)."""
    root = Path(project_dir)
    items = pd.read_parquet(root / PREPARED_DIR / ITEMS_TABLE)
    return drift.project_reference(load_split(root / SPLIT_DIR), items, MAX_REFERENCE_ROWS, seed)


@contextlib.contextmanager
def _existing_store(url: str, what: str) -> Iterator[FeedbackStore | None]:
    """The store at ``url``, or None (with a warning) when it does not exist yet; never creates it."""
    if not store_exists(url):
        get_run_logger().warning("no feedback store at %s yet: no %s in the current window", url, what)
        yield None
        return
    with FeedbackStore(url, create=False) as store:
        yield store


@task(name="load-current", cache_policy=NO_CACHE)
def load_current(url: str, now: datetime, window_days: int) -> pd.DataFrame:
    """Listening feedback of the window; no events when the store does not exist or cannot be reached."""
    empty = pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    try:
        with _existing_store(url, "listening events") as store:
            events = store.export_frame() if store is not None else empty
    except FeedbackUnavailableError as err:
        get_run_logger().warning("feedback store unavailable, the current window is empty: %s", err)
        return empty
    return drift.recent_listening(events, now, window_days)


@task(name="load-served", cache_policy=NO_CACHE)
def load_served(url: str, now: datetime, window_days: int) -> pd.DataFrame:
    """The window's served lists (the latest :data:`MAX_SERVED_LISTS`); none when the store is missing,
    unreachable or older than the served log."""
    empty = pd.DataFrame(columns=list(SERVED_COLUMNS))
    try:
        with _existing_store(url, "served lists") as store:
            if store is None:
                return empty
            return store.served_frame(now - timedelta(days=window_days), now, limit=MAX_SERVED_LISTS)
    except FeedbackUnavailableError as err:
        get_run_logger().warning("served lists unavailable, none in the current window: %s", err)
        return empty


@task(name="count-new-feedback", cache_policy=NO_CACHE)
def count_new_feedback(url: str, project_dir: str) -> int:
    """Feedback events stored after the retraining cursor (0 when the store is missing or unreachable)."""
    from recsys.feedback.exports import CURSOR_FILE, FeedbackCursor

    cursor = FeedbackCursor.load(Path(project_dir) / CURSOR_FILE)
    try:
        with _existing_store(url, "new feedback") as store:
            return 0 if store is None else store.count(cursor.position)
    except FeedbackUnavailableError as err:
        get_run_logger().warning("new feedback not counted, the store is unavailable: %s", err)
        return 0


@task(name="emit-monitoring-events", cache_policy=NO_CACHE)
def emit_monitoring_events(names: list[str], dataset: str, payload: dict[str, Any]) -> list[str]:
    """Emit each event on the data set's resource (``recsys.project.<data set>``); returns the names sent.

    Deployment triggers (``prefect.yaml``) match these names: the feedback retraining deployment answers
    the first event of a burst and ignores the rest of its ``within`` window.
    """
    from prefect.events import emit_event

    resource = {"prefect.resource.id": f"recsys.project.{dataset}", "prefect.resource.name": dataset}
    for name in names:
        emit_event(event=name, resource=resource, payload=payload)
    return names


@task(name="prune-served", cache_policy=NO_CACHE)
def prune_served(url: str, now: datetime, retention_days: int) -> int:
    """Delete the served lists older than ``retention_days`` (they hold raw user ids); return how many."""
    try:
        with _existing_store(url, "served lists") as store:
            return 0 if store is None else store.delete_served_before(now - timedelta(days=retention_days))
    except FeedbackUnavailableError as err:
        get_run_logger().warning("served lists not pruned, the store is unavailable: %s", err)
        return 0


@task(name="measure-drift", cache_policy=NO_CACHE)
def measure_drift(
    reference: pd.DataFrame, current: pd.DataFrame, out_dir: str, drift_share: float, end: datetime
) -> tuple[drift.DriftSummary | None, Any]:
    """Evidently drift report saved as ``drift.html``; returns the summary and the Evidently snapshot (both
    None without current rows)."""
    if current.empty:
        return None, None
    snapshot = drift.drift_snapshot(reference, current, drift_share, end)
    # Snapshot.save_* silently ignore anything but a str path.
    with atomic_path(Path(out_dir) / DRIFT_HTML) as tmp:
        snapshot.save_html(str(tmp))
    return drift.drift_summary(snapshot.dict()), snapshot


@task(name="record-in-workspace", cache_policy=NO_CACHE)
def record_in_workspace(
    workspace: str, dataset: str, values: dict[str, float], end: datetime, snapshot: Any
) -> dict[str, Any]:
    """Add the run to the Evidently workspace (:func:`recsys.monitoring.workspace.record_run`).

    The history is a view: a failure to write it is logged and reported (``status``), and the run's own
    decisions, files and events stand.
    """
    try:
        return {"status": "ok"} | workspace_history.record_run(
            Path(workspace), dataset, values, end, snapshot
        )
    except Exception as err:  # the monitoring decision must not be lost to the dashboard
        get_run_logger().error("monitoring run not added to the Evidently workspace %s: %s", workspace, err)
        return {"status": f"failed: {type(err).__name__}: {err}", "workspace": workspace}


@task(name="measure-bias", cache_policy=NO_CACHE)
def measure_bias(
    served: pd.DataFrame,
    events: pd.DataFrame,
    test_users: list[str],
    k: int,
    head_share: float,
    min_lists: int,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Popularity bias of the served lists and of the champion's top-``k`` (:func:`champion_bias`)."""
    from recsys import registry

    try:
        artifact = registry.load_artifact(dataset=dataset)
    except registry.RegistryError as err:
        return {"status": f"no champion: {err}", "n_served": len(served)}
    return champion_bias(artifact, served, events, test_users, k, head_share, min_lists)


@flow(name="drift-monitoring")
def drift_monitoring_flow(
    project_dir: str = ".", feedback_url: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Compare the current window with the training data, measure bias, and act on the thresholds.

    Parameters
    ----------
    project_dir : str
        Project root holding ``params.yaml``, ``data/prepared`` and ``data/split``.
    feedback_url : str, optional
        Feedback store URL (default: :func:`recsys.feedback.store.feedback_url`).
    now : datetime, optional
        End of the current window (default: now, UTC).

    Returns
    -------
    dict
        The ``drift.json`` payload plus ``bias``, ``action`` (``none``, ``flag`` or ``retrain``) and
        ``events_emitted`` (:data:`recsys.monitoring.decisions.MONITORING_EVENTS` sent this run).
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    params = load_params(root / PARAMS_FILE)
    settings, end = params.monitoring, now or datetime.now(UTC)
    out_dir = root / MONITORING_DIR
    url = feedback_url or default_feedback_url(root)
    reference = load_reference(str(root), params.seed)
    events: pd.DataFrame = load_current(url, end, settings.window_days)
    served: pd.DataFrame = load_served(url, end, settings.window_days)
    current = drift.listening_frame(events, reference.items, reference.edges)
    drifted, snapshot = measure_drift(
        reference.frame, current, str(out_dir), settings.drift_share_threshold, end
    )
    k, head = params.evaluate.primary_k, params.evaluate.head_share
    bias = measure_bias(
        served, events, reference.test_users, k, head, settings.min_events, params.dataset.name
    )
    n_lists = len(served) if bias.get("source") == "served" else None
    share = drifted.share if drifted else None
    decision = monitoring.decide(share, bias.get("popularity_lift"), len(events), settings, n_lists)
    report = monitoring.drift_payload(
        drifted, decision, len(reference.frame), len(events), end, settings.window_days
    )
    horizon = pd.Timedelta(hours=params.experiment.horizon_hours)
    report |= {
        "n_served": len(served),
        "served_pruned": prune_served(url, end, settings.served_retention_days),
        "exploration": exploration_outcome(served, events, horizon, params.experiment.alpha),
    }
    write_json(out_dir / DRIFT_JSON, report)
    write_json(out_dir / BIAS_JSON, bias)
    _publish(out_dir, report, bias)
    action = _act(decision, settings.on_trigger, str(root))
    new_feedback = count_new_feedback(url, str(root))
    names = monitoring.monitoring_events(decision, new_feedback, settings.min_new_feedback)
    payload = monitoring.event_payload(report, bias, new_feedback, decision)
    report["events_emitted"] = emit_monitoring_events(names, params.dataset.name, payload) if names else []
    like_rates = experiment_report.like_rate_by_model(served, events, horizon)
    values = workspace_history.summary_values(report, bias, like_rates, monitoring.thresholds(settings))
    workspace = root / settings.workspace
    report["workspace"] = record_in_workspace(str(workspace), params.dataset.name, values, end, snapshot)
    logger.info(
        "monitoring: drift share %s, popularity lift %s, action %s (%.1f s)",
        payload["drift_share"],
        payload["popularity_lift"],
        action,
        time.perf_counter() - start,
    )
    return report | {"bias": bias, "action": action}


def _publish(out_dir: Path, report: dict[str, Any], bias: dict[str, Any]) -> None:
    for name in (DRIFT_HTML, DRIFT_JSON, BIAS_JSON):
        if (out_dir / name).exists():
            key = "monitoring-" + name.replace(".", "-")
            create_link_artifact((out_dir / name).as_uri(), link_text=name, key=key)
    create_markdown_artifact(
        monitoring.summary_markdown(report, bias), key="monitoring-summary", description="Monitoring"
    )


def _act(decision: monitoring.TriggerDecision, on_trigger: str, project_dir: str) -> str:
    if not decision.triggered:
        return "none"
    logger = get_run_logger()
    message = "Monitoring threshold crossed: " + "; ".join(decision.reasons)
    create_markdown_artifact(f"# Alert\n{message}\n\nAction: {on_trigger}", key="monitoring-alert")
    logger.warning("%s (on_trigger=%s)", message, on_trigger)
    if on_trigger == "retrain":
        trigger_retraining(project_dir)
    return on_trigger


@flow(name="monitoring")
def monitoring_flow(
    project_dir: str = ".",
    data_dir: str | None = None,
    lock_timeout_s: float = 600.0,
    feedback_url: str | None = None,
) -> list[dict[str, Any]]:
    """Keep the offline metrics current, publish them, then watch drift and popularity bias.

    Runs ``dvc repro evaluate`` (DVC reruns whatever upstream changed, usually nothing), publishes
    ``metrics/offline.json`` as a table artifact, then runs :func:`drift_monitoring_flow`
    (Evidently drift of the recent feedback against the training data, popularity bias of the champion's
    recommendations, and the ``monitoring.on_trigger`` action).

    DVC runs under the same lock as :func:`flows.training.training_flow`, so never while a training run
    does; the drift flow runs after the lock is released because it may itself start retraining.

    Returns
    -------
    list of dict
        One row per model with its headline metrics.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    with dvc.run_lock(root, lock_timeout_s):
        outcome = dvc_stage("evaluate", str(root), data_dir)
        report = read_report(root)
    rows = metrics_rows(report, load_params(root / PARAMS_FILE).evaluate.primary_k)
    create_table_artifact(rows, key="monitoring-metrics", description="Offline metrics per model")
    drift_monitoring_flow(project_dir=str(root), feedback_url=feedback_url)
    logger.info("monitoring finished in %.1f s (evaluate %s)", time.perf_counter() - start, outcome.outcome)
    return rows


if __name__ == "__main__":
    monitoring_flow()
