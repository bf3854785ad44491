"""Scored batches for offline evaluation: users scored ``batch_size`` at a time, batches on threads, and
each batch checked, masked and handed on a cache-sized chunk of rows at a time.

Every user's numbers depend only on that user's own row of scores, so batch size, chunk size and the
number of threads change how fast the numbers come, never the numbers (tested byte for byte in
``tests/offline/test_evaluation_harness.py``). :mod:`recsys.offline.evaluation` ranks and measures what
these functions hand it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from recsys.errors import RecsysError
from recsys.memory import require
from recsys.offline.metrics import stored_entries

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Maps user indices to a dense ``(len(users), n_items)`` score matrix, higher is better."""

CHUNK_CELLS = 1 << 20
"""Scores copied, masked, ranked and sorted at once (rows x items) within a scored batch: 4 MB of float32
(and argpartition's 8 MB of int64 indices) that stay in cache and are reused by the allocator. Whole
512-user batches of a 150k-item catalogue (300 MB, 600 MB of indices) made evaluation 2.6-3x slower at
S50 (fresh pages and cache misses on every pass; ``docs/benchmarks.md``, "Scale"). The numbers do not
depend on it: every row is ranked on its own."""
BATCH_SIZE = 512
"""Users scored at once (their scores are the batch in flight: ``BATCH_SIZE * n_items`` floats)."""
THREADS_ENV = "RECSYS_EVAL_THREADS"
BYTES_PER_BATCH_CELL = 16
"""Planned memory per score of a batch in flight: the model's output and its temporaries (float32 or
float64). Copies, masks and variants of the scores are made a chunk (:data:`CHUNK_CELLS`) at a time."""


def each_masked_chunk(
    score_fn: ScoreFn,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    mask: np.ndarray,
    batch_size: int,
    visit: Callable[[slice, np.ndarray, np.ndarray | None], None],
    threads: int | None = None,
) -> None:
    """Call ``visit(rows, scores, columns)`` for every chunk of ``users``: ``scores`` are the chunk's
    scores of the candidate items only, excluded items set to ``-inf``; ``columns`` are the candidates'
    item indices (None when every item is one); ``rows`` index ``users``. Users are scored ``batch_size``
    at a time, batches on :func:`evaluation_threads` threads (``visit`` writes disjoint rows).

    Ranking the candidates' columns alone keeps the cold-start protocol (about one item in ten) from
    sorting and partitioning rows that are nine tenths ``-inf``.
    """
    exclude = sp.csr_matrix(exclude)
    n_items = exclude.shape[1]
    columns = None if mask.all() else np.flatnonzero(mask)

    def one_batch(rows: slice) -> None:
        batch = users[rows]
        raw = shape_checked(score_fn(batch), batch, n_items)
        for part, scores in masked_chunks(raw, batch, exclude[batch], columns):
            visit(offset(part, rows.start), scores, columns)

    each_batch(len(users), batch_size, n_items, one_batch, threads)


def masked_chunks(
    raw: np.ndarray, batch: np.ndarray, excluded: sp.csr_matrix, columns: np.ndarray | None
) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, scores)`` of one scored batch, :data:`CHUNK_CELLS` scores at a time: a private checked
    copy of the candidates' scores with the batch's ``excluded`` entries set to ``-inf``."""
    width = raw.shape[1] if columns is None else len(columns)
    for part in row_chunks(len(batch), width):
        chunk, removed = raw[part], excluded[part]
        if columns is not None:
            chunk, removed = chunk[:, columns], removed[:, columns]
        yield part, masked(chunk, batch[part], removed)


def row_chunks(n_rows: int, width: int) -> Iterator[slice]:
    """Slices of ``n_rows`` rows of ``width`` scores, :data:`CHUNK_CELLS` scores (at least a row) each."""
    step = max(1, CHUNK_CELLS // max(width, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def masked(chunk: np.ndarray, users: np.ndarray, removed: sp.csr_matrix) -> np.ndarray:
    """A private checked copy of ``chunk`` (the scores of ``users``) with ``removed``'s entries ``-inf``."""
    scores = checked(chunk, users)
    scores[stored_entries(removed)] = -np.inf
    return scores


def each_batch(
    n_users: int,
    batch_size: int,
    n_items: int,
    work: Callable[[slice], None],
    threads: int | None = None,
) -> None:
    """``work(rows)`` for every batch of ``batch_size`` rows, ``threads`` batches at once (default
    :func:`evaluation_threads`). Scoring, partitioning and sorting release the GIL, so batches run side by
    side; each writes only its own rows, so the numbers do not depend on the number of threads."""
    batches = [slice(start, min(start + batch_size, n_users)) for start in range(0, n_users, batch_size)]
    threads = max(1, min(threads or evaluation_threads(), len(batches)))
    require(
        threads * min(batch_size, n_users) * n_items * BYTES_PER_BATCH_CELL,
        f"evaluating {threads} batch(es) of {min(batch_size, n_users)} users x {n_items} items at once",
        f"set {THREADS_ENV}=1 or score fewer users at once",
    )
    if threads == 1:
        for rows in batches:
            work(rows)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="evaluate") as pool:
        futures = [pool.submit(work, rows) for rows in batches]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def evaluation_threads() -> int:
    """Batches evaluated at once: ``$RECSYS_EVAL_THREADS``, else the usable CPUs (at most 4).

    Raises
    ------
    RecsysError
        When the variable is set but is not a positive whole number.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    if not raw.isdigit() or int(raw) < 1:
        raise RecsysError(f"{THREADS_ENV} must be a positive whole number of threads, got {raw!r}")
    return int(raw)


def offset(part: slice, start: int) -> slice:
    return slice(start + part.start, start + part.stop)


def shape_checked(scores: np.ndarray, batch: np.ndarray, n_items: int) -> np.ndarray:
    raw = np.asarray(scores)
    if raw.shape != (len(batch), n_items):
        raise ValueError(f"score_fn returned shape {raw.shape}, expected ({len(batch)}, {n_items})")
    return raw


def checked(raw: np.ndarray, batch: np.ndarray) -> np.ndarray:
    scores = np.array(raw, dtype=np.result_type(raw.dtype, np.float32))
    if np.isnan(scores).any():
        raise ValueError(f"score_fn returned NaN scores for users {batch[np.isnan(scores).any(axis=1)][:5]}")
    # A model's own -inf would be indistinguishable from a masked item; keep it the lowest real score.
    np.maximum(scores, np.finfo(scores.dtype).min, out=scores)
    return scores
