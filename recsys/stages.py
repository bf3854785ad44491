"""Stage entry points: one function per ``dvc.yaml`` stage, run through the ``recsys`` CLI.

Each reads its stage's inputs, calls the library, and writes its outputs atomically, using the file
formats that live with the data they describe (``write_prepared``, ``save_item_features``, ``save_split``,
``Recommender.save``, ``write_eda``). Folder names come from :mod:`recsys.paths`. The training flow runs
them through ``dvc repro`` (:mod:`flows.dvc`); the search flow reuses :func:`training_inputs` and
:func:`write_tuning`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from recsys.columns import Col
from recsys.config import Params, data_dir_from_env
from recsys.errors import RecsysError
from recsys.io import atomic_path, without_keys, write_json, write_text
from recsys.paths import (
    FEATURES_DIR,
    INTERACTIONS_TABLE,
    ITEM_TAGS_TABLE,
    ITEMS_TABLE,
    METRICS_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    PREPARED_DIR,
    RAW_DIR,
    REPORTS_DIR,
    SEARCH_DIR,
    SOURCES_RECORD,
    SPLIT_DIR,
    model_file,
)
from recsys.specs import HYBRID, challenger_model, trained_models

if TYPE_CHECKING:
    from recsys.offline.tune import Trial

log = logging.getLogger(__name__)
TRIALS_FILE = "trials.csv"
BEST_TRIAL_FILE = "best_trial.json"
TUNED_FILE = "tuned_params.yaml"


def sources(params: Params, out: Path = SOURCES_RECORD, local_dir: Path | None = None) -> dict[str, Any]:
    """Record what ingest would read, by content, so DVC reruns ingest exactly when that changes."""
    from recsys.data.fingerprint import fingerprint

    record = fingerprint(params, local_dir if local_dir is not None else data_dir_from_env())
    write_json(out, record)
    return record


def ingest(params: Params, out_dir: Path = RAW_DIR, local_dir: Path | None = None) -> dict[str, Any]:
    """Copy or download the raw sources of the chosen data set into ``out_dir``, verified."""
    from recsys.data.datasets import dataset_of
    from recsys.data.datasets import ingest as ingest_dataset

    start = time.perf_counter()
    dataset = dataset_of(params)
    summary = ingest_dataset(params, out_dir, local_dir if local_dir is not None else data_dir_from_env())
    # Every data set's summary carries the stage's wall time (generated data had none: the CLI failed).
    summary = {"dataset": dataset.name} | summary | {"seconds": round(time.perf_counter() - start, 3)}
    # The file is a DVC output: the same data gives the same bytes, so the timings and where the files were
    # read (a local folder's absolute path differs between clones) are only printed; checksums identify them.
    write_json(out_dir / "ingest.json", without_keys(summary, frozenset({"seconds", "location"})))
    return summary


def prepare(params: Params, raw_dir: Path = RAW_DIR, out_dir: Path = PREPARED_DIR) -> dict[str, Any]:
    """Validate, clean and join the chosen data set's raw tables into the canonical prepared tables."""
    from recsys.data.datasets import prepare as prepare_dataset
    from recsys.data.prepare import write_prepared

    prepared = prepare_dataset(raw_dir, params)
    write_prepared(prepared, out_dir)
    return prepared.quality


def eda(prepared_dir: Path = PREPARED_DIR, out_dir: Path = REPORTS_DIR / "eda") -> dict[str, Any]:
    """Plots, the HTML report and the bias signals of the prepared data."""
    from recsys.reporting.eda import write_eda

    return write_eda(prepared_dir, out_dir)


def features(
    params: Params, prepared_dir: Path = PREPARED_DIR, out_dir: Path = FEATURES_DIR
) -> dict[str, Any]:
    """Item-feature matrix (tags, audio, lyrics, genre, identity) with its column names."""
    from recsys.offline.features import build_item_features, feature_summary, save_item_features

    items = pd.read_parquet(prepared_dir / ITEMS_TABLE)
    item_tags = pd.read_parquet(prepared_dir / ITEM_TAGS_TABLE)
    built = build_item_features(items, item_tags, params.features, params.seed)
    save_item_features(built, out_dir)
    summary = feature_summary(built)
    write_json(out_dir / "summary.json", summary)
    return summary


