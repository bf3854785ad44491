"""Evaluation of one model sharded over users, as Prefect tasks on Dask (or threads).

The evaluated users are cut into shards of whole scoring batches
(:func:`recsys.offline.sharding.shard_slices`);
each shard is a task that loads the model and the split from their paths once per worker and returns its
users' top-k lists and AUC; the flow gathers them and summarises exactly as the evaluate stage does, so
the result equals a single-process :func:`recsys.offline.evaluation.evaluate` (tested on a ``LocalCluster``).
Warm-start metrics only (overall and per user group); the cold-start part stays in the evaluate stage.

Examples
--------
From the project root, after ``dvc repro train``::

    python -m flows.evaluation --runner dask --n-workers 2 --model lightfm_hybrid
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tuning import RUNNERS, make_task_runner
from recsys.config import load_params
from recsys.offline.batches import BATCH_SIZE
from recsys.offline.evaluation import evaluate
from recsys.offline.sharding import evaluate_shard, shard_slices
from recsys.paths import MODELS_DIR, PARAMS_FILE, SPLIT_DIR, model_file
from recsys.specs import HYBRID


@task(name="evaluate-shard", task_run_name="users {first}-{last}", cache_policy=NO_CACHE)
def shard_task(
    model_path: str, split_dir: str, users: np.ndarray, k_max: int, first: int, last: int
) -> tuple[np.ndarray, np.ndarray]:
    """One shard's top-k lists and AUC (users ``first``..``last`` of the evaluated ones)."""
    return evaluate_shard(model_path, split_dir, users, k_max, BATCH_SIZE)


def _not_here(users: np.ndarray) -> np.ndarray:
    raise RuntimeError("the sharded evaluation scores on its workers, not in the flow")


@flow(name="sharded-evaluation")
def sharded_evaluation_flow(
    model: str = HYBRID,
    shards: int = 2,
    project_dir: str = ".",
    split_dir: str = str(SPLIT_DIR),
    models_dir: str = str(MODELS_DIR),
    params_path: str = str(PARAMS_FILE),
) -> dict[str, Any]:
    """The test-split metrics of ``model`` (overall and per mainstreaminess group), ``shards`` tasks.

    Returns
    -------
    dict
        :meth:`recsys.offline.evaluation.EvaluationResult.to_dict`, plus ``"shards"`` (users per shard).
    """
    from recsys.offline.popularity import mainstreaminess_groups
    from recsys.offline.split import load_split

    logger = get_run_logger()
    root = Path(project_dir)
    params = load_params(root / params_path)
    loaded = load_split(root / split_dir)
    model_path = str(model_file(model, root / models_dir))
    sizes: list[int] = []

    def ranker(
        users: np.ndarray, relevant: sp.csr_matrix, mask: np.ndarray, k_max: int
    ) -> tuple[np.ndarray, np.ndarray]:
        parts = shard_slices(len(users), shards, BATCH_SIZE)
        futures = [
            shard_task.submit(
                model_path, str(root / split_dir), users[part], k_max, part.start, part.stop - 1
            )
            for part in parts
        ]
        results = [future.result() for future in futures]
        sizes.extend(part.stop - part.start for part in parts)
        if not results:
            return np.empty((0, k_max), dtype=np.int64), np.empty(0)
        return np.vstack([top for top, _ in results]), np.concatenate([auc for _, auc in results])

    groups = mainstreaminess_groups(loaded.train_full, params.evaluate.groups)
    result = evaluate(_not_here, loaded.train_full, loaded.test, params.evaluate, groups, ranker=ranker)
    logger.info("%s: %d users in %d shard(s) %s", model, sum(sizes), len(sizes), sizes)
    return result.to_dict() | {"shards": sizes}


def run_sharded_evaluation(
    runner: str = "dask", address: str | None = None, n_workers: int = 2, **flow_kwargs: Any
) -> dict[str, Any]:
    """:func:`sharded_evaluation_flow` on the chosen task runner (:func:`flows.tuning.make_task_runner`)."""
    task_runner = make_task_runner(runner, address, n_workers)
    result: dict[str, Any] = sharded_evaluation_flow.with_options(task_runner=task_runner)(**flow_kwargs)
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.evaluation [--runner dask|threads] [--address tcp://...] [--n-workers 2]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=RUNNERS, default="dask")
    parser.add_argument("--address", help="a running Dask scheduler (default: a temporary local cluster)")
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--shards", type=int, help="default: one per worker")
    parser.add_argument("--model", default=HYBRID)
    args = parser.parse_args(argv)
    result = run_sharded_evaluation(
        args.runner, args.address, args.n_workers, model=args.model, shards=args.shards or args.n_workers
    )
    print(json.dumps({key: value for key, value in result.items() if key != "groups"}, indent=2))


if __name__ == "__main__":
    main()
