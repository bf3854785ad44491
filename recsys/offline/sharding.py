"""Evaluation sharded over users: the same numbers from several worker processes or machines.

:func:`shard_slices` cuts the evaluated users at multiples of the scoring batch, so every batch a worker
scores is one a single process would have scored, and the sharded result is byte-identical to
:func:`recsys.offline.evaluation.evaluate` in one process. :func:`evaluate_shard` is what a worker runs: it
loads the model and the split from their paths (on a cluster, shared storage such as the DVC remote on
object storage; here the local disk) once per process, and returns its users' top-k lists and AUC.
:mod:`flows.evaluation` fans the shards out as Prefect tasks on Dask.

Examples
--------
>>> [(part.start, part.stop) for part in shard_slices(1_300, 2, batch_size=512)]
[(0, 1024), (1024, 1300)]
>>> shard_slices(0, 4, batch_size=512)
[]
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.models import Recommender, load_recommender
from recsys.offline.batches import BATCH_SIZE
from recsys.offline.evaluation import relevant_entries
from recsys.offline.ranking import rank_and_auc


def shard_slices(n_users: int, n_shards: int, batch_size: int = BATCH_SIZE) -> list[slice]:
    """At most ``n_shards`` contiguous slices of ``n_users`` users, each a whole number of batches (the
    last may be short); fewer when there are fewer batches than shards."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    batches = -(-n_users // batch_size)
    per_shard = -(-batches // n_shards) if batches else 0
    step = per_shard * batch_size
    return [slice(start, min(start + step, n_users)) for start in range(0, n_users, step)] if step else []


@functools.lru_cache(maxsize=2)
def _worker_inputs(
    model_path: str, split_dir: str
) -> tuple[Recommender, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """The model, the training matrix, the relevant test entries and the candidate mask (every item),
    loaded once per worker process."""
    from recsys.offline.split import load_split

    loaded = load_split(Path(split_dir))
    mask = np.ones(loaded.train_full.shape[1], dtype=bool)
    relevant = relevant_entries(loaded.train_full, loaded.test, mask)
    return load_recommender(Path(model_path)), loaded.train_full, relevant, mask


def evaluate_shard(
    model_path: str,
    split_dir: str,
    users: np.ndarray,
    k_max: int,
    batch_size: int = BATCH_SIZE,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k_max`` lists and AUC of ``users`` on the split's test part (every item a candidate).

    One thread by default: a cluster runs a worker per core, so the workers are the parallelism (more
    threads per worker would only oversubscribe the cores)."""
    model, train, relevant, mask = _worker_inputs(str(model_path), str(split_dir))
    return rank_and_auc(model.score, np.asarray(users), train, relevant, mask, k_max, batch_size, threads)
