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
:func:`trigger_retraining`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.training import training_flow
from recsys.config import load_params
from recsys.io import atomic_path, write_json
from recsys.loop import monitoring
from recsys.loop.feedback import (
    FEEDBACK_COLUMNS,
    SERVED_COLUMNS,
    FeedbackStore,
    FeedbackUnavailableError,
    Served,
)
from recsys.offline.split import load_split

REPORT_DIR = Path("reports/monitoring")
DRIFT_HTML, DRIFT_JSON, BIAS_JSON = "drift.html", "drift.json", "bias.json"
MAX_REFERENCE_ROWS = 50_000  # Evidently's distances are stable well below this; more only costs time
MAX_SERVED_LISTS = 200_000  # the window's latest lists; bias averages are stable far below this


def trigger_retraining(project_dir: str) -> Any:
    """Start retraining after a monitoring trigger (for now the full training flow)."""
    return training_flow(project_dir=project_dir)


def default_feedback_url(project_dir: Path) -> str:
    """``RECSYS_FEEDBACK_URL`` or the service's default; a relative SQLite path is under ``project_dir``."""
    from recsys.serving.runtime import DEFAULT_FEEDBACK_URL, FEEDBACK_URL_ENV

    url = os.environ.get(FEEDBACK_URL_ENV, "").strip() or DEFAULT_FEEDBACK_URL
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(project_dir / url.removeprefix(prefix))
    return url


@task(name="load-reference", cache_policy=NO_CACHE)
def load_reference(project_dir: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, list[str]]:
    """Training listening as :func:`recsys.loop.monitoring.listening_frame` rows, the items table, edges and
    the ids of the test split's users."""
    root = Path(project_dir)
    split = load_split(root / "data/split")
    items = pd.read_parquet(root / "data/prepared/items.parquet")
    pairs = monitoring.matrix_pairs(split.train_full, split.user_ids, split.item_ids)
    edges = monitoring.popularity_edges(pairs, items)
    frame = monitoring.listening_frame(pairs, items, edges)
    test_users = [split.user_ids[row] for row in np.flatnonzero(split.test.getnnz(axis=1))]
    return monitoring.sample_rows(frame, MAX_REFERENCE_ROWS, seed), items, edges, test_users


@contextlib.contextmanager
def _existing_store(url: str, what: str) -> Iterator[FeedbackStore | None]:
    """The store at ``url``, or None (with a warning) when it does not exist yet; never creates it."""
    logger = get_run_logger()
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file is not None and not Path(sqlite_file).exists():
        logger.warning("no feedback store at %s yet: no %s in the current window", sqlite_file, what)
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
    return monitoring.recent_listening(events, now, window_days)


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
    reference: pd.DataFrame, current: pd.DataFrame, out_dir: str, drift_share: float
) -> monitoring.DriftSummary | None:
    """Evidently drift report saved as ``drift.html``; returns the summary (None without current rows)."""
    if current.empty:
        return None
    snapshot = monitoring.drift_snapshot(reference, current, drift_share)
    # Snapshot.save_* silently ignore anything but a str path.
    with atomic_path(Path(out_dir) / DRIFT_HTML) as tmp:
        snapshot.save_html(str(tmp))
    return monitoring.drift_summary(snapshot.dict())


@task(name="measure-bias", cache_policy=NO_CACHE)
def measure_bias(
    served: pd.DataFrame,
    events: pd.DataFrame,
    test_users: list[str],
    k: int,
    head_share: float,
    min_lists: int,
) -> dict[str, Any]:
    """Popularity bias of the served lists and of the champion's top-``k`` for the test split's users.

    ``popularity_lift`` and ``source`` at the top say which of the two the trigger reads: the served
    lists when there are at least ``min_lists`` of them, else the test set.
    """
    from recsys import registry

    n_served = len(served)
    try:
        artifact = registry.load_artifact()
    except registry.RegistryError as err:
        return {"status": f"no champion: {err}", "n_served": n_served}
    served_block = _served_bias(artifact, served, events, k, head_share, min_lists)
    test_block = _test_set_bias(artifact, test_users, k, head_share)
    blocks = {"served": served_block, "test_set": test_block}
    source = next((name for name, block in blocks.items() if block["status"] == "ok"), None)
    chosen = blocks[source] if source else {}
    return {
        "status": "ok" if source else "no list to measure",
        "champion": artifact.tag,
        "source": source,
        "popularity_lift": chosen.get("popularity_lift"),
        "n_served": n_served,
        "served": served_block,
        "test_set": test_block,
    }


def _served_bias(
    artifact: Any, served: pd.DataFrame, events: pd.DataFrame, k: int, head_share: float, min_lists: int
) -> dict[str, Any]:
    if len(served) < min_lists:
        return {
            "status": f"only {len(served)} served lists (< min_events {min_lists})",
            "n_lists": len(served),
        }
    metrics = monitoring.served_bias(
        served, artifact.known, artifact.item_index, artifact.user_index, k, head_share
    )
    versions = served[Served.MODEL_VERSION].value_counts().to_dict()
    return {
        "status": "ok",
        **metrics,
        **monitoring.served_hit_rate(served, events, k),
        "n_lists": len(served),
        "model_versions": {str(v): int(n) for v, n in versions.items()},
    }


