"""Drift and popularity-bias monitoring: Evidently reports over the reference and the current window.

Reference: the training interactions (``data/split``, train + valid) described by the listened items
(``data/prepared/items.parquet``). Current: the listening feedback (play, like) stored by the service in
the last ``monitoring.window_days`` days (``RECSYS_FEEDBACK_URL``), described the same way.

The service does not log the recommendations it serves yet, so the popularity bias is measured on
"served-like" recommendations: the champion (:func:`recsys.registry.load_artifact`) scores the users
active in the current window, excluding what it knew they listened to, exactly as ``/recommend`` ranks a
known listener (without genre or tag filters). Once served lists are logged, read them here instead.

Writes ``reports/monitoring/drift.html``, ``drift.json`` and ``bias.json``, publishes link and markdown
artifacts, and when a threshold is crossed on a window with at least ``min_events`` events either flags
it (``on_trigger: flag``: an alert artifact and a warning) or also starts :func:`trigger_retraining`.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.training import training_flow
from recsys import monitoring
from recsys.columns import Col
from recsys.config import load_params
from recsys.feedback import FEEDBACK_COLUMNS, FeedbackStore, FeedbackUnavailableError
from recsys.io import atomic_path, write_json
from recsys.split import load_split

REPORT_DIR = Path("reports/monitoring")
DRIFT_HTML, DRIFT_JSON, BIAS_JSON = "drift.html", "drift.json", "bias.json"
MAX_REFERENCE_ROWS = 50_000  # Evidently's distances are stable well below this; more only costs time


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
def load_reference(project_dir: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Training listening as :func:`recsys.monitoring.listening_frame` rows, the items table and edges."""
    root = Path(project_dir)
    split = load_split(root / "data/split")
    items = pd.read_parquet(root / "data/prepared/items.parquet")
    pairs = monitoring.matrix_pairs(split.train_full, split.user_ids, split.item_ids)
    edges = monitoring.popularity_edges(pairs, items)
    frame = monitoring.listening_frame(pairs, items, edges)
    return monitoring.sample_rows(frame, MAX_REFERENCE_ROWS, seed), items, edges


@task(name="load-current", cache_policy=NO_CACHE)
def load_current(url: str, now: datetime, window_days: int) -> pd.DataFrame:
    """Listening feedback of the window; no events when the store does not exist or cannot be reached."""
    logger = get_run_logger()
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file is not None and not Path(sqlite_file).exists():
        logger.warning("no feedback store at %s yet: the current window is empty", sqlite_file)
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    try:
        with FeedbackStore(url, create=False) as store:
            events = store.export_frame()
    except FeedbackUnavailableError as err:
        logger.warning("feedback store unavailable, the current window is empty: %s", err)
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    return monitoring.recent_listening(events, now, window_days)


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
def measure_bias(current: pd.DataFrame, k: int, head_share: float) -> dict[str, Any]:
    """Popularity bias of the champion's served-like top-``k`` for the window's active known users."""
    from recsys import registry

    try:
        artifact = registry.load_artifact()
    except registry.RegistryError as err:
        return {"status": f"no champion: {err}"}
    active = sorted({artifact.user_index[u] for u in current[Col.USER] if u in artifact.user_index})
    if not active:
        return {"status": "no active listener known to the champion", "champion": artifact.tag}
    users = np.asarray(active, dtype=np.int64)
    top_k, _ = artifact.model.recommend(users, k, exclude=artifact.known)
    metrics = monitoring.recommendation_bias(top_k, artifact.known, users, head_share)
    return {"status": "ok", "champion": artifact.tag, "source": "served-like", **metrics}


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
    reference, items, edges = load_reference(str(root), params.seed)
    events: pd.DataFrame = load_current(url, end, settings.window_days)
    current = monitoring.listening_frame(events, items, edges)
    drift = measure_drift(reference, current, str(out_dir), settings.drift_share_threshold)
    bias = measure_bias(events, params.evaluate.primary_k, params.evaluate.head_share)
    decision = monitoring.decide(
        drift.share if drift else None, bias.get("popularity_lift"), len(events), settings
    )
    report = _drift_payload(drift, decision, len(reference), len(events), end, settings.window_days)
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
    lines += ["", f"Drift share: {share}. Bias ({bias.get('status')}):"]
    lines += [f"- {key}: {value:.3f}" for key, value in bias.items() if isinstance(value, float)]
    reasons = report["decision"]["reasons"]
    lines += ["", "Triggered: " + ("; ".join(reasons) if report["decision"]["triggered"] else "no")]
    return "\n".join(lines)


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
