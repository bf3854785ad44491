"""Approximate top-k at a generated size: a step of ``make bench-scale`` (``--only ann``).

The service ranks a listener's first request exactly: one product over every item, then the best
:data:`recsys.serving.state.CACHED_TOP` unlistened ones. This step measures whether an HNSW index (faiss,
inner product, built on the scorer's item rows ``[v, 1, b_i]``) could replace that product: recall@10 of
its best ten unlistened items against the exact ones, and the latency of a first request either way (one
thread, as a worker serves), for sampled listeners at several search widths (``efSearch``).

With a popularity re-ranking strength ``s`` the service ranks ``z(score) - s * z(log1p(popularity))``
over the row. Standardising a row is a per-listener affine map (``sd_u = sqrt(u' C u)`` with ``C`` the item
rows' covariance), so that ranking is the ranking of the inner product of ``[u, s * sd_u]`` with
``[v, 1, b_i, -z_i]``: the same index answers it, one column wider.

The rule of the issue: an approximate top-k is enabled only where it reaches recall@10 >= 0.95 at a p99 no
worse than the exact ranking's; :func:`verdict` applies it to the measured widths.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

RECALL_FLOOR = 0.95
WIDTHS = (256, 512, 1024)
"""``efSearch``; a search asks for ``CACHED_TOP`` + the listener's own items (200 or more), and faiss
widens a smaller ``efSearch`` to that, so narrower widths would measure the same search."""
KINDS = ("inner product", "l2 transform")
"""The index on the rows as they are (inner product, which is not a metric: long rows become hubs), and
on the rows lifted to one norm with an extra column ``sqrt(M^2 - |x|^2)`` and searched by L2 distance, whose
order is the inner product's (the classic reduction of maximum inner-product search)."""