def _test_set_bias(artifact: Any, test_users: list[str], k: int, head_share: float) -> dict[str, Any]:
    rows = sorted({artifact.user_index[u] for u in test_users if u in artifact.user_index})
    if not rows:
        return {"status": "no test-set user known to the champion"}
    users = np.asarray(rows, dtype=np.int64)
    top_k, _ = artifact.model.recommend(users, k, exclude=artifact.known)
    return {"status": "ok", **monitoring.recommendation_bias(top_k, artifact.known, users, head_share)}


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
        Feedback store URL (default: :func:`default_feedback_url`).
    now : datetime, optional
        End of the current window (default: now, UTC).

    Returns
    -------
    dict
        The ``drift.json`` payload plus ``bias`` and ``action`` (``none``, ``flag`` or ``retrain``).
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    params = load_params(root / "params.yaml")
    settings, end = params.monitoring, now or datetime.now(UTC)
    out_dir = root / REPORT_DIR
    url = feedback_url or default_feedback_url(root)
    reference, items, edges, test_users = load_reference(str(root), params.seed)
    events: pd.DataFrame = load_current(url, end, settings.window_days)
    served: pd.DataFrame = load_served(url, end, settings.window_days)
    current = monitoring.listening_frame(events, items, edges)
    drift = measure_drift(reference, current, str(out_dir), settings.drift_share_threshold)
    evaluate = params.evaluate
    bias = measure_bias(
        served, events, test_users, evaluate.primary_k, evaluate.head_share, settings.min_events
    )
    n_lists = len(served) if bias.get("source") == "served" else None
    decision = monitoring.decide(
        drift.share if drift else None, bias.get("popularity_lift"), len(events), settings, n_lists
    )
    report = _drift_payload(drift, decision, len(reference), len(events), end, settings.window_days)
    report["n_served"] = len(served)
    report["served_pruned"] = prune_served(url, end, settings.served_retention_days)
    write_json(out_dir / DRIFT_JSON, report)
    write_json(out_dir / BIAS_JSON, bias)
    _publish(out_dir, report, bias)
    action = _act(decision, settings.on_trigger, str(root))
    logger.info(
        "monitoring: drift share %s, popularity lift %s, action %s (%.1f s)",
        report["drift"] and report["drift"]["share"],
        bias.get("popularity_lift"),
        action,
        time.perf_counter() - start,
    )
    return report | {"bias": bias, "action": action}


def _drift_payload(
    drift: monitoring.DriftSummary | None,
    decision: monitoring.TriggerDecision,
    n_reference: int,
    n_events: int,
    end: datetime,
    window_days: int,
) -> dict[str, Any]:
    return {
        "window": {"start": end - timedelta(days=window_days), "end": end, "days": window_days},
        "n_reference": n_reference,
        "n_events": n_events,
        "drift": drift.to_dict() if drift else None,
        "decision": {
            "triggered": decision.triggered,
            "drift": decision.drift,
            "bias": decision.bias,
            "enough_events": decision.enough_events,
            "enough_served_lists": decision.enough_bias_events,
            "reasons": list(decision.reasons),
        },
    }


def _publish(out_dir: Path, report: dict[str, Any], bias: dict[str, Any]) -> None:
    for name in (DRIFT_HTML, DRIFT_JSON, BIAS_JSON):
        if (out_dir / name).exists():
            key = "monitoring-" + name.replace(".", "-")
            create_link_artifact((out_dir / name).as_uri(), link_text=name, key=key)
    create_markdown_artifact(
        _summary_markdown(report, bias), key="monitoring-summary", description="Monitoring"
    )


def _summary_markdown(report: dict[str, Any], bias: dict[str, Any]) -> str:
    drift = report["drift"]
    lines = [
        "# Monitoring",
        f"Window: {report['window']['days']} days to {report['window']['end']}; "
        f"{report['n_events']} listening events vs {report['n_reference']} reference rows.",
        "",
        "| column | method | score | threshold | drifted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, column in (drift or {}).get("columns", {}).items():
        cells = (name, column["method"], f"{column['score']:.3f}", column["threshold"], column["drifted"])
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    share = "n/a" if drift is None else f"{drift['share']:.2f}"
    lines += ["", f"Drift share: {share}. Bias ({bias.get('status')}, trigger reads: {bias.get('source')}):"]
    lines += _bias_table(bias)
    reasons = report["decision"]["reasons"]
    lines += ["", "Triggered: " + ("; ".join(reasons) if report["decision"]["triggered"] else "no")]
    return "\n".join(lines)


def _bias_table(bias: dict[str, Any]) -> list[str]:
    served, test_set = bias.get("served", {}), bias.get("test_set", {})
    lines = [
        "",
        f"Served lists in the window: {bias.get('n_served', 0)} ({served.get('status', 'not measured')}); "
        f"test set: {test_set.get('status', 'not measured')}.",
    ]
    names = [key for key, value in {**test_set, **served}.items() if isinstance(value, float)]
    if not names:
        return lines
    lines += ["", "| metric | served | test set |", "| --- | --- | --- |"]
    for name in dict.fromkeys(names):
        cells = [_cell(block.get(name)) for block in (served, test_set)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return lines


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


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
