"""The promotion gate: may a challenger replace the champion? Pure functions, no I/O.

Both models must be measured on the same test split. A model is described by a *candidate* mapping::

    {"metrics": {"ndcg@10": 0.31, "coverage@10": 0.12, "arp@10": 210.0, ...},
     "groups": {"niche": {"ndcg@10": 0.2, ...}, "medium": {...}, "mainstream": {...}}}

which :func:`candidate_from_report` cuts out of ``metrics/offline.json``.

Rules (all must hold; the thresholds come from :class:`recsys.config.GateParams`)
-------------------------------------------------------------------------------
- No champion: the challenger is promoted (first model).
- Primary metric: the challenger must be *strictly* better than the champion and better by at least
  ``min_improvement``. A tie never replaces the champion, even with ``min_improvement = 0``: a new model
  that is no better is only a risk. With ``min_improvement_on: bound`` (the default) ``min_improvement``
  applies to the lower end of the lead's paired bootstrap interval (:mod:`recsys.offline.uncertainty`,
  a :class:`~recsys.offline.uncertainty.Lead` passed as ``lead``): a win within the noise of which
  listeners happen to be in the test split does not promote. Without a paired measurement (a champion
  that could not be measured on this split) the point estimate is used, and the reason says so.
- Coverage: ``coverage@k`` may drop by at most ``max_coverage_drop`` (absolute).
- Popularity bias: ``arp@k`` may grow by at most ``max_arp_increase_ratio`` relative to the champion's.
- Fairness: no user group's ``ndcg@k`` may drop by more than ``max_group_ndcg_drop`` (absolute). Groups
  without the metric on either side (a group with no evaluated user) are not compared.

The retraining flow uses :func:`decide_feedback` instead: a challenger retrained on listener feedback
must not be worse beyond tolerance (it needs no win on the test split), see its docstring.

``k`` is the cut-off of the primary metric (``ndcg@10`` -> 10; :data:`DEFAULT_K` when it has none). A guard
metric missing from either side fails its rule: the gate fails closed. Differences smaller than
:data:`EPSILON` are float noise: they neither make a win nor break a tolerance.

Examples
--------
>>> from recsys.config import GateParams
>>> champion = {"metrics": {"ndcg@10": 0.30, "coverage@10": 0.10, "arp@10": 100.0}, "groups": {}}
>>> challenger = {"metrics": {"ndcg@10": 0.32, "coverage@10": 0.10, "arp@10": 101.0}, "groups": {}}
>>> decide(challenger, champion, GateParams()).promote
True
>>> decide(champion, champion, GateParams(min_improvement_on="point")).reasons
['ndcg@10 does not improve: 0.3000 -> 0.3000 (delta +0.0000; needs to be > 0 and >= +0.0000)']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recsys.config import GateParams
from recsys.errors import RecsysError
from recsys.offline.uncertainty import Lead
from recsys.specs import HYBRID

EPSILON = 1e-12
"""Differences below this are treated as float noise."""

DEFAULT_K = 10
"""Cut-off of the guard metrics when the primary metric has none (e.g. ``auc``)."""

Comparison = dict[str, dict[str, float | bool | None]]


class GateError(RecsysError):
    """The gate's inputs are unusable (a model missing from the report, the primary metric missing)."""


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, why, and the metric-by-metric comparison behind it.

    Attributes
    ----------
    promote : bool
        True when the challenger should become the champion.
    reasons : list of str
        Human-readable reasons with the numbers: every failed rule when refused, the win when promoted.
    comparison : dict
        ``metric -> {"challenger", "champion", "delta", "tolerance", "ok"}``. ``delta`` is challenger minus
        champion; ``tolerance`` is the required gain for the primary metric, the allowed absolute drop for
        coverage and group metrics (keys ``"ndcg@10[niche]"``), and the allowed relative increase for ARP.
    """

    promote: bool
    reasons: list[str] = field(default_factory=list)
    comparison: Comparison = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "comparison": {name: dict(row) for name, row in self.comparison.items()},
        }


def candidate_from_report(report: Mapping[str, Any], name: str = HYBRID) -> dict[str, Any]:
    """The gate input of one model of an offline report (``metrics/offline.json``).

    Parameters
    ----------
    report : Mapping
        ``{"models": {name: metrics}, "groups": {name: {group: metrics}}, ...}``.
    name : str
        The model, ``lightfm_hybrid`` by default.

    Returns
    -------
    dict
        ``{"metrics": {metric: number}, "groups": {group: {metric: number}}}`` (numbers only).
    """
    models = report.get("models", {})
    if name not in models:
        raise GateError(f"model {name!r} is not in the offline report (it has {sorted(models)})")
    groups = report.get("groups", {}).get(name, {})
    return {
        "metrics": _numbers(models[name]),
        "groups": {group: _numbers(values) for group, values in groups.items()},
    }


def decide(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    params: GateParams,
    lead: Lead | None = None,
) -> GateDecision:
    """Decide whether ``challenger`` replaces ``champion`` (candidates as in the module docstring).

    Parameters
    ----------
    challenger, champion : Mapping
        ``{"metrics": {...}, "groups": {...}}``; ``champion`` is None when there is none yet.
    params : GateParams
        The primary metric and the tolerances.
    lead : Lead, optional
        The challenger's lead over the champion on the primary metric, paired per listener (its interval
        is what ``min_improvement_on: bound`` holds to ``min_improvement``).

    Returns
    -------
    GateDecision
        Refused with one reason per failed rule, or promoted with the reason for it.
    """
    primary = params.primary_metric
    challenger_metrics = challenger.get("metrics", {})
    if primary not in challenger_metrics:
        raise GateError(f"the challenger has no {primary!r} (it has {sorted(challenger_metrics)})")
    k = metric_k(primary)
    if champion is None:
        return GateDecision(
            True, ["first model: there is no champion to compare with"], _alone(challenger, primary, k)
        )
    if primary not in champion.get("metrics", {}):
        raise GateError(f"the champion has no {primary!r}: re-evaluate it on the current test split")
    checks = [
        _primary_rule(challenger, champion, params, lead),
        _coverage_rule(challenger, champion, f"coverage@{k}", params.max_coverage_drop),
        _arp_rule(challenger, champion, f"arp@{k}", params.max_arp_increase_ratio),
        *_group_rules(challenger, champion, f"ndcg@{k}", params.max_group_ndcg_drop),
    ]
    comparison = {name: row for name, row, _ in checks}
    failed = [reason for _, row, reason in checks if not row["ok"]]
    if failed:
        return GateDecision(False, failed, comparison)
    return GateDecision(True, [checks[0][2]], comparison)


def decide_feedback(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any],
    params: GateParams,
    lead: Lead | None = None,
) -> GateDecision:
    """The retraining flow's gate: promote a feedback challenger unless it is worse beyond tolerance.

    A challenger retrained on listener feedback holds information the champion lacks, which the fixed
    test split cannot reward, so it needs no win there: its primary metric may drop by at most
    ``feedback_max_primary_drop``, the guards of :func:`decide` apply unchanged, and on the held-out recent
    feedback ``feedback_metric`` may drop by at most ``feedback_max_drop``. That last tolerance is wide on
    purpose: the champion chose what the listeners were shown, so it is favoured on their feedback
    (exposure bias); the rule catches a challenger that forgot what listeners liked. When either side has
    no ``feedback_metric`` (no held-out like of a known artist), only the test-split rules apply. With
    ``min_improvement_on: bound`` and a paired ``lead``, the primary drop is held to its tolerance at the
    lower end of the lead's interval (non-inferiority with the noise of the split counted).

    Examples
    --------
    >>> from recsys.config import GateParams
    >>> champion = {"metrics": {"ndcg@10": 0.30, "coverage@10": 0.1, "arp@10": 100.0}, "groups": {}}
    >>> same = {"metrics": {"ndcg@10": 0.298, "coverage@10": 0.1, "arp@10": 100.0}, "groups": {}}
    >>> decide_feedback(same, champion, GateParams()).promote
    True
    """
    primary = params.primary_metric
    for role, candidate in (("challenger", challenger), ("champion", champion)):
        if primary not in candidate.get("metrics", {}):
            raise GateError(f"the {role} has no {primary!r} on the test split")
    k = metric_k(primary)
    checks = [
        _tolerance_rule(
            challenger["metrics"],
            champion["metrics"],
            primary,
            params.feedback_max_primary_drop,
            _bound(lead, params, primary),
        ),
        _coverage_rule(challenger, champion, f"coverage@{k}", params.max_coverage_drop),
        _arp_rule(challenger, champion, f"arp@{k}", params.max_arp_increase_ratio),
        *_group_rules(challenger, champion, f"ndcg@{k}", params.max_group_ndcg_drop),
    ]
    if _pair(challenger["metrics"], champion["metrics"], params.feedback_metric) is not None:
        checks.append(
            _tolerance_rule(
                challenger["metrics"], champion["metrics"], params.feedback_metric, params.feedback_max_drop
            )
        )
    comparison = {name: row for name, row, _ in checks}
    failed = [reason for _, row, reason in checks if not row["ok"]]
    if failed:
        return GateDecision(False, failed, comparison)
    held = [name for name, _, _ in checks if name in (primary, params.feedback_metric)]
    return GateDecision(
        True, [f"not worse beyond tolerance on {' and '.join(held)}: {checks[0][2]}"], comparison
    )


def _tolerance_rule(
    new_metrics: Mapping[str, Any],
    old_metrics: Mapping[str, Any],
    name: str,
    max_drop: float,
    lead: Lead | None = None,
) -> _Check:
    new, old = float(new_metrics[name]), float(old_metrics[name])
    drop = old - new
    # A bound that is not a number (no listener to pair) fails the rule rather than falling back.
    worst = (
        drop if lead is None else max(drop, -lead.delta_low) if math.isfinite(lead.delta_low) else math.inf
    )
    ok = _finite(new, old, worst) and worst <= max_drop + EPSILON
    verdict = "holds" if ok else "drops too much"
    numbers = f"{old:.4f} -> {new:.4f} (drop {drop:+.4f}"
    if lead is not None:
        numbers += f", at most {worst:+.4f} at the {lead.confidence:.0%} bound"
    reason = f"{name} {verdict}: {numbers}; allowed {max_drop:.4f})"
    return name, _interval(_row(new, old, new - old, ok, max_drop), lead), reason


def metric_k(metric: str) -> int:
    """The cut-off of a ``name@k`` metric (:data:`DEFAULT_K` for a metric without one)."""
    _, at, k = metric.partition("@")
    return int(k) if at and k.isdigit() else DEFAULT_K


def render_markdown(decision: GateDecision) -> str:
    """A Markdown summary (verdict, reasons, comparison table), e.g. for a Prefect artifact."""
    verdict = "promote the challenger" if decision.promote else "keep the champion"
    lines = [f"## Gate decision: {verdict}", "", *(f"- {reason}" for reason in decision.reasons), ""]
    lines += [
        "| metric | challenger | champion | delta | tolerance | ok |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for name, row in decision.comparison.items():
        cells = [_cell(row.get(key)) for key in ("challenger", "champion", "delta", "tolerance")]
        lines.append(f"| {name} | {' | '.join(cells)} | {'yes' if row.get('ok') else '**no**'} |")
    return "\n".join(lines) + "\n"


_Check = tuple[str, dict[str, float | bool | None], str]


def _primary_rule(
    challenger: Mapping[str, Any], champion: Mapping[str, Any], params: GateParams, lead: Lead | None
) -> _Check:
    name, required = params.primary_metric, params.min_improvement
    new, old = float(challenger["metrics"][name]), float(champion["metrics"][name])
    delta = new - old
    bound = _bound(lead, params, name)
    held = delta if bound is None else bound.delta_low
    ok = _finite(new, old, held) and delta > EPSILON and held >= required - EPSILON
    if bound is None:
        numbers = f"{old:.4f} -> {new:.4f} (delta {delta:+.4f}; needs to be > 0 and >= {required:+.4f})"
        if params.min_improvement_on == "bound":
            numbers += " [point estimate: no paired measurement]"
    else:
        numbers = (
            f"{old:.4f} -> {new:.4f} (delta {delta:+.4f}, {bound.confidence:.0%} interval "
            f"[{bound.delta_low:+.4f}, {bound.delta_high:+.4f}]; "
            f"needs > 0 and a lower bound >= {required:+.4f})"
        )
    reason = f"{name} improves: {numbers}" if ok else f"{name} does not improve: {numbers}"
    return name, _interval(_row(new, old, delta, ok, required), bound), reason


def _bound(lead: Lead | None, params: GateParams, metric: str) -> Lead | None:
    """The lead whose interval the rule holds to its tolerance (None: the point estimate decides)."""
    if lead is None or params.min_improvement_on != "bound":
        return None
    if lead.metric and lead.metric != metric:
        raise GateError(f"the paired lead is on {lead.metric!r}, the gate decides on {metric!r}")
    return lead


def _interval(row: dict[str, float | bool | None], lead: Lead | None) -> dict[str, float | bool | None]:
    if lead is None:
        return row
    return row | {"delta_low": lead.delta_low, "delta_high": lead.delta_high}


def _coverage_rule(
    challenger: Mapping[str, Any], champion: Mapping[str, Any], name: str, max_drop: float
) -> _Check:
    values = _pair(challenger["metrics"], champion["metrics"], name)
    if values is None:
        return name, _row(None, None, None, False, max_drop), _missing(name, "coverage")
    new, old = values
    drop = old - new
    ok = _finite(new, old) and drop <= max_drop + EPSILON
    reason = f"{name} drops too much: {old:.4f} -> {new:.4f} (drop {drop:.4f} > allowed {max_drop:.4f})"
    return name, _row(new, old, new - old, ok, max_drop), reason


def _arp_rule(
    challenger: Mapping[str, Any], champion: Mapping[str, Any], name: str, max_ratio: float
) -> _Check:
    values = _pair(challenger["metrics"], champion["metrics"], name)
    if values is None:
        return name, _row(None, None, None, False, max_ratio), _missing(name, "popularity-bias")
    new, old = values
    ratio = relative_increase(new, old)
    ok = _finite(new, old) and ratio <= max_ratio + EPSILON
    reason = (
        f"{name} (popularity bias) grows too much: {old:.4f} -> {new:.4f} "
        f"(+{ratio:.1%} > allowed +{max_ratio:.1%})"
    )
    return name, _row(new, old, new - old, ok, max_ratio), reason


def _group_rules(
    challenger: Mapping[str, Any], champion: Mapping[str, Any], name: str, max_drop: float
) -> list[_Check]:
    checks = []
    new_groups, old_groups = challenger.get("groups", {}), champion.get("groups", {})
    for group in sorted(set(new_groups) & set(old_groups)):
        values = _pair(new_groups[group], old_groups[group], name)
        if values is None:
            continue
        new, old = values
        drop = old - new
        ok = _finite(new, old) and drop <= max_drop + EPSILON
        reason = (
            f"{name} of the {group!r} users drops too much: {old:.4f} -> {new:.4f} "
            f"(drop {drop:.4f} > allowed {max_drop:.4f})"
        )
        checks.append((f"{name}[{group}]", _row(new, old, new - old, ok, max_drop), reason))
    return checks


def relative_increase(new: float, old: float) -> float:
    """``(new - old) / old``; from 0, any increase is infinite and none is 0."""
    if old > 0:
        return (new - old) / old
    return math.inf if new > old else 0.0


def _alone(challenger: Mapping[str, Any], primary: str, k: int) -> Comparison:
    """The gated metrics of a challenger that has nobody to be compared with."""
    metrics = challenger.get("metrics", {})
    names = [name for name in dict.fromkeys((primary, f"coverage@{k}", f"arp@{k}")) if name in metrics]
    rows = {name: _row(float(metrics[name]), None, None, True) for name in names}
    for group, values in sorted(challenger.get("groups", {}).items()):
        if f"ndcg@{k}" in values:
            rows[f"ndcg@{k}[{group}]"] = _row(float(values[f"ndcg@{k}"]), None, None, True)
    return rows


def _pair(new: Mapping[str, Any], old: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    if name not in new or name not in old:
        return None
    return float(new[name]), float(old[name])


def _missing(name: str, rule: str) -> str:
    return f"{name} is missing from the challenger or the champion: the {rule} rule cannot be checked"


def _finite(*values: float) -> bool:
    return all(math.isfinite(value) for value in values)


def _row(
    challenger: float | None,
    champion: float | None,
    delta: float | None,
    ok: bool,
    tolerance: float | None = None,
) -> dict[str, float | bool | None]:
    return {"challenger": challenger, "champion": champion, "delta": delta, "tolerance": tolerance, "ok": ok}


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics mapping (nested entries such as ``groups`` dropped)."""
    return {
        str(key): float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _cell(value: float | bool | None) -> str:
    return "" if value is None else f"{float(value):.4f}"
