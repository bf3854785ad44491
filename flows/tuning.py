"""The LightFM hyperparameter search fanned out as Prefect tasks, one per trial.

The trials are the tuning experiment's (:func:`recsys.offline.tune.search_specs`, seeded; ``recsys tune``
runs them in turn); this flow spreads them over a task runner and writes the same files:

- ``"threads"`` (default): a :class:`prefect.task_runners.ThreadPoolTaskRunner` in this process;
- ``"dask"``: a :class:`prefect_dask.DaskTaskRunner`, on a temporary ``LocalCluster`` of worker
  processes, or on an existing scheduler given by ``address`` (e.g. ``tcp://10.0.0.5:8786``).

With ``num_threads=1`` every trial is deterministic, so both runners find the same best trial.

Examples
--------
From the project root, after ``dvc repro split features``::

    python -m flows.tuning --runner dask
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from recsys.config import load_params
from recsys.errors import ConfigError
from recsys.offline.tune import CompetitorSpec, Trial, TrialSpec
from recsys.paths import FEATURES_DIR, PARAMS_FILE, SEARCH_DIR, SPLIT_DIR

RunnerKind = Literal["threads", "dask"]
RUNNERS: tuple[RunnerKind, ...] = ("threads", "dask")


def make_task_runner(
    kind: str = "threads", address: str | None = None, n_workers: int = 2, max_workers: int | None = None
) -> TaskRunner[Any]:
    """The task runner for the trials.

    Parameters
    ----------
    kind : {"threads", "dask"}
        Threads in this process, or Dask workers.
    address : str, optional
        A running Dask scheduler (``kind="dask"`` only); default: a temporary local cluster.
    n_workers : int
        Worker processes (one thread each) of the temporary Dask cluster.
    max_workers : int, optional
        Threads of the thread pool (default: Prefect's).
    """
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind != "dask":
        raise ConfigError(f"unknown task runner {kind!r}: use one of {list(RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True},
    )


@task(name="search-trial", task_run_name="trial {spec.number}", cache_policy=NO_CACHE)
def trial_task(spec: TrialSpec | CompetitorSpec) -> Trial:
    """One trial: a LightFM configuration early-stopped on validation, or a competitor's grid point."""
    return spec.run()


@flow(name="hyperparameter-search")
def search_flow(
    project_dir: str = ".",
    features_dir: str = str(FEATURES_DIR),
    split_dir: str = str(SPLIT_DIR),
    params_path: str = str(PARAMS_FILE),
    out_dir: str = str(SEARCH_DIR),
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Every trial of the configured search as one task; writes the trials table and the best trial.

    Parameters
    ----------
    project_dir : str
        The project root; the relative paths below are under it.
    features_dir, split_dir : str
        Outputs of the ``features`` and ``split`` stages.
    params_path : str
        ``params.yaml`` (seed, ``train.lightfm``, ``train.search``).
    out_dir : str
        Where ``trials.csv`` and ``best_trial.json`` go.
    num_threads : int, optional
        LightFM threads per trial (default ``train.num_threads``); 1 makes trials deterministic.

    Returns
    -------
    dict
        ``{"best_trial": row, "trials": [row, ...], "tuned": {dotted key: value}, "trials_file",
        "best_file", "tuned_file"}`` (:func:`recsys.stages.write_tuning`).
    """
    from recsys.offline.tune import best_trial, tuning_specs
    from recsys.stages import training_inputs, write_tuning

    logger = get_run_logger()
    root = Path(project_dir)
    params = load_params(root / params_path)
    loaded, item_features = training_inputs(root / features_dir, root / split_dir)
    specs = tuning_specs(params, loaded.train, loaded.valid, item_features.matrix, num_threads)
    threads = num_threads or params.train.num_threads
    logger.info("tuning: %d trials (%d LightFM thread(s) each)", len(specs), threads)
    futures = [trial_task.submit(spec) for spec in specs]
    trials = [future.result() for future in futures]
    written = write_tuning(root / out_dir, trials)
    best = best_trial(trials)
    publish(trials, best, params.train.search.metric)
    logger.info("best trial %d: %s = %.4f", best.number, params.train.search.metric, best.score)
    return written | {"trials": [trial.row() for trial in trials]}


def publish(trials: list[Trial], best: Trial, metric: str) -> None:
    """Artifacts: the trials table and the best trial."""
    create_table_artifact(
        [trial.row() for trial in trials], key="search-trials", description=f"Search trials ({metric})"
    )
    lines = [
        f"## Best trial: {best.number} ({metric} = {best.score:.4f})",
        "",
        "| field | value |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | {value} |" for key, value in best.row().items()]
    create_markdown_artifact("\n".join(lines) + "\n", key="search-best-trial")


def run_search(
    runner: str = "threads",
    address: str | None = None,
    n_workers: int = 2,
    max_workers: int | None = None,
    **flow_kwargs: Any,
) -> dict[str, Any]:
    """Run :func:`search_flow` on the chosen task runner (see :func:`make_task_runner`), e.g.
    ``run_search("dask", num_threads=1)`` (a full search: minutes; run by ``tests/flows/test_tuning.py``).
    """
    task_runner = make_task_runner(runner, address, n_workers, max_workers)
    result: dict[str, Any] = search_flow.with_options(task_runner=task_runner)(**flow_kwargs)
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.tuning [--runner threads|dask] [--address tcp://...] [--num-threads 1]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=RUNNERS, default="threads")
    parser.add_argument("--address", help="a running Dask scheduler (default: a temporary local cluster)")
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--num-threads", type=int)
    parser.add_argument("--out-dir", default=str(SEARCH_DIR))
    args = parser.parse_args(argv)
    result = run_search(
        args.runner, args.address, args.n_workers, num_threads=args.num_threads, out_dir=args.out_dir
    )
    print(json.dumps(result["best_trial"], indent=2, default=str))


if __name__ == "__main__":
    main()
