"""Which popularity-bias mitigation the model is served with: none, popularity re-ranking, or calibration.

The ``bias`` stage measures each way of serving the run's challenger (the hybrid or the two-stage ranker,
``metrics/bias.json`` ``model``) with the offline protocol
(:func:`recsys.offline.calibration.measure`): unmitigated, popularity re-ranking at the strength its own rule
chose (:mod:`recsys.offline.bias`), and calibrated re-ranking (:mod:`recsys.offline.calibration`) at every
strength of ``bias.calibration_strengths``. :data:`MITIGATION_RULE` weighs accuracy, calibration and the gap
between listener groups: the calibration strength is tuned on half the test listeners, the served mitigation
is picked on the other half, and :func:`mitigation_report` writes both, with the reason, to
``metrics/bias.json``. The packaged model carries the choice (its ``bias_strength`` or
``calibration``), so the gate measures what listeners get.

Examples
--------
>>> rows = [
...     {"ndcg@10": 0.25, "ndcg@10/niche": 0.15, "niche_ratio": 0.45, "miscalibration": 1.6},
...     {"ndcg@10": 0.246, "ndcg@10/niche": 0.14, "niche_ratio": 0.42, "miscalibration": 1.4},
...     {"ndcg@10": 0.252, "ndcg@10/niche": 0.16, "niche_ratio": 0.47, "miscalibration": 1.5},
... ]
>>> choose(rows, rows[0], 0.02, 10)  # the second lowers the niche group's nDCG: not eligible
2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import Params
from recsys.offline.batches import ScoreFn
from recsys.offline.calibration import (
    Calibrated,
    Measured,
    measure,
    summary,
    tuning_half,
)
from recsys.offline.features import ItemFeatures
from recsys.offline.popularity import item_popularity, reranked_scores
from recsys.offline.split import Split

NONE, POPULARITY, CALIBRATION = "none", "popularity", "calibration"
MITIGATION_RULE = (
    "eligible: nDCG@{k} at most {cost:.0%} below serving the model unmitigated and the niche group's "
    "nDCG@{k} not below the unmitigated one's; among those, the smallest gap between niche and "
    "mainstream listeners (the largest niche / mainstream nDCG@{k} ratio), then the list mix closest to "
    "each listener's own (the lower miscalibration), then the lower cost. The calibration strength is "
    "chosen by this rule on half the test listeners (seeded), the served mitigation on the other half."
)


def choose(
    rows: Sequence[Mapping[str, float]], reference: Mapping[str, float], max_cost: float, k: int
) -> int:
    """Index in ``rows`` of the mitigation :data:`MITIGATION_RULE` picks against ``reference`` (the
    unmitigated model's summary, which ``rows`` should hold: it is always eligible)."""
    base, base_niche = reference[f"ndcg@{k}"], reference.get(f"ndcg@{k}/niche", float("nan"))

    def eligible(row: Mapping[str, float]) -> bool:
        cost = (base - row[f"ndcg@{k}"]) / base if base > 0 else 0.0
        niche = row.get(f"ndcg@{k}/niche", float("nan"))
        return cost <= max_cost + 1e-12 and not niche < base_niche - 1e-12

    def order(i: int) -> tuple[float, float, float]:
        row = rows[i]
        return (-row.get("niche_ratio", 0.0), row["miscalibration"], -row[f"ndcg@{k}"])

    candidates = [i for i, row in enumerate(rows) if eligible(row)]
    return min(candidates, key=order) if candidates else 0


def mitigation_report(
    measured: Mapping[tuple[str, float], Measured],
    tuning: np.ndarray,
    groups: Mapping[str, np.ndarray],
    k: int,
    max_cost: float,
    calibration_measurable: bool = True,
) -> dict[str, Any]:
    """The ``calibration`` and ``mitigation`` entries of ``metrics/bias.json``.

    Parameters
    ----------
    measured
        ``(kind, strength) -> Measured`` on the same test listeners: ``(NONE, 0.0)``, at most one
        ``POPULARITY`` strength (its own rule's choice) and every ``CALIBRATION`` strength.
    tuning
        Boolean mask over the evaluated listeners: the half the calibration strength is tuned on.
    calibration_measurable
        False when the catalogue is too large to measure calibration on every test listener: it is then
        never served (the gate could not measure it as served).
    """
    none = measured[(NONE, 0.0)]
    everyone = np.ones(len(none.users), dtype=bool)
    strengths = [0.0, *sorted(s for kind, s in measured if kind == CALIBRATION and s > 0)]
    served = {s: (measured[(CALIBRATION, s)] if s else none) for s in strengths}
    tuned = [summary(served[s], tuning, groups, k) for s in strengths]
    chosen_strength = strengths[choose(tuned, tuned[0], max_cost, k)]
    options = [(NONE, 0.0)] + [key for key in measured if key[0] == POPULARITY and key[1] > 0]
    if chosen_strength > 0 and calibration_measurable:
        options.append((CALIBRATION, chosen_strength))
    reported = [summary(measured[key], ~tuning, groups, k) for key in options]
    kind, strength = options[choose(reported, reported[0], max_cost, k)]
    report: dict[str, Any] = {
        "calibration": {
            "strengths": [
                {"strength": s, "tuning": t, "all": summary(served[s], everyone, groups, k)}
                for s, t in zip(strengths, tuned, strict=True)
            ],
            "chosen": chosen_strength,
            "listeners": {"tuning": int(tuning.sum()), "report": int((~tuning).sum())},
        },
        "mitigation": {
            "served": kind,
            "strength": strength,
            "options": [
                {"kind": o[0], "strength": o[1], **row} for o, row in zip(options, reported, strict=True)
            ],
            "rule": MITIGATION_RULE.format(k=k, cost=max_cost),
            "why": _why(options, reported, (kind, strength), max_cost, k),
        },
    }
    if kind == CALIBRATION:
        result = served[strength].result
        report["mitigation"]["served_metrics"] = {"metrics": dict(result.metrics), "groups": result.groups}
    return _plain(report)


def _why(
    options: Sequence[tuple[str, float]],
    rows: Sequence[Mapping[str, float]],
    chosen: tuple[str, float],
    max_cost: float,
    k: int,
) -> str:
    """One sentence per option: its numbers on the report half and why it was or was not chosen."""
    base = rows[0]
    parts = []
    for (kind, strength), row in zip(options, rows, strict=True):
        label = kind if kind == NONE else f"{kind} at {strength:g}"
        cost = (base[f"ndcg@{k}"] - row[f"ndcg@{k}"]) / base[f"ndcg@{k}"] if base[f"ndcg@{k}"] > 0 else 0.0
        niche, ratio = row.get(f"ndcg@{k}/niche", np.nan), row.get("niche_ratio", np.nan)
        facts = (
            f"{label}: nDCG@{k} {row[f'ndcg@{k}']:.4f} ({-cost:+.1%}), niche {niche:.4f}, niche / mainstream "
            f"{ratio:.3f}, miscalibration {row['miscalibration']:.3f}"
        )
        if (kind, strength) == chosen:
            verdict = "served"
        elif cost > max_cost + 1e-12:
            verdict = f"not served: costs more than {max_cost:.0%}"
        elif row.get(f"ndcg@{k}/niche", 0) < base.get(f"ndcg@{k}/niche", 0) - 1e-12:
            verdict = "not served: lowers the niche group's nDCG"
        else:
            verdict = "not served: a smaller group gap or calibration was available"
        parts.append(f"{facts} ({verdict})")
    return "; ".join(parts) + "."


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars unwrapped, NaN as None, containers walked."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def mitigations(
    params: Params,
    score_fn: ScoreFn,
    loaded: Split,
    features: ItemFeatures,
    groups: Mapping[str, np.ndarray],
    popularity_strength: float,
) -> dict[str, Any]:
    """The model of ``score_fn`` (the run's challenger) served unmitigated, re-ranked against popularity at
    ``popularity_strength`` and calibrated at every ``bias.calibration_strengths``, measured; the served
    mitigation chosen
    (:func:`recsys.offline.mitigation.mitigation_report`)."""
    bias, evaluate = params.bias, params.evaluate
    train, test = loaded.train_full, loaded.test
    popularity = item_popularity(train)

    def setting(strength: float) -> Calibrated:
        return Calibrated(
            strength, bias.calibration_candidates, bias.calibration_genres, bias.calibration_tier_weight
        )

    cats = setting(0.0).categories(features.names, features.matrix, popularity)
    n_users = int(np.count_nonzero(np.diff(sp.csr_matrix(test).indptr)))
    measurable = n_users <= bias.calibration_max_users
    ways: dict[tuple[str, float], Any] = {(NONE, 0.0): score_fn}
    if popularity_strength > 0:
        ways[(POPULARITY, popularity_strength)] = reranked_scores(score_fn, popularity, popularity_strength)
    if measurable:
        for strength in sorted({float(s) for s in bias.calibration_strengths} - {0.0}):
            ways[(CALIBRATION, strength)] = setting(strength).score_fn(
                score_fn, train, cats, max(evaluate.ks)
            )
    measured = {key: measure(way, train, test, evaluate, groups, cats) for key, way in ways.items()}
    tuning = tuning_half(measured[(NONE, 0.0)].users, params.seed)
    report = mitigation_report(
        measured, tuning, groups, evaluate.primary_k, bias.max_mitigation_cost, measurable
    )
    report["calibration"]["genres"] = list(cats.names)
    if report["mitigation"]["served"] == CALIBRATION:
        report["mitigation"]["calibration"] = setting(report["mitigation"]["strength"]).metadata()
    return report