def split(params: Params, prepared_dir: Path = PREPARED_DIR, out_dir: Path = SPLIT_DIR) -> dict[str, Any]:
    """Per-user train/valid/test holdout plus held-out cold-start artists."""
    from recsys.offline.split import make_split, save_split, split_summary

    interactions = pd.read_parquet(prepared_dir / INTERACTIONS_TABLE)
    newest = params.split.cold_items == "newest"
    columns = [Col.ITEM, Col.RELEASE_DATE] if newest else [Col.ITEM]
    items = pd.read_parquet(prepared_dir / ITEMS_TABLE, columns=columns)
    dates = items[Col.RELEASE_DATE] if newest else None
    made = make_split(interactions, params.split, params.seed, items[Col.ITEM].tolist(), dates)
    save_split(made, out_dir)
    return split_summary(made)


def training_inputs(features_dir: Path, split_dir: Path) -> tuple[Any, Any]:
    """The split and the item features with cold items' identity columns removed."""
    from recsys.offline.features import load_item_features, without_identity
    from recsys.offline.split import load_split

    loaded = load_split(split_dir)
    item_features = load_item_features(features_dir)
    if list(item_features.item_ids) != list(loaded.item_ids):
        raise RecsysError(f"{features_dir} and {split_dir} disagree on the item order: rerun both stages")
    return loaded, without_identity(item_features, loaded.cold_items)


