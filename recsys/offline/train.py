"""Training: every model of the ``train`` stage fitted once on train + valid with the settings of
``params.yaml`` (the tuned ones, :mod:`recsys.offline.tune`), so each is evaluated on the untouched test part.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import scipy.sparse as sp

from recsys.config import Params
from recsys.models import Recommender
from recsys.offline.split import Split
from recsys.specs import HYBRID, MODELS


def baselines(params: Params) -> list[Recommender]:
    """The competitors with their (tuned) settings, not fitted yet: every model of :data:`MODELS` but
    LightFM's and the stacked ranker (single-threaded when ``train.final_threads`` is 1)."""
    return [spec.configured(params) for spec in MODELS if spec.search != "epochs" and not spec.stacked]


@dataclass(frozen=True)
class TrainedModels:
    """The ``train`` stage's result: every model and what it was fitted with."""

    models: dict[str, Recommender]
    summary: dict[str, Any] = field(default_factory=dict)


def fit_all(
    params: Params,
    split: Split,
    item_features: sp.csr_matrix | None,
    background: bool = False,
    feature_groups: Mapping[str, slice] | None = None,
) -> TrainedModels:
    """The training recipe: every model fitted once on train + valid with the settings of ``params``.

    The hybrid and LightFM without features train for their ``epochs`` (the tuned number: the search
    early-stops on the validation part, :mod:`recsys.offline.tune`); ``train.final_threads`` = 1 makes the
    fits, and so the metrics, bit-identical for a seed. With ``background``, single-threaded and a second
    core free, the hybrid (most of the stage's time) trains in a spawned child process while the others
    fit here: the same models, sooner (the caller's main module must be import-safe, as spawning needs).
    """
    threads = params.train.final_threads
    plan: list[tuple[Recommender, sp.csr_matrix | None]] = [
        (spec.configured(params), item_features if spec.takes_features else None)
        for spec in MODELS
        if not spec.stacked and spec.enabled(params)
    ]
    hybrid = next(model for model, _ in plan if model.name == HYBRID)
    fitted: dict[int, tuple[Recommender, float]] = {}
    learned: dict[str, tuple[Any, float]] = {}
    with _hybrid_process(background, threads) as pool:
        pending = pool.submit(_fit_timed, hybrid, split.train_full, item_features) if pool else None
        for number, (model, features) in enumerate(plan):
            if not (pending is not None and model is hybrid):
                fitted[number] = _fit_timed(model, split.train_full, features)
        # A stacked model learns from the validation part while the hybrid trains (it needs none of these).
        for spec in MODELS:
            if spec.stacked and spec.enabled(params):
                start = time.perf_counter()
                stacked: Any = spec.configured(params)
                stacked.learn(
                    split.train_full, item_features, holdout=split.valid, feature_groups=feature_groups
                )
                learned[spec.name] = (stacked, time.perf_counter() - start)
        if pending is not None:
            fitted[next(n for n, (model, _) in enumerate(plan) if model is hybrid)] = pending.result()
    # Keyed by name once fitted: LightFM's name says whether it has item features.
    results = [fitted[number] for number in range(len(plan))]
    models = {model.name: model for model, _ in results}
    seconds = {model.name: value for model, value in results}
    for name, (model, spent) in learned.items():
        start = time.perf_counter()
        models[name] = model.use_generators(dict(models))
        seconds[name] = spent + time.perf_counter() - start
    summary = {
        "models": sorted(models),
        "fit_seconds": {name: round(value, 2) for name, value in seconds.items()},
        "final_threads": threads,
        "lightfm": params.train.lightfm.model_dump(),
        "lightfm_cf": params.train.lightfm_cf.model_dump(),
    }
    return TrainedModels(models, summary)


def _fit_timed(
    model: Recommender, matrix: sp.csr_matrix, features: sp.csr_matrix | None
) -> tuple[Recommender, float]:
    start = time.perf_counter()
    return model.fit(matrix, features), time.perf_counter() - start


@contextmanager
def _hybrid_process(background: bool, threads: int) -> Iterator[ProcessPoolExecutor | None]:
    """A one-worker process pool for the hybrid when asked (``background``), its fit is single-threaded and
    a second core is free; else None (fit here)."""
    if not background or threads != 1 or len(os.sched_getaffinity(0)) < 2:
        yield None
        return
    # Spawned, not forked: the parent's BLAS and implicit thread pools are not fork-safe.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool
