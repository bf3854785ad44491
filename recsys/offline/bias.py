"""Popularity-bias mitigation: the accuracy / long-tail trade-off of re-ranking, and the default strength.

Every strength re-ranks the model's scores with :func:`recsys.offline.popularity.rerank_popularity` and is
evaluated with the offline protocol (:func:`recsys.offline.evaluation.evaluate_variants`: the model scores
each batch of users once, for every strength), so the curve's strength-0 row equals the unmitigated
model's metrics. The default strength is the one with the largest long-tail share
whose nDCG costs at most ``max_ndcg_cost`` (relative) against strength 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.offline.batches import ScoreFn
from recsys.offline.evaluation import evaluate_variants
from recsys.offline.popularity import popularity_lift, popularity_variants
from recsys.specs import HYBRID

log = logging.getLogger(__name__)
STRENGTH = "strength"
NDCG_COST = "ndcg_cost"
LIFT = "popularity_lift"
RULE = (
    "largest long_tail_share@{k} among strengths whose ndcg@{k} is at most {cost:.1%} below the "
    "unmitigated model's (strength 0); ties go to the smaller strength"
)


def group_popularity_lift(
    top_k_items: np.ndarray, train: sp.csr_matrix, users: np.ndarray, groups: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Mean per-user popularity lift (recommendations vs own training listening), overall and per group.

    Parameters
    ----------
    top_k_items
        ``(len(users), k)`` recommended items padded with ``PAD_ITEM``.
    train
        ``(n_users, n_items)`` training interactions (popularity and each user's own listening).
    users
        Row of ``train`` for each row of ``top_k_items``.
    groups
        Group name -> user indices.

    Returns
    -------
    dict[str, float]
        ``"overall"`` and each group name -> mean lift over its users with a finite lift (NaN if none).

    Examples
    --------
    >>> train = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 0]]))
    >>> lift = group_popularity_lift(np.array([[0], [2]]), train, np.array([0, 1]), {"a": np.array([1])})
    >>> {name: round(value, 3) for name, value in lift.items()}
    {'overall': 1.0, 'a': 0.667}
    """
    lift = popularity_lift(top_k_items, train, users)
    selected = {"overall": np.ones(len(users), dtype=bool)}
    selected |= {name: np.isin(users, members) for name, members in groups.items()}
    return {name: _finite_mean(lift[rows]) for name, rows in selected.items()}


