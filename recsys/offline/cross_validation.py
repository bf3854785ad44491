"""Repeated splits: every model trained and measured on ``folds`` splits drawn with different seeds.

One split says how the models rank on *its* test listeners; the seeds of the split (which listens are held
out, which artists are cold) move nDCG@10 by about as much as the hybrid's lead. Fold ``i`` is the
project's split protocol (``params.yaml`` ``split``) drawn with seed ``seed + i`` (fold 0 is the project's
own split), then the ``train`` stage's recipe (:func:`recsys.offline.train.fit_all`) and the ``evaluate``
stage's protocol on its test part. The summary gives, per model and metric, the mean and the spread
(standard deviation, min, max) over the folds, and the hybrid's paired lead over each model per fold.

A fold is a pure function of the prepared tables, the item features, the settings and its seed, so folds
run anywhere (:mod:`flows.cross_validation` spreads them over Dask workers) and a rerun gives the same
numbers on one machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Col
from recsys.config import Params
from recsys.offline.features import ItemFeatures, without_identity
from recsys.specs import HYBRID, trained_models

CV_METRICS: tuple[str, ...] = ("ndcg", "recall", "precision", "coverage", "arp")
"""The metrics (at ``evaluate.primary_k``) the summary reports per model."""


@dataclass(frozen=True)
class FoldInputs:
    """What every fold reads: the prepared listens, the catalogue in split order, the item features."""

    interactions: pd.DataFrame
    item_ids: list[str]
    release_dates: pd.Series | None
    item_features: ItemFeatures


def fold_seeds(seed: int, folds: int) -> list[int]:
    """The split seeds of ``folds`` folds: the project's seed first.

    >>> fold_seeds(42, 3)
    [42, 43, 44]
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    return [seed + number for number in range(folds)]


def run_fold(inputs: FoldInputs, params: Params, seed: int) -> dict[str, Any]:
    """One fold: the split drawn with ``seed``, every model fitted on its train + valid part, measured on
    its test part; ``{"seed", "models": {name: metrics}, "leads": {name: lead}}``."""
    from recsys.offline.evaluation import evaluate
    from recsys.offline.popularity import mainstreaminess_groups
    from recsys.offline.split import make_split
    from recsys.offline.train import fit_all
    from recsys.offline.uncertainty import lead_of

    split = make_split(inputs.interactions, params.split, seed, inputs.item_ids, inputs.release_dates)
    features = without_identity(inputs.item_features, split.cold_items)
    trained = fit_all(params, split, features.matrix, feature_groups=features.group_slices)
    groups = mainstreaminess_groups(split.train_full, params.evaluate.groups)
    results = {
        name: evaluate(trained.models[name].score, split.train_full, split.test, params.evaluate, groups)
        for name in trained_models(params)
    }
    k = params.evaluate.primary_k
    wanted = [f"{metric}@{k}" for metric in CV_METRICS]
    metric = f"ndcg@{k}"
    return {
        "seed": seed,
        "n_test_users": int(results[HYBRID].metrics["n_users"]),
        "models": {
            name: {key: float(result.metrics[key]) for key in wanted} for name, result in results.items()
        },
        "leads": {
            name: lead_of(results[HYBRID], result, metric, params.evaluate.bootstrap, seed).to_dict()
            for name, result in results.items()
            if name != HYBRID
        },
    }


def summarise(folds: Sequence[Mapping[str, Any]], k: int) -> dict[str, Any]:
    """Mean and spread per model and metric over the folds, and how often the hybrid's lead was sure.

    Returns
    -------
    dict
        ``{"folds", "seeds", "metrics": {model: {metric: {"mean", "std", "min", "max"}}},
        "leads": {model: {"mean", "std", "min", "max", "sure"}}}``: ``leads`` is the hybrid's relative lead
        on ``ndcg@k`` per fold, ``sure`` the folds whose paired interval is clear of zero (either way).
    """
    models = list(folds[0]["models"])
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for name in models:
        metrics[name] = {
            key: _spread([fold["models"][name][key] for fold in folds]) for key in folds[0]["models"][name]
        }
    leads = {}
    for name in folds[0]["leads"]:
        relative = [fold["leads"][name]["relative"] for fold in folds]
        sure = sum(1 for fold in folds if _clear_of_zero(fold["leads"][name]))
        leads[name] = _spread([value for value in relative if value is not None]) | {"sure": sure}
    return {
        "folds": len(folds),
        "seeds": [fold["seed"] for fold in folds],
        "k": k,
        "metrics": metrics,
        "leads": leads,
    }


def _clear_of_zero(lead: Mapping[str, Any]) -> bool:
    """Whether a lead's interval lies wholly above or wholly below zero."""
    low, high = lead.get("delta_low"), lead.get("delta_high")
    return low is not None and high is not None and (low > 0 or high < 0)


def _spread(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
    }


def summary_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per model: ``mean ± std`` of every metric and the hybrid's lead (the markdown table's rows)."""
    rows = []
    for name, values in summary["metrics"].items():
        row: dict[str, Any] = {"model": name}
        for key, spread in values.items():
            row[key] = f"{spread['mean']:.4f} ± {spread['std']:.4f}"
        lead = summary["leads"].get(name)
        row["hybrid lead (ndcg)"] = (
            "reference"
            if lead is None
            else f"{lead['mean']:+.1%} ± {lead['std']:.1%} (clear of 0 in {lead['sure']}/{summary['folds']})"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def read_fold_inputs(prepared_dir: Any, features_dir: Any, params: Params) -> FoldInputs:
    """The prepared listens and catalogue (``data/prepared``) and the item features (``data/features``)."""
    from recsys.offline.features import load_item_features
    from recsys.paths import INTERACTIONS_TABLE, ITEMS_TABLE

    interactions = pd.read_parquet(prepared_dir / INTERACTIONS_TABLE)
    newest = params.split.cold_items == "newest"
    columns = [Col.ITEM, Col.RELEASE_DATE] if newest else [Col.ITEM]
    items = pd.read_parquet(prepared_dir / ITEMS_TABLE, columns=columns)
    features = load_item_features(features_dir)
    item_ids = items[Col.ITEM].tolist()
    if list(features.item_ids) != item_ids:
        raise ValueError(f"{features_dir} and {prepared_dir} disagree on the items: rerun the features stage")
    return FoldInputs(interactions, item_ids, items[Col.RELEASE_DATE] if newest else None, features)
