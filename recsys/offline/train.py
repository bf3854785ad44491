"""Training: every model of the ``train`` stage fitted once on train + valid with the settings of
``params.yaml`` (the tuned ones, :mod:`recsys.offline.tune`), so each is evaluated on the untouched test part.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
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


def fit_all(
    params: Params, split: Split, item_features: sp.csr_matrix | None, background: bool = False
) -> TrainedModels:
    """The training recipe: every model fitted once on train + valid with the settings of ``params``.

    The hybrid and LightFM without features train for their ``epochs`` (the tuned number: the search
    early-stops on the validation part, :mod:`recsys.offline.tune`); ``train.final_threads`` = 1 makes the
    fits, and so the metrics, bit-identical for a seed. With ``background``, single-threaded and a second
    core free, the hybrid (most of the stage's time) trains in a spawned child process while the others
    fit here: the same models, sooner (the caller's main module must be import-safe, as spawning needs).
    """
    threads, seed = params.train.final_threads, params.seed
    hybrid = LightFMRecommender(params.train.lightfm, seed, threads)
    cf = LightFMRecommender(params.train.lightfm_cf, seed, threads, name=CF)
    plan: list[tuple[Recommender, sp.csr_matrix | None]] = [(hybrid, item_features), (cf, None)]
    plan += [(model, None) for model in baselines(params)]
    fitted: dict[int, tuple[Recommender, float]] = {}
    with _hybrid_process(background, threads) as pool:
        pending = pool.submit(_fit_timed, hybrid, split.train_full, item_features) if pool else None
        for number, (model, features) in enumerate(plan):
            if not (pending is not None and model is hybrid):
                fitted[number] = _fit_timed(model, split.train_full, features)
        if pending is not None:
            fitted[0] = pending.result()
    # Keyed by name once fitted: LightFM's name says whether it has item features.
    results = [fitted[number] for number in range(len(plan))]
    models = {model.name: model for model, _ in results}
    seconds = {model.name: value for model, value in results}
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
