"""Training: a seeded hyperparameter search for the LightFM hybrid, the refit of the best
configuration, and the baselines, all on the same split.

Protocol: every trial trains on ``split.train`` with early stopping on ``split.valid`` (the search
metric, e.g. nDCG@10, with training items excluded). The best trial is refitted on
``train_full = train + valid`` for its best number of epochs; baselines are fitted on ``train_full``
too, so every model is evaluated on the untouched test part.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import LightFMParams, Params, SearchParams
from recsys.models import EASE, ItemKNN, LightFMRecommender, MostPopular, Recommender
from recsys.offline.evaluation import rank_top_k
from recsys.offline.metrics import ranking_metrics
from recsys.offline.split import Split
from recsys.paths import CF, HYBRID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One search trial: its parameters, validation score, best epoch and training time."""

    number: int
    params: dict[str, Any]
    score: float
    best_epoch: int
    seconds: float
    seconds_per_epoch: float

    def row(self) -> dict[str, Any]:
        """A flat table row (parameters as columns)."""
        flat = {key: value for key, value in asdict(self).items() if key != "params"}
        return flat | self.params


def parse_metric(metric: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``."""
    name, _, k = metric.partition("@")
    if not k.isdigit():
        raise ValueError(f"search metric must look like 'ndcg@10', got {metric!r}")
    return name, int(k)


def validation_scorer(
    train: sp.csr_matrix, valid: sp.csr_matrix, metric: str
) -> Callable[[LightFMRecommender], float]:
    """``f(model)``: the mean ``metric`` (e.g. ndcg@10) on ``valid``, training items excluded."""
    name, k = parse_metric(metric)
    users = np.flatnonzero(np.diff(valid.indptr) > 0)

    def score(model: LightFMRecommender) -> float:
        top = rank_top_k(model.score, users, k, train)
        values = ranking_metrics(top, valid, users, (k,))[f"{name}@{k}"]
        return float(np.nanmean(values))

    return score


def sample_configurations(base: LightFMParams, search: SearchParams, seed: int) -> list[LightFMParams]:
    """The base configuration first, then distinct random grid points (seeded), ``n_trials`` in all."""
    keys = sorted(search.space)
    grid = [
        dict(zip(keys, values, strict=True)) for values in itertools.product(*(search.space[k] for k in keys))
    ]
    random.Random(seed).shuffle(grid)
    configs = [base]
    for point in grid:
        if len(configs) >= search.n_trials:
            break
        candidate = base.model_copy(update=point)
        if candidate not in configs:
            configs.append(LightFMParams.model_validate(candidate.model_dump()))
    return configs


def run_trial(
    number: int,
    config: LightFMParams,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    item_features: sp.csr_matrix | None,
    metric: str,
    seed: int,
    num_threads: int,
) -> Trial:
    """Train one configuration with early stopping on ``valid``; returns its record."""
    start = time.perf_counter()
    model = LightFMRecommender(config, seed=seed, num_threads=num_threads)
    model.fit(train, item_features, validation_score=validation_scorer(train, valid, metric))
    best = max((score for _, score in model.history), default=float("nan"))
    log.info(
        "trial %d: %s=%.4f at epoch %d (%.1f s) %s",
        number, metric, best, model.best_epoch, time.perf_counter() - start, config.model_dump(),
    )  # fmt: skip
    return Trial(
        number=number,
        params=config.model_dump(),
        score=best,
        best_epoch=model.best_epoch,
        seconds=round(time.perf_counter() - start, 3),
        seconds_per_epoch=round(model.seconds_per_epoch, 4),
    )


@dataclass(frozen=True)
class TrialSpec:
    """Everything one search trial needs: run it here (:meth:`run`) or ship it to a worker first."""

    number: int
    config: LightFMParams
    train: sp.csr_matrix
    valid: sp.csr_matrix
    item_features: sp.csr_matrix | None
    metric: str
    seed: int
    num_threads: int

    def run(self) -> Trial:
        """:func:`run_trial` of this configuration."""
        return run_trial(
            self.number,
            self.config,
            self.train,
            self.valid,
            self.item_features,
            self.metric,
            self.seed,
            self.num_threads,
        )


def search_specs(
    params: Params,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    item_features: sp.csr_matrix | None,
    num_threads: int | None = None,
) -> list[TrialSpec]:
    """The configured search as trials (:func:`sample_configurations`): the ``train`` stage runs them in
    turn, the search flow as tasks on threads or Dask; both then pick with :func:`best_trial`."""
    configs = sample_configurations(params.train.lightfm, params.train.search, params.seed)
    threads = num_threads or params.train.num_threads
    metric = params.train.search.metric
    return [
        TrialSpec(number, config, train, valid, item_features, metric, params.seed, threads)
        for number, config in enumerate(configs)
    ]


def best_trial(trials: list[Trial]) -> Trial:
    """The trial with the highest validation score (ties: the earlier trial)."""
    scored = [trial for trial in trials if np.isfinite(trial.score)]
    if not scored:
        raise ValueError("no trial produced a finite validation score")
    return max(scored, key=lambda trial: (trial.score, -trial.number))


def refit(
    trial: Trial, train_full: sp.csr_matrix, item_features: sp.csr_matrix | None, seed: int, num_threads: int
) -> LightFMRecommender:
    """The trial's configuration trained on train + valid for its best number of epochs."""
    config = LightFMParams.model_validate(trial.params | {"epochs": max(trial.best_epoch, 1)})
    return LightFMRecommender(config, seed=seed, num_threads=num_threads).fit(train_full, item_features)


def fit_baselines(train_full: sp.csr_matrix, params: Params) -> dict[str, Recommender]:
    """Most-popular, item-kNN and EASE fitted on ``train_full``."""
    models: list[Recommender] = [
        MostPopular(),
        ItemKNN(params.train.itemknn),
        EASE(params.train.ease),
    ]
    return {model.name: model.fit(train_full) for model in models}


@dataclass(frozen=True)
class TrainedModels:
    """The ``train`` stage's result: every model, the search's trials and the best one."""

    models: dict[str, Recommender]
    trials: list[Trial]
    best: Trial
    cf_best_epoch: int
    summary: dict[str, Any] = field(default_factory=dict)


def fit_all(
    params: Params, split: Split, item_features: sp.csr_matrix | None, trials: list[Trial]
) -> TrainedModels:
    """The training recipe after the search: the best trial refitted on train + valid, LightFM without
    features early-stopped on valid then refitted the same way, and the baselines."""
    threads, seed = params.train.num_threads, params.seed
    best = best_trial(trials)
    models: dict[str, Recommender] = {HYBRID: refit(best, split.train_full, item_features, seed, threads)}
    cf = LightFMRecommender(params.train.lightfm, seed=seed, num_threads=threads, name=CF)
    cf.fit(
        split.train, validation_score=validation_scorer(split.train, split.valid, params.train.search.metric)
    )
    cf_trial = Trial(
        0, params.train.lightfm.model_dump(), max(s for _, s in cf.history), cf.best_epoch, 0.0, 0.0
    )
    refitted_cf = refit(cf_trial, split.train_full, None, seed, threads)
    refitted_cf.name = CF
    models[CF] = refitted_cf
    models |= fit_baselines(split.train_full, params)
    summary = {
        "best_trial": best.row(),
        "lightfm_cf_best_epoch": cf.best_epoch,
        "n_trials": len(trials),
        "search_seconds": round(sum(trial.seconds for trial in trials), 2),
        "models": sorted(models),
        "best_params": LightFMParams.model_validate(best.params).model_dump(),
    }
    return TrainedModels(models, trials, best, cf.best_epoch, summary)