def tradeoff_curve(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    popularity: np.ndarray,
    strengths: Sequence[float],
    params: EvaluateParams,
    groups: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """Accuracy and popularity metrics of the re-ranked model at every strength.

    Parameters
    ----------
    score_fn
        The unmitigated model's scores for a batch of user indices.
    train, test
        Interactions as in :func:`recsys.offline.evaluation.evaluate` (train items are excluded from
        rankings).
    popularity
        ``(n_items,)`` popularity the re-ranking penalises (normally training users per item).
    strengths
        Re-ranking strengths (``>= 0``); evaluated in ascending order, duplicates dropped.
    params
        Evaluation settings; metrics are reported at ``params.primary_k``.
    groups
        User group name -> user indices.

    Returns
    -------
    pd.DataFrame
        One row per strength: ``strength``, ``ndcg@k``, ``arp@k``, ``long_tail_share@k``,
        ``coverage@k``, ``auc``, ``popularity_lift`` (mean per-user lift), ``ndcg_cost`` (relative to
        strength 0, NaN when 0 is not among the strengths), and per group ``ndcg@k/<group>`` and
        ``popularity_lift/<group>``.
    """
    k = params.primary_k
    ordered = sorted(set(map(float, strengths)))
    evaluated = evaluate_variants(
        score_fn, popularity_variants(popularity, ordered), train, test, params, groups
    )
    rows = []
    for strength in ordered:
        ranked = evaluated[strength]
        lift = group_popularity_lift(ranked.top_k[:, :k], train, ranked.users, groups)
        rows.append(_curve_row(strength, ranked.result.metrics, ranked.result.groups, lift, k))
    curve = pd.DataFrame(rows)
    curve[NDCG_COST] = ndcg_cost(curve, k)
    return curve


def ndcg_cost(curve: pd.DataFrame, k: int) -> pd.Series:
    """Relative nDCG@k loss of each row against the strength-0 row (NaN without one)."""
    base = curve.loc[curve[STRENGTH] == 0.0, f"ndcg@{k}"]
    if base.empty or not base.iloc[0] > 0:
        return pd.Series(np.nan, index=curve.index)
    return (base.iloc[0] - curve[f"ndcg@{k}"]) / base.iloc[0]


def choose_strength(curve: pd.DataFrame, max_ndcg_cost: float, k: int = 10) -> tuple[float, dict[str, Any]]:
    """The strength with the largest long-tail share whose relative nDCG cost is within budget.

    Parameters
    ----------
    curve
        Output of :func:`tradeoff_curve`; must contain the strength-0 row (the reference).
    max_ndcg_cost
        Largest allowed relative nDCG@k loss against strength 0, e.g. ``0.03``.
    k
        The cut-off of the curve's metrics (``params.primary_k``).

    Returns
    -------
    tuple
        ``(strength, row)``: the chosen strength and its curve row as a dict (with ``ndcg_cost``).
        Strength 0 always qualifies, so it is chosen when no positive strength fits the budget.

    Raises
    ------
    ValueError
        When the curve has no strength-0 row. An unmitigated nDCG of 0 keeps strength 0.
    """
    if not (curve[STRENGTH] == 0.0).any():
        raise ValueError("the curve needs a strength-0 row: the cost is relative to the unmitigated model")
    costs = ndcg_cost(curve, k)
    if costs.isna().all():
        # The unmitigated model finds nothing (a model trained for seconds): there is no accuracy to trade
        # for the long tail, so it is served unmitigated rather than the stage failing.
        log.warning("ndcg@%d is 0 at strength 0: no relative cost can be computed; strength 0 is kept", k)
        costs = pd.Series(np.where(curve[STRENGTH] == 0.0, 0.0, np.inf), index=curve.index)
    # A float tolerance keeps strength 0 (cost exactly 0) and costs equal to the budget eligible.
    eligible = curve.assign(**{NDCG_COST: costs})[costs <= max_ndcg_cost + 1e-12]
    best = eligible.sort_values([f"long_tail_share@{k}", STRENGTH], ascending=[False, True]).iloc[0]
    row = {key: _plain(value) for key, value in best.items()}
    return float(best[STRENGTH]), row


def bias_report(curve: pd.DataFrame, max_ndcg_cost: float, k: int) -> dict[str, Any]:
    """``{"strengths": [rows], "chosen": {...}, "rule": ...}``: the content of ``metrics/bias.json``."""
    strength, row = choose_strength(curve, max_ndcg_cost, k)
    return {
        "strengths": [{key: _plain(value) for key, value in r.items()} for r in curve.to_dict("records")],
        "chosen": {
            STRENGTH: strength,
            NDCG_COST: row[NDCG_COST],
            f"ndcg@{k}": row[f"ndcg@{k}"],
            f"long_tail_share@{k}": row[f"long_tail_share@{k}"],
            f"arp@{k}": row[f"arp@{k}"],
        },
        "rule": RULE.format(k=k, cost=max_ndcg_cost),
        "max_ndcg_cost": max_ndcg_cost,
        "k": k,
    }


def measured_model(bias: Mapping[str, Any]) -> str:
    """The model whose lists ``metrics/bias.json`` measured (``model``): the run's challenger; a report from
    before the key measured the hybrid. Its mitigation is served only with that model.

    >>> measured_model({"model": "ranker"}), measured_model({})
    ('ranker', 'lightfm_hybrid')
    """
    return str(bias.get("model", HYBRID))


def served_strength(bias: Mapping[str, Any], serve: str) -> float:
    """The popularity re-ranking strength a model is packaged and served with: the report's when its
    mitigation rule serves popularity re-ranking (a report without the rule: its chosen strength), else 0,
    and 0 with ``off``."""
    if serve != "chosen":
        return 0.0
    mitigation = bias.get("mitigation")
    if mitigation is None:
        return float(bias["chosen"][STRENGTH])
    return float(mitigation["strength"]) if mitigation["served"] == "popularity" else 0.0


def served_calibration(bias: Mapping[str, Any], serve: str) -> dict[str, Any] | None:
    """The calibration a model is packaged and served with (``metrics/bias.json``'s mitigation rule chose
    it), as its metadata holds it; None otherwise and with ``off``."""
    mitigation = bias.get("mitigation") or {}
    if serve != "chosen" or mitigation.get("served") != "calibration":
        return None
    return dict(mitigation["calibration"])


def served_candidate(
    candidate: Mapping[str, Any],
    bias: Mapping[str, Any],
    strength: float,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The gate input of a model as listeners get it: re-ranked at ``strength``.

    Parameters
    ----------
    candidate
        The unmitigated model's gate input (:func:`recsys.offline.gate.candidate_from_report`).
    bias
        Its trade-off report (``metrics/bias.json``, :func:`bias_report`), measured on the same split.
    strength
        The served strength; 0 returns ``candidate`` unchanged.
    calibration
        The served calibration (:func:`served_calibration`): the report's measurement of it, which the
        gate input then carries (``calibration``) so the packaged model is served as measured.

    Returns
    -------
    dict
        ``{"metrics", "groups", "bias_strength"}``: the curve row's metrics at ``strength`` and, per user
        group, the row's group columns (``ndcg@k``, ``popularity_lift``).

    Raises
    ------
    ValueError
        When the report has no row at ``strength``.
    """
    if calibration is not None:
        measured = bias["mitigation"]["served_metrics"]
        return {
            # A metric the report could not compute (None in JSON) is left out, as the curve's rows leave it.
            "metrics": {key: value for key, value in measured["metrics"].items() if value is not None},
            "groups": {
                name: {key: value for key, value in values.items() if value is not None}
                for name, values in measured["groups"].items()
            },
            "bias_strength": 0.0,
            "calibration": dict(calibration),
        }
    if strength == 0:
        return {"metrics": dict(candidate["metrics"]), "groups": dict(candidate.get("groups", {}))} | {
            "bias_strength": 0.0
        }
    rows = [row for row in bias.get("strengths", []) if row.get(STRENGTH) == strength]
    if not rows:
        measured = sorted(row.get(STRENGTH) for row in bias.get("strengths", []))
        raise ValueError(f"metrics/bias.json has no row at strength {strength:g} (it has {measured})")
    metrics: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {}
    for key, value in rows[0].items():
        if key in (STRENGTH, NDCG_COST) or value is None:
            continue
        if "/" in key:
            metric, group = key.split("/", 1)
            groups.setdefault(group, {})[metric] = float(value)
        else:
            metrics[key] = float(value)
    return {"metrics": metrics, "groups": groups, "bias_strength": float(strength)}


def _curve_row(
    strength: float,
    metrics: Mapping[str, float | int],
    groups: Mapping[str, Mapping[str, float | int]],
    lift: Mapping[str, float],
    k: int,
) -> dict[str, float]:
    # Every metric the evaluation gives (not only the curve's axes): the row is also the gate's input for a
    # model served at this strength (:func:`served_candidate`).
    row = {STRENGTH: strength} | {key: float(value) for key, value in metrics.items()}
    row[LIFT] = lift["overall"]
    for name, values in groups.items():
        row[f"ndcg@{k}/{name}"] = float(values.get(f"ndcg@{k}", np.nan))
        row[f"{LIFT}/{name}"] = lift[name]
    return row


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar: numpy numbers unwrapped, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
