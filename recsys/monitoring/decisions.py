"""Monitoring decisions: do the drift share and the popularity lift cross their thresholds, and the report.

Pure functions over what :mod:`recsys.monitoring.drift` and :mod:`recsys.monitoring.served_bias` measured; the
monitoring flow (:mod:`flows.monitoring`) reads the stores, calls these and writes the reports.

Examples
--------
>>> decide(0.6, None, n_events=80, params=MonitoringParams()).triggered
True
>>> decide(0.6, None, n_events=10, params=MonitoringParams()).triggered
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from recsys.config import MonitoringParams
from recsys.monitoring.drift import DriftSummary


@dataclass(frozen=True)
class TriggerDecision:
    """What the thresholds say: drift, bias, whether the window had enough events, and why."""

    drift: bool
    bias: bool
    enough_events: bool
    reasons: tuple[str, ...]

    enough_bias_events: bool | None = None
    """Whether the lift was measured on at least ``min_events`` served lists (None: ``enough_events``)."""

    @property
    def triggered(self) -> bool:
        """A threshold was crossed on a window with at least ``min_events`` events (or served lists)."""
        enough_bias = self.enough_events if self.enough_bias_events is None else self.enough_bias_events
        return (self.enough_events and self.drift) or (enough_bias and self.bias)


def decide(
    drift_share: float | None,
    popularity_lift_value: float | None,
    n_events: int,
    params: MonitoringParams,
    n_lists: int | None = None,
) -> TriggerDecision:
    """Compare the drift share and the popularity lift with their thresholds.

    ``None`` means the value could not be measured (no events, no champion) and crosses nothing. A
    window with fewer than ``params.min_events`` listening events never triggers: its numbers are noise.
    When the lift was measured on the window's served lists, pass their number as ``n_lists``: the lift
    then needs ``min_events`` lists instead of listening events.
    """
    drift = drift_share is not None and drift_share >= params.drift_share_threshold
    lift = popularity_lift_value
    bias = lift is not None and bool(np.isfinite(lift)) and lift >= params.popularity_lift_threshold
    enough = n_events >= params.min_events
    enough_bias = None if n_lists is None else n_lists >= params.min_events
    reasons = []
    if drift:
        reasons.append(f"drift share {drift_share:.2f} >= {params.drift_share_threshold}")
    if bias:
        reasons.append(f"popularity lift {lift:.2f} >= {params.popularity_lift_threshold}")
    if (drift and not enough) or (bias and not enough and enough_bias is None):
        reasons.append(f"only {n_events} events (< min_events {params.min_events}): not acted on")
    if bias and enough_bias is False:
        reasons.append(f"only {n_lists} served lists (< min_events {params.min_events}): not acted on")
    return TriggerDecision(
        drift=drift, bias=bias, enough_events=enough, reasons=tuple(reasons), enough_bias_events=enough_bias
    )


def drift_payload(
    drift: DriftSummary | None,
    decision: TriggerDecision,
    n_reference: int,
    n_events: int,
    end: datetime,
    window_days: int,
) -> dict[str, Any]:
    """The ``drift.json`` payload: the window, its sizes, the drift summary and the decision."""
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


def run_lines(
    report: Mapping[str, Any], bias: Mapping[str, Any], settings: MonitoringParams, workspace: str
) -> list[str]:
    """What ``recsys monitor run`` prints: each number against its threshold, the action, where to look."""

    def against(value: Any, threshold: float, above: str) -> str:
        if not isinstance(value, int | float):
            return "not measured"
        return f"{value:.2f} (threshold {threshold:g}: {above if value >= threshold else 'below'})"

    drift = (report.get("drift") or {}).get("share")
    lift = bias.get("popularity_lift")
    decision = report.get("decision") or {}
    lines = [
        f"drift share: {against(drift, settings.drift_share_threshold, 'drifted')}",
        f"popularity lift: {against(lift, settings.popularity_lift_threshold, 'too popular')}",
        f"window: {report.get('n_events', 0):,} feedback events, {report.get('n_served', 0):,} served lists",
        f"action: {report.get('action') or (settings.on_trigger if decision.get('triggered') else 'none')}"
        + "".join(f"; {reason}" for reason in decision.get("reasons", [])),
        f"recorded in {workspace}: recsys monitor history prints every run, recsys monitor ui plots them",
    ]
    return lines


def summary_markdown(report: dict[str, Any], bias: dict[str, Any]) -> str:
    """The monitoring run as markdown: drift per column, bias of served lists and test set, the verdict."""
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
    lines += exploration_lines(report.get("exploration") or {})
    reasons = report["decision"]["reasons"]
    lines += ["", "Triggered: " + ("; ".join(reasons) if report["decision"]["triggered"] else "no")]
    return "\n".join(lines)


def exploration_lines(outcome: dict[str, Any]) -> list[str]:
    """The exploration of the window's served lists (:func:`recsys.experiments.replay.exploration_outcome`)
    as markdown: the share of lists and slots that explored, and the like rate of explored slots beside the
    model's own (95 % intervals, per listener)."""
    if not outcome.get("lists"):
        return ["", "Exploration: no logged list carries propensities in the window."]

    def rate(name: str) -> str:
        e = outcome[f"{name}_like_rate"]
        return f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]" if e["value"] == e["value"] else "n/a"

    return [
        "",
        f"Exploration: {outcome['list_share']:.1%} of {outcome['lists']} logged lists explored "
        f"({outcome['slot_share']:.1%} of slots); like rate of explored slots {rate('explored')}, "
        f"of the model's slots {rate('model')}.",
    ]


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


DRIFT_EVENT = "recsys.monitoring.drift-detected"
BIAS_EVENT = "recsys.monitoring.popularity-lift-exceeded"
FEEDBACK_EVENT = "recsys.feedback.accumulated"
MONITORING_EVENTS: tuple[str, ...] = (DRIFT_EVENT, BIAS_EVENT, FEEDBACK_EVENT)
"""The events the monitoring flow emits; the feedback retraining deployment's trigger expects them."""


def monitoring_events(decision: TriggerDecision, new_feedback: int, min_new_feedback: int) -> list[str]:
    """The events a monitoring run emits: drift or popularity lift past their thresholds on enough data, and
    at least ``min_new_feedback`` feedback events stored since the last retraining's cursor.

    >>> quiet = TriggerDecision(drift=False, bias=False, enough_events=True, reasons=())
    >>> monitoring_events(quiet, 10, 1000), monitoring_events(quiet, 1000, 1000)
    ([], ['recsys.feedback.accumulated'])
    """
    enough_bias = (
        decision.enough_events if decision.enough_bias_events is None else decision.enough_bias_events
    )
    events = [DRIFT_EVENT] if decision.drift and decision.enough_events else []
    events += [BIAS_EVENT] if decision.bias and enough_bias else []
    events += [FEEDBACK_EVENT] if new_feedback >= min_new_feedback else []
    return events


def event_payload(
    report: Mapping[str, Any], bias: Mapping[str, Any], new_feedback: int, decision: TriggerDecision
) -> dict[str, Any]:
    """What the monitoring events carry: the drift share, the popularity lift, new feedback, the reasons."""
    drift = report.get("drift")
    return {
        "drift_share": drift and drift["share"],
        "popularity_lift": bias.get("popularity_lift"),
        "new_feedback": new_feedback,
        "reasons": list(decision.reasons),
    }


def thresholds(settings: MonitoringParams) -> dict[str, float]:
    """The thresholds a run is judged by, as the workspace records them beside its numbers."""
    return {
        "drift_share": settings.drift_share_threshold,
        "popularity_lift": settings.popularity_lift_threshold,
    }
