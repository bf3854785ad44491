"""Which booster the two-stage ranker should learn with, chosen on validation listeners only.

``python -m benchmarks.ranker_boosters`` (after ``make run``: it reads ``data/split`` and ``data/features``)
fits the generators on the train part exactly as the ranker learns them (``TwoStageRanker.learn``), builds
the candidates of every validation listener, and splits those listeners in two seeded halves: each booster
learns on one half and is scored on the other (nDCG@10 of the listener's validation artists over the whole
catalogue: an artist outside the candidates counts as missed). Test is never read. Boosters: LightGBM
``lambdarank`` at several settings (the committed one first) and, when the ``catboost`` package is importable
(it is not a project dependency: ``pip install --target DIR catboost`` and ``PYTHONPATH=DIR``), CatBoost
``YetiRank``. Writes ``bench/results/ranker_boosters.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.config import load_params
from recsys.io import write_json
from recsys.models.candidates import CandidatePairs, PairContext, candidate_pairs, feature_names
from recsys.models.ranker import TwoStageRanker, _without
from recsys.offline.features import load_item_features, without_identity
from recsys.offline.split import load_split

RESULTS = Path("bench/results/ranker_boosters.json")
K = 10


def ndcg_at_k(pairs: CandidatePairs, scores: np.ndarray, relevant: sp.csr_matrix, rows: np.ndarray) -> float:
    """Mean nDCG@K over the listeners at positions ``rows`` of ``pairs``: their candidates ranked by
    ``scores``, against all their ``relevant`` items (the ideal places min(K, n relevant) hits first)."""
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    values = []
    for row in rows:
        start, stop = pairs.offsets[row], pairs.offsets[row + 1]
        user = pairs.users[row]
        wanted = set(relevant[user].indices.tolist())
        if not wanted:
            continue
        order = np.argsort(-scores[start:stop], kind="stable")[:K]
        hits = np.array([pairs.items[start + i] in wanted for i in order], dtype=float)
        ideal = discounts[: min(K, len(wanted))].sum()
        values.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return float(np.mean(values))


def lightgbm_booster(params: Any, settings: dict[str, Any]) -> Callable[..., Any]:
    """The ranker's own LightGBM settings (``TwoStageRanker._booster_params``) with ``settings`` changed."""

    def fit(features: np.ndarray, labels: np.ndarray, sizes: np.ndarray, seed: int) -> Callable[..., Any]:
        import lightgbm as lgb

        ranker = params.train.ranker.model_copy(update=settings)
        changed = params.model_copy(update={"train": params.train.model_copy(update={"ranker": ranker})})
        booster_params = TwoStageRanker(changed, seed=seed)._booster_params()
        data = lgb.Dataset(features, labels, group=sizes)
        booster = lgb.train(booster_params, data, num_boost_round=ranker.rounds)
        return lambda x: booster.predict(x, num_threads=1)

    return fit


def catboost_booster(settings: dict[str, Any]) -> Callable[..., Any]:
    def fit(features: np.ndarray, labels: np.ndarray, sizes: np.ndarray, seed: int) -> Callable[..., Any]:
        from catboost import CatBoost, Pool

        groups = np.repeat(np.arange(len(sizes)), sizes)
        model = CatBoost(
            {
                "loss_function": settings["loss"],
                "iterations": settings["iterations"],
                "learning_rate": settings["learning_rate"],
                "depth": settings["depth"],
                "random_seed": seed,
                "thread_count": 1,
                "verbose": False,
                "allow_writing_files": False,
            }
        )
        model.fit(Pool(features, labels, group_id=groups))
        return lambda x: model.predict(x)

    return fit