def step_ann(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Build the indexes on the size's hybrid (``options["models"]``), then measure exact and approximate
    first requests for ``options["listeners"]`` sampled listeners at ``options["strength"]``."""
    import faiss

    from recsys.models import load_recommender
    from recsys.models.lightfm_model import LightFMRecommender
    from recsys.models.scorer import top_k_from_scores
    from recsys.offline.popularity import rerank_popularity
    from recsys.offline.split import load_split
    from recsys.paths import model_file
    from recsys.serving.state import CACHED_TOP
    from recsys.specs import HYBRID

    strength = float(options.get("strength", 0.0))
    known = load_split(root / "split").train_full.tocsr()
    model = load_recommender(model_file(HYBRID, root / options.get("models", "models")))
    if not isinstance(model, LightFMRecommender):
        raise TypeError(f"the approximate top-k needs the hybrid's vectors, got {type(model).__name__}")
    scorer = model.scorer()
    users, items = scorer.user_vectors, scorer.item_vectors
    popularity = np.asarray(known.getnnz(axis=0), dtype=np.float64)
    rows, query = _folded(users, items, popularity, strength)
    sample = np.random.default_rng(0).choice(users.shape[0], options.get("listeners", 1_000), replace=False)

    def exact(user: int) -> np.ndarray:
        row = scorer.score(np.array([user]))
        if strength > 0:
            row = rerank_popularity(row, popularity, strength)
        return top_k_from_scores(row, CACHED_TOP, known[user])[0][0]

    truth, exact_seconds = _timed(exact, sample)
    measured: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        faiss.omp_set_num_threads(2)
        start = time.perf_counter()
        index, kind_query = _index(faiss, kind, rows, query)
        build_seconds = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        for width in WIDTHS:

            def approximate(
                user: int, index: Any = index, ask: Any = kind_query, width: int = width
            ) -> np.ndarray:
                listened = known.indices[known.indptr[user] : known.indptr[user + 1]]
                wanted = CACHED_TOP + len(listened)
                index.hnsw.efSearch = max(width, wanted)
                _, found = index.search(ask(user)[np.newaxis, :], wanted)
                found = found[0][found[0] >= 0]
                return found[~np.isin(found, listened)][:CACHED_TOP]

            lists, seconds = _timed(approximate, sample)
            recalls = [_recall(got, truth[i]) for i, got in enumerate(lists)]
            measured[f"{kind}, efSearch {width}"] = {
                "recall@10": float(np.mean(recalls)),
                "min_recall@10": float(min(recalls)),
                "build_seconds": build_seconds,
            } | _percentiles(seconds)
    result = {
        "items": int(items.shape[0]),
        "dimensions": int(rows.shape[1]),
        "strength": strength,
        "listeners": len(sample),
        "exact": _percentiles(exact_seconds),
        "hnsw": measured,
    }
    return result | {"verdict": verdict(result)}


def _index(faiss: Any, kind: str, rows: np.ndarray, query: Any) -> tuple[Any, Any]:
    """An HNSW index of ``kind`` (:data:`KINDS`) on ``rows``, and the matching query row of a listener."""
    if kind == "inner product":
        index = faiss.IndexHNSWFlat(rows.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.add(rows)
        return index, query
    norms = np.einsum("ij,ij->i", rows.astype(np.float64), rows.astype(np.float64))
    lift = np.sqrt(np.maximum(norms.max() - norms, 0.0)).astype(np.float32)
    index = faiss.IndexHNSWFlat(rows.shape[1] + 1, 32, faiss.METRIC_L2)
    index.hnsw.efConstruction = 200
    index.add(np.ascontiguousarray(np.column_stack([rows, lift])))
    return index, lambda user: np.append(query(user), np.float32(0.0)).astype(np.float32)


def verdict(result: dict[str, Any]) -> str:
    """Which width, if any, may be enabled: recall@10 >= :data:`RECALL_FLOOR` and p99 <= exact's p99."""
    exact_p99 = result["exact"]["p99_ms"]
    passing = [
        width
        for width, measured in result["hnsw"].items()
        if measured["recall@10"] >= RECALL_FLOOR and measured["p99_ms"] <= exact_p99
    ]
    if passing:
        return f"enable: {passing[0]} meets recall@10 >= {RECALL_FLOOR} at p99 <= exact"
    best = max(result["hnsw"].items(), key=lambda item: item[1]["recall@10"])
    return (
        f"keep exact: no index meets both (best recall@10 {best[1]['recall@10']:.3f}: {best[0]}, "
        f"p99 {best[1]['p99_ms']:.2f} ms against exact {exact_p99:.2f} ms)"
    )


def _folded(
    users: np.ndarray, items: np.ndarray, popularity: np.ndarray, strength: float
) -> tuple[np.ndarray, Any]:
    """The index rows and the query row of a listener, the re-ranking folded in when ``strength > 0``."""
    items32 = np.ascontiguousarray(items, dtype=np.float32)
    if strength <= 0:
        return items32, lambda user: np.ascontiguousarray(users[user], dtype=np.float32)
    log_pop = np.log1p(popularity)
    z_pop = (log_pop - log_pop.mean()) / (log_pop.std() or 1.0)
    covariance = np.cov(items.astype(np.float64), rowvar=False, bias=True)

    def query(user: int) -> np.ndarray:
        vector = users[user].astype(np.float64)
        spread = float(np.sqrt(max(vector @ covariance @ vector, 0.0)))
        return np.append(vector, strength * spread).astype(np.float32)

    return np.ascontiguousarray(np.column_stack([items32, -z_pop]), dtype=np.float32), query


def _timed(ranker: Any, sample: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    lists, seconds = [], []
    for user in sample:
        start = time.perf_counter()
        lists.append(ranker(int(user)))
        seconds.append(time.perf_counter() - start)
    return lists, np.array(seconds)


def _recall(got: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    expected = truth[truth >= 0][:k]
    return len(np.intersect1d(got[:k], expected)) / max(len(expected), 1)


def _percentiles(seconds: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.median(seconds) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3)}
