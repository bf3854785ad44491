"""Training: every model of the ``train`` stage fitted once on train + valid with the settings of
``params.yaml`` (the tuned ones, :mod:`recsys.offline.tune`), so each is evaluated on the untouched test part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import scipy.sparse as sp

from recsys.config import Params
from recsys.models import ALS, EASE, ItemKNN, LightFMRecommender, MostPopular, Recommender, RP3beta
from recsys.offline.split import Split
from recsys.paths import CF


def baselines(params: Params) -> list[Recommender]:
    """The competitors with their (tuned) settings, not fitted yet: most-popular, item-kNN, EASE,
    RP3beta and implicit ALS (single-threaded when ``train.final_threads`` is 1)."""
    return [
        MostPopular(),
        ItemKNN(params.train.itemknn),
        EASE(params.train.ease),
        RP3beta(params.train.rp3beta),
        ALS(params.train.als, params.seed, params.train.final_threads),
    ]


@dataclass(frozen=True)
class TrainedModels:
    """The ``train`` stage's result: every model and what it was fitted with."""

    models: dict[str, Recommender]
    summary: dict[str, Any] = field(default_factory=dict)


def fit_all(params: Params, split: Split, item_features: sp.csr_matrix | None) -> TrainedModels:
    """The training recipe: every model fitted once on train + valid with the settings of ``params``.

    The hybrid and LightFM without features train for their ``epochs`` (the tuned number: the search
    early-stops on the validation part, :mod:`recsys.offline.tune`); ``train.final_threads`` = 1 makes the
    fits, and so the metrics, bit-identical for a seed.
    """
    threads, seed = params.train.final_threads, params.seed
    hybrid = LightFMRecommender(params.train.lightfm, seed, threads)
    cf = LightFMRecommender(params.train.lightfm_cf, seed, threads, name=CF)
    plan: list[tuple[Recommender, sp.csr_matrix | None]] = [(hybrid, item_features), (cf, None)]
    plan += [(model, None) for model in baselines(params)]
    models: dict[str, Recommender] = {}
    seconds: dict[str, float] = {}
    for model, features in plan:
        start = time.perf_counter()
        models[model.name] = model.fit(split.train_full, features)
        seconds[model.name] = round(time.perf_counter() - start, 2)
    summary = {
        "models": sorted(models),
        "fit_seconds": seconds,
        "final_threads": threads,
        "lightfm": params.train.lightfm.model_dump(),
        "lightfm_cf": params.train.lightfm_cf.model_dump(),
    }
    return TrainedModels(models, summary)