def boosters(params: Any) -> dict[str, Callable[..., Any]]:
    found = {
        "lightgbm committed (7 leaves, 200 x 0.05, 400 a leaf, L2 10)": lightgbm_booster(params, {}),
        "lightgbm 15 leaves, 400 x 0.02, 200 a leaf": lightgbm_booster(
            params, {"num_leaves": 15, "rounds": 400, "learning_rate": 0.02, "min_child_samples": 200}
        ),
        "lightgbm 31 leaves, 200 x 0.05, 100 a leaf, L2 1": lightgbm_booster(
            params, {"num_leaves": 31, "min_child_samples": 100, "lambda_l2": 1.0}
        ),
        "lightgbm 7 leaves, 600 x 0.02": lightgbm_booster(params, {"rounds": 600, "learning_rate": 0.02}),
    }
    try:
        import catboost  # noqa: F401
    except ImportError:
        print("ranker_boosters: catboost is not importable: only LightGBM is compared")
        return found
    found["catboost YetiRank depth 6, 500 x 0.05"] = catboost_booster(
        {"loss": "YetiRank", "iterations": 500, "learning_rate": 0.05, "depth": 6}
    )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, default=2, help="halvings of the validation listeners")
    args = parser.parse_args(argv)
    threadpool_limits(limits=1)
    params = load_params()
    split = load_split(args.data_root / "split")
    features = without_identity(load_item_features(args.data_root / "features"), split.cold_items)
    ranker = TwoStageRanker(params, seed=params.seed)
    holdout = sp.csr_matrix(split.valid, dtype=np.float32)
    learn_on = _without(split.train_full, holdout)
    start = time.perf_counter()
    groups = features.group_slices
    fresh = ranker._fit_generators(learn_on, features.matrix, groups, cheaper=True)
    context = PairContext.of(learn_on, features.matrix, groups, ranker.settings.never_played)
    users = np.flatnonzero(np.diff(holdout.indptr))
    pairs = candidate_pairs(fresh, context, users, ranker.settings.candidates)
    print(f"generators and {len(pairs.items):,} candidate pairs in {time.perf_counter() - start:.0f} s")
    labels = np.asarray(holdout[pairs.users[pairs.rows], pairs.items] > 0).ravel().astype(np.float32)
    useful = np.bincount(pairs.rows, weights=labels, minlength=len(pairs.users)) > 0
    results: dict[str, Any] = {"listeners": len(users), "features": feature_names(fresh, context), "runs": {}}
    for name, fit in boosters(params).items():
        scores = []
        seconds = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            half = rng.random(len(pairs.users)) < 0.5
            learn_rows = np.flatnonzero(half & useful)
            keep = np.isin(pairs.rows, learn_rows)
            began = time.perf_counter()
            predict = fit(pairs.features[keep], labels[keep], np.diff(pairs.offsets)[learn_rows], seed)
            seconds.append(time.perf_counter() - began)
            predicted = np.asarray(predict(pairs.features), dtype=np.float64)
            scores.append(ndcg_at_k(pairs, predicted, holdout, np.flatnonzero(~half)))
        results["runs"][name] = {"ndcg@10": scores, "mean": float(np.mean(scores)), "fit_seconds": seconds}
        print(f"{name}: nDCG@10 {np.mean(scores):.4f} ({', '.join(f'{s:.4f}' for s in scores)}), "
              f"fit {np.median(seconds):.0f} s")  # fmt: skip
    # The first generator (the hybrid) alone: its standardised score orders the candidates, which hold its
    # whole top 100, so its top 10 is its own list. The same halves as the boosters were scored on.
    reference = []
    for seed in range(args.seeds):
        half = np.random.default_rng(1000 + seed).random(len(pairs.users)) < 0.5
        first = pairs.features[:, 0].astype(np.float64)
        reference.append(ndcg_at_k(pairs, first, holdout, np.flatnonzero(~half)))
    results["first_generator_alone"] = {"name": next(iter(fresh)), "ndcg@10": reference}
    print(f"{next(iter(fresh))} alone: nDCG@10 {np.mean(reference):.4f}")
    write_json(args.out, results)
    print(json.dumps({name: round(run["mean"], 4) for name, run in results["runs"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
