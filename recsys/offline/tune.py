"""Tuning: the seeded hyperparameter search of LightFM on the validation part, for review.

Protocol: every trial trains on ``split.train`` with early stopping on ``split.valid`` (the search metric,
e.g. nDCG@10, training items excluded), for at most ``train.search.max_epochs`` epochs. The winner's
parameters, its best epoch as ``epochs``, are what ``params.yaml`` keeps for the ``train`` stage
(:func:`tuned_params`); LightFM without features is tuned the same way, its epochs by early stopping, and
every competitor over its full grid (``train.search.competitors``: EASE's L2 on a log scale, item-kNN,
RP3beta, implicit ALS), fitted on the training part and scored on the validation part.
``recsys tune`` runs the trials in turn, the search flow as tasks on threads or Dask.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import LightFMParams, Params, SearchParams, competitor_params
from recsys.models import LightFMRecommender, Recommender
from recsys.offline.metrics import ranking_metrics
from recsys.offline.ranking import rank_top_k
from recsys.specs import CF, GRID_MODELS, HYBRID, MODELS, model_spec

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
    model: str = HYBRID

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
) -> Callable[[Recommender], float]:
    """``f(model)``: the mean ``metric`` (e.g. ndcg@10) on ``valid``, training items excluded."""
    name, k = parse_metric(metric)
    users = np.flatnonzero(np.diff(valid.indptr) > 0)

    def score(model: Recommender) -> float:
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
    model_name: str = HYBRID,
) -> Trial:
    """Train one configuration with early stopping on ``valid``; returns its record."""
    start = time.perf_counter()
    model = LightFMRecommender(config, seed=seed, num_threads=num_threads)
    model.fit(train, item_features, validation_score=validation_scorer(train, valid, metric))
    best = max((score for _, score in model.history), default=float("nan"))
    log.info(
        "trial %d (%s): %s=%.4f at epoch %d (%.1f s) %s",
        number, model_name, metric, best, model.best_epoch, time.perf_counter() - start, config.model_dump(),
    )  # fmt: skip
    return Trial(
        number=number,
        params=config.model_dump(),
        score=best,
        best_epoch=model.best_epoch,
        seconds=round(time.perf_counter() - start, 3),
        seconds_per_epoch=round(model.seconds_per_epoch, 4),
        model=model_name,
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
    model: str = HYBRID

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
            self.model,
        )


def search_specs(
    params: Params,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    item_features: sp.csr_matrix | None,
    num_threads: int | None = None,
) -> list[TrialSpec]:
    """The tuning experiment as trials: the hybrid's configurations (:func:`sample_configurations`, the
    current ``train.lightfm`` first), then LightFM without features (``train.lightfm_cf``); each may run up
    to ``search.max_epochs`` epochs. ``recsys tune`` runs them in turn, the search flow as tasks."""
    search = params.train.search
    configs = sample_configurations(params.train.lightfm, search, params.seed)
    capped = [config.model_copy(update={"epochs": search.max_epochs}) for config in configs]
    threads = num_threads or params.train.num_threads
    specs = [
        TrialSpec(number, config, train, valid, item_features, search.metric, params.seed, threads)
        for number, config in enumerate(capped)
    ]
    cf = params.train.lightfm_cf.model_copy(update={"epochs": search.max_epochs})
    specs.append(TrialSpec(len(specs), cf, train, valid, None, search.metric, params.seed, threads, CF))
    return specs


def tuning_specs(
    params: Params,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    item_features: sp.csr_matrix | None,
    num_threads: int | None = None,
) -> list[TrialSpec | CompetitorSpec]:
    """The whole tuning experiment: LightFM's trials (:func:`search_specs`), then the competitors' grids
    (:func:`competitor_specs`), so every model of the comparison is tuned on the same validation part."""
    lightfm = search_specs(params, train, valid, item_features, num_threads)
    return [*lightfm, *competitor_specs(params, train, valid, len(lightfm))]


@dataclass(frozen=True)
class CompetitorSpec:
    """One point of a competitor's grid: fit it on ``train``, score it on ``valid`` (:meth:`run`)."""

    number: int
    model: str
    config: dict[str, Any]
    train: sp.csr_matrix
    valid: sp.csr_matrix
    metric: str
    seed: int

    def run(self) -> Trial:
        """Fit on the training part, the search metric on the validation part."""
        start = time.perf_counter()
        settings = competitor_params()[self.model].model_validate(self.config)
        model = make_competitor(self.model, settings, self.seed)
        score = validation_scorer(self.train, self.valid, self.metric)(model.fit(self.train))
        log.info("trial %d (%s): %s=%.4f %s", self.number, self.model, self.metric, score, self.config)
        seconds = round(time.perf_counter() - start, 3)
        return Trial(self.number, settings.model_dump(), score, 0, seconds, 0.0, self.model)


def make_competitor(model: str, settings: Any, seed: int) -> Recommender:
    """The competitor ``model`` (a ``train`` section name) with ``settings``, single-threaded."""
    return model_spec(model).build(settings, seed, threads=1)


def competitor_specs(
    params: Params, train: sp.csr_matrix, valid: sp.csr_matrix, first_number: int = 0
) -> list[CompetitorSpec]:
    """Every point of every competitor's grid (``search.competitors``) as a trial, numbered on."""
    search = params.train.search
    specs: list[CompetitorSpec] = []
    for model, grid in search.competitors.items():
        base = getattr(params.train, model).model_dump()
        keys = sorted(grid)
        for values in itertools.product(*(grid[key] for key in keys)):
            config = base | dict(zip(keys, values, strict=True))
            specs.append(
                CompetitorSpec(
                    first_number + len(specs), model, config, train, valid, search.metric, params.seed
                )
            )
    return specs


def best_trial(trials: Sequence[Trial], model: str = HYBRID) -> Trial:
    """``model``'s trial with the highest validation score (ties: the earlier trial)."""
    scored = [trial for trial in trials if trial.model == model and np.isfinite(trial.score)]
    if not scored:
        raise ValueError(f"no {model} trial produced a finite validation score")
    return max(scored, key=lambda trial: (trial.score, -trial.number))


def tuned_params(trials: Sequence[Trial]) -> dict[str, Any]:
    """The winners as ``params.yaml`` settings (dotted keys): each model's best configuration with its best
    epoch as ``epochs``, for ``train.lightfm`` and ``train.lightfm_cf``."""
    settings: dict[str, Any] = {}
    for spec in MODELS:
        if spec.search == "epochs":
            best = best_trial(trials, spec.name)
            values = best.params | {"epochs": max(best.best_epoch, 1)}
            settings |= {f"train.{spec.section}.{key}": value for key, value in values.items()}
    for model in dict.fromkeys(trial.model for trial in trials if trial.model in GRID_MODELS):
        settings |= {f"train.{model}.{key}": value for key, value in best_trial(trials, model).params.items()}
    return settings
