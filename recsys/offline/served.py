"""A model measured as listeners get it: its scores re-ranked at the popularity strength it is served
with (or its lists calibrated, :mod:`recsys.offline.calibration`), then every metric overall and per
listener group. The one way the gate's inputs are measured, for a challenger of the retraining flow and for
a champion re-measured on a new split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.offline.batches import ScoreFn
from recsys.offline.calibration import Calibrated
from recsys.offline.evaluation import EvaluationResult, evaluate
from recsys.offline.features import ItemFeatures
from recsys.offline.popularity import item_popularity, mainstreaminess_groups, reranked_scores


@dataclass(frozen=True)
class Served:
    """A model measured as served.

    Attributes
    ----------
    candidate : dict
        Its gate input, ``{"metrics", "groups", "bias_strength"}``.
    score : ScoreFn
        The re-ranked score function (for measures of one's own).
    result : EvaluationResult
        The evaluation behind ``candidate``, with the per-listener values a paired comparison needs.
    """

    candidate: dict[str, Any]
    score: ScoreFn
    result: EvaluationResult


def measure_as_served(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    params: EvaluateParams,
    strength: float,
    groups: Mapping[str, np.ndarray] | None = None,
    calibration: Calibrated | None = None,
    features: ItemFeatures | None = None,
) -> Served:
    """A model served at ``strength`` (popularity from ``train``), or ``calibration`` (the categories from
    ``features``), measured on ``test``, listener groups by mainstreaminess in ``train`` unless given."""
    groups = mainstreaminess_groups(train, params.groups) if groups is None else groups
    popularity = item_popularity(train)
    served = reranked_scores(score_fn, popularity, strength)
    if calibration is not None:
        if features is None:
            raise ValueError("a calibrated model is measured with the item features its categories come from")
        cats = calibration.categories(features.names, features.matrix, popularity)
        served = calibration.score_fn(served, train, cats, max(params.ks))
    result = evaluate(served, train, test, params, user_groups=groups)
    candidate = {"metrics": dict(result.metrics), "groups": result.groups, "bias_strength": strength}
    if calibration is not None:
        candidate["calibration"] = calibration.metadata()
    return Served(candidate, served, result)
