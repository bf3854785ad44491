"""Cross-validation as a Prefect flow: one task per fold, on Dask workers (or threads).

Every fold draws the project's split with its own seed, fits every model with the ``train`` stage's recipe
and measures it with the ``evaluate`` protocol (:mod:`recsys.offline.cross_validation`); the flow writes
the mean and spread per model and metric to ``reports/cv/`` (``cv.json``, ``cv.csv``, ``cv.md``) and as a
Prefect table artifact. Each fold reads the prepared tables and the item features from the project folder
itself, so a Dask worker on another host needs only the project volume (as the reference topology's
``eval`` host has it).

Examples
--------
From the project root, after ``make run`` (or ``dvc repro prepare features``)::

    recsys cv --folds 5                 # a temporary local Dask cluster of 2 workers
    recsys cv --folds 5 --runner threads
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.tuning import make_task_runner
from recsys.config import load_params
from recsys.io import atomic_path, write_json, write_text
from recsys.paths import CV_DIR, FEATURES_DIR, PARAMS_FILE, PREPARED_DIR
from recsys.reporting.formatting import markdown_table


@task(name="cv-fold", task_run_name="fold seed {seed}", cache_policy=NO_CACHE)
def fold_task(
    project_dir: str, params_path: str, prepared_dir: str, features_dir: str, seed: int
) -> dict[str, Any]:
    """One fold, reading its inputs from the project folder (so it runs on any worker that mounts it)."""
    from recsys.offline.cross_validation import read_fold_inputs, run_fold

    root = Path(project_dir)
    params = load_params(root / params_path)
    inputs = read_fold_inputs(root / prepared_dir, root / features_dir, params)
    return run_fold(inputs, params, seed)


@flow(name="cross-validation")
def cross_validation_flow(
    project_dir: str = ".",
    folds: int = 5,
    params_path: str = str(PARAMS_FILE),
    prepared_dir: str = str(PREPARED_DIR),
    features_dir: str = str(FEATURES_DIR),
    out_dir: str = str(CV_DIR),
) -> dict[str, Any]:
    """Every fold as a task; the summary (:func:`recsys.offline.cross_validation.summarise`) written to
    ``out_dir`` with the folds' own numbers."""
    from recsys.offline.cross_validation import fold_seeds, summarise, summary_table

    logger = get_run_logger()
    root = Path(project_dir)
    params = load_params(root / params_path)
    seeds = fold_seeds(params.seed, folds)
    logger.info("cross-validation: %d folds (split seeds %s)", folds, seeds)
    futures = [fold_task.submit(project_dir, params_path, prepared_dir, features_dir, seed) for seed in seeds]
    results = [future.result() for future in futures]
    summary = summarise(results, params.evaluate.primary_k) | {"per_fold": results}
    table = summary_table(summary)
    out = root / out_dir
    write_json(out / "cv.json", summary)
    with atomic_path(out / "cv.csv") as tmp:
        table.to_csv(tmp, index=False)
    header = (
        f"Cross-validation: {folds} splits (seeds {seeds}); mean ± standard deviation over the folds.\n\n"
    )
    rows = [[str(value) for value in row] for row in table.itertuples(index=False)]
    write_text(out / "cv.md", header + markdown_table(list(table.columns), rows) + "\n")
    create_table_artifact(table.to_dict(orient="records"), key="cross-validation", description=header.strip())
    return summary


def run_cross_validation(
    folds: int = 5, runner: str = "dask", address: str | None = None, n_workers: int = 2, **flow_kwargs: Any
) -> dict[str, Any]:
    """:func:`cross_validation_flow` on the chosen task runner (:func:`flows.tuning.make_task_runner`)."""
    task_runner = make_task_runner(runner, address, n_workers, max_workers=n_workers)
    result: dict[str, Any] = cross_validation_flow.with_options(task_runner=task_runner)(
        folds=folds, **flow_kwargs
    )
    return result