def train(
    params: Params,
    features_dir: Path = FEATURES_DIR,
    split_dir: Path = SPLIT_DIR,
    out_dir: Path = MODELS_DIR,
    background: bool = False,
) -> dict[str, Any]:
    """Fit every model once with the tuned settings of ``params.yaml``; save each and a summary.

    ``background`` trains the hybrid in a spawned child process (see :func:`recsys.offline.train.fit_all`);
    the ``recsys train`` command sets it: spawning re-imports the caller's main module, which only a
    guarded entry point (not a bare script) survives.
    """
    from recsys.offline.train import fit_all

    loaded, item_features = training_inputs(features_dir, split_dir)
    trained = fit_all(
        params, loaded, item_features.matrix, background=background, feature_groups=item_features.group_slices
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, model in trained.models.items():
        model.save(model_file(name, out_dir))
    # A DVC output: without the fit times, a rerun writes the same bytes (the times are printed).
    write_json(out_dir / "train_summary.json", without_keys(trained.summary, frozenset({"fit_seconds"})))
    return trained.summary


def tune(
    params: Params,
    features_dir: Path = FEATURES_DIR,
    split_dir: Path = SPLIT_DIR,
    out_dir: Path = SEARCH_DIR,
) -> dict[str, Any]:
    """The tuning experiment (not a DVC stage): every trial in turn on the validation part; writes the
    trials, the best hybrid trial and the winning settings for review (:func:`write_tuning`)."""
    from recsys.offline.tune import tuning_specs

    loaded, item_features = training_inputs(features_dir, split_dir)
    specs = tuning_specs(params, loaded.train, loaded.valid, item_features.matrix)
    return write_tuning(out_dir, [spec.run() for spec in specs])


def write_tuning(out_dir: Path, trials: Sequence[Trial]) -> dict[str, Any]:
    """``trials.csv``, ``best_trial.json`` (the hybrid's) and ``tuned_params.yaml`` (the winners as
    ``params.yaml`` settings: review them, then ``recsys tune --apply`` or copy them over)."""
    from recsys.offline.tune import best_trial, tuned_params

    best = best_trial(trials)
    paths = write_trials(out_dir, trials, best)
    settings = tuned_params(trials)
    header = "# Winners of the tuning experiment (validation); apply with `recsys tune --apply`.\n"
    write_text(out_dir / TUNED_FILE, header + yaml.safe_dump(settings, sort_keys=False))
    return paths | {"tuned_file": str(out_dir / TUNED_FILE), "tuned": settings, "best_trial": best.row()}


def write_trials(out_dir: Path, trials: Sequence[Trial], best: Trial | None = None) -> dict[str, str]:
    """``trials.csv`` (one row per trial) and, given the best trial, ``best_trial.json``; atomically."""
    paths = {"trials_file": str(out_dir / TRIALS_FILE)}
    with atomic_path(out_dir / TRIALS_FILE) as tmp:
        pd.DataFrame([trial.row() for trial in trials]).to_csv(tmp, index=False)
    if best is not None:
        write_json(out_dir / BEST_TRIAL_FILE, best.row())
        paths["best_file"] = str(out_dir / BEST_TRIAL_FILE)
    return paths


def evaluate(
    params: Params,
    features_dir: Path = FEATURES_DIR,
    split_dir: Path = SPLIT_DIR,
    models_dir: Path = MODELS_DIR,
    metrics_dir: Path = METRICS_DIR,
    plots_dir: Path = PLOTS_DIR,
) -> dict[str, Any]:
    """Every model on the test split (overall, per user group) and on the cold-start artists."""
    from recsys.models import load_recommender
    from recsys.models.ranker import TwoStageRanker
    from recsys.offline.evaluation import cold_start_evaluate
    from recsys.offline.evaluation import evaluate as run_evaluation
    from recsys.offline.metrics_files import headline, metrics_plots, offline_report
    from recsys.offline.popularity import mainstreaminess_groups

    loaded, _ = training_inputs(features_dir, split_dir)
    groups = mainstreaminess_groups(loaded.train_full, params.evaluate.groups)
    results, cold, stacked = {}, {}, {}
    for name in trained_models(params):
        model = load_recommender(model_file(name, models_dir))
        results[name] = run_evaluation(model.score, loaded.train_full, loaded.test, params.evaluate, groups)
        cold[name] = cold_start_evaluate(
            model.score, loaded.train_full, loaded.cold, loaded.cold_items, params.evaluate
        )
        if isinstance(model, TwoStageRanker):
            stacked[name] = ranker_report(model, loaded.train_full, loaded.test)
    report = offline_report(results, cold, params, split_summary_of(loaded), reference=HYBRID)
    report |= {"rankers": stacked} if stacked else {}
    write_json(metrics_dir / "offline.json", report)
    write_json(metrics_dir / "summary.json", headline(report, params.evaluate.primary_k))
    for file_name, table in metrics_plots(report, params.evaluate).items():
        with atomic_path(plots_dir / file_name) as tmp:
            table.to_csv(tmp, index=False)
    return report


def ranker_report(model: Any, train: Any, test: Any) -> dict[str, Any]:
    """What the two-stage ranker learned and could reach on ``test``: boosting rounds, the features' share of
    the gain, and candidate recall per generator and for their union (the ceiling of its recall)."""
    from recsys.offline.evaluation import relevant_entries
    from recsys.offline.ranking import candidate_mask

    relevant = relevant_entries(train, test, candidate_mask(None, train.shape[1]))
    # The JSON writer sorts keys: the card and the report order the features by their share.
    return {"rounds": model.best_rounds, "importance": dict(model.importance)} | model.candidate_recall(
        relevant
    )


def split_summary_of(loaded: Any) -> dict[str, Any]:
    from recsys.offline.split import split_summary

    return split_summary(loaded)


def bias(
    params: Params,
    features_dir: Path = FEATURES_DIR,
    split_dir: Path = SPLIT_DIR,
    models_dir: Path = MODELS_DIR,
    metrics_dir: Path = METRICS_DIR,
    plots_dir: Path = PLOTS_DIR,
) -> dict[str, Any]:
    """The run's challenger (``gate.challenger``, :func:`recsys.specs.challenger_model`): its nDCG /
    long-tail trade-off under popularity re-ranking, the default strength, and the served mitigation.
    ``metrics/bias.json`` names the model (``model``): its mitigation travels with that model only."""
    from recsys.models import load_recommender
    from recsys.offline.bias import bias_report, tradeoff_curve
    from recsys.offline.mitigation import mitigations
    from recsys.offline.popularity import item_popularity, mainstreaminess_groups

    loaded, features = training_inputs(features_dir, split_dir)
    groups = mainstreaminess_groups(loaded.train_full, params.evaluate.groups)
    name = challenger_model(params)
    model = load_recommender(model_file(name, models_dir))
    # Strength 0 is the reference the nDCG cost is measured against, so it is always on the curve.
    strengths = sorted({0.0, *params.bias.strengths})
    curve = tradeoff_curve(
        model.score,
        loaded.train_full,
        loaded.test,
        item_popularity(loaded.train_full),
        strengths,
        params.evaluate,
        groups,
    )
    report = bias_report(curve, params.bias.max_ndcg_cost, params.evaluate.primary_k)
    report |= mitigations(params, model.score, loaded, features, groups, report["chosen"]["strength"])
    report = {"model": name} | report
    write_json(metrics_dir / "bias.json", report)
    with atomic_path(plots_dir / "bias_tradeoff.csv") as tmp:
        curve.to_csv(tmp, index=False)
    return report
