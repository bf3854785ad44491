"""Shaping evaluation results into ``metrics/offline.json`` and the tables behind the DVC plots, and
reading them back (:func:`read_report`, :func:`metrics_rows`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.config import EvaluateParams, Params
from recsys.io import require_json
from recsys.offline.evaluation import EvaluationResult
from recsys.offline.uncertainty import Lead, lead_of
from recsys.paths import BIAS_METRICS, OFFLINE_METRICS

GROUP_METRICS = ("precision", "recall", "ndcg", "map", "arp", "long_tail_share")


def offline_report(
    results: Mapping[str, EvaluationResult],
    cold: Mapping[str, EvaluationResult],
    params: Params,
    split_summary: Mapping[str, Any],
    reference: str | None = None,
) -> dict[str, Any]:
    """``{"protocol", "models", "cold_start", "groups", "uncertainty"}`` as documented in the README.

    ``uncertainty`` holds the lead of ``reference`` (the champion candidate, e.g. the hybrid) over every
    other model on ``ndcg@<primary_k>``, with a paired bootstrap interval over the test listeners
    (:func:`leads_over`); it is left out without a reference.
    """
    protocol = {
        "split": params.split.model_dump(),
        "seed": params.seed,
        "ks": list(params.evaluate.ks),
        "head_share": params.evaluate.head_share,
        "exclude_train_items": True,
        "candidates": "all items (cold-start: the held-out artists only)",
        "user_groups": "equal thirds by mainstreaminess (mean popularity percentile of train items)",
        "sizes": dict(split_summary),
    }
    report = {
        "protocol": protocol,
        "models": {name: dict(result.metrics) for name, result in results.items()},
        "cold_start": {name: dict(result.metrics) for name, result in cold.items()},
        "groups": {name: {g: dict(m) for g, m in result.groups.items()} for name, result in results.items()},
    }
    if reference is not None and reference in results:
        report["uncertainty"] = leads_over(results, reference, params)
    return report


def leads_over(results: Mapping[str, EvaluationResult], reference: str, params: Params) -> dict[str, Any]:
    """The lead of ``reference`` over every other model on the primary metric, with its interval.

    ``{"reference", "metric", "method", "resamples", "confidence", "seed", "leads": {model: Lead dict}}``;
    each lead's ``new`` is the reference's mean, ``old`` the model's, ``relative`` the lead as a share of
    the model's value. Seeded by ``params.seed``: a rerun writes the same numbers.
    """
    metric = f"ndcg@{params.evaluate.primary_k}"
    settings = params.evaluate.bootstrap
    leads: dict[str, Lead] = {
        name: lead_of(results[reference], result, metric, settings, params.seed)
        for name, result in results.items()
        if name != reference
    }
    return {
        "reference": reference,
        "metric": metric,
        "method": "paired bootstrap over the test listeners (percentile interval)",
        "resamples": settings.resamples,
        "confidence": settings.confidence,
        "seed": params.seed,
        "leads": {name: lead.to_dict() for name, lead in leads.items()},
    }


def metrics_plots(report: Mapping[str, Any], params: EvaluateParams) -> dict[str, pd.DataFrame]:
    """Tables for DVC plots: metrics by k (one per metric) and primary-k metrics by user group."""
    models = report["models"]
    tables: dict[str, pd.DataFrame] = {}
    for metric in ("precision", "recall", "ndcg", "map", "coverage"):
        rows = [
            {"k": k} | {name: values.get(f"{metric}@{k}") for name, values in models.items()}
            for k in params.ks
        ]
        tables[f"{metric}_by_k.csv"] = pd.DataFrame(rows)
    k = params.primary_k
    rows = [
        {"group": group, "model": name} | {m: values.get(f"{m}@{k}") for m in GROUP_METRICS}
        for name, groups in report["groups"].items()
        for group, values in groups.items()
    ]
    tables["metrics_by_group.csv"] = pd.DataFrame(rows)
    return tables


def headline(report: Mapping[str, Any], k: int) -> dict[str, dict[str, float]]:
    """Per model, the headline numbers at ``k`` plus AUC and cold-start AUC, rounded to 4 places."""
    keys = (f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}", f"coverage@{k}", f"arp@{k}", "auc")
    table = {
        name: {key: round(float(values[key]), 4) for key in keys if key in values}
        for name, values in report["models"].items()
    }
    for name, values in report.get("cold_start", {}).items():
        table.setdefault(name, {})["cold_start_auc"] = round(float(values["auc"]), 4)
    return table


def read_report(project_dir: Path) -> dict[str, Any]:
    """``metrics/offline.json`` of the project."""
    return _read_stage_json(project_dir / OFFLINE_METRICS, "evaluate")


def read_bias(project_dir: Path) -> dict[str, Any]:
    """``metrics/bias.json`` of the project (the re-ranking trade-off and the chosen strength)."""
    return _read_stage_json(project_dir / BIAS_METRICS, "bias")


def _read_stage_json(path: Path, stage: str) -> dict[str, Any]:
    return require_json(path, f"missing: the {stage} stage did not write it")


def metrics_rows(report: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """One row per model with its headline metrics (the table ``recsys evaluate`` prints)."""
    return [{"model": name} | values for name, values in headline(report, k).items()]
