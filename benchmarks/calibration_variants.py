"""Ways to serve niche listeners better, tried on the hybrid: which categories calibration counts, and a
popularity penalty weighted by each listener's own mainstreaminess.

``python -m benchmarks.calibration_variants`` measures, for every test listener of the project's split and
the hybrid of ``models/``, the top 10 from its best 100 unlistened artists: calibrated over genres and
popularity tiers, over tiers only, over genres only (the served setting), over 100 genre columns, and
re-ranked against popularity with a strength that grows as the listener is less mainstream. Per variant:
nDCG@10 overall and per group, the niche / mainstream ratio and miscalibration (genres and tiers). Writes
``bench/results/calibration_variants.json``. These listeners are the test ones: an exploration, not a
choice (the served strength is chosen by the ``bias`` stage on half of them).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from recsys import stages
from recsys.config import load_params
from recsys.io import write_json
from recsys.models import load_recommender
from recsys.models.scorer import top_k_from_scores
from recsys.offline.calibration import Categories, calibrated_lists, per_user_metrics
from recsys.offline.popularity import (
    item_popularity,
    mainstreaminess,
    mainstreaminess_groups,
    popularity_variants,
)

RESULTS = Path("bench/results/calibration_variants.json")
STRENGTHS = (0.05, 0.1, 0.2, 0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    params = load_params("params.yaml")
    split, features = stages.training_inputs(args.data_root / "features", args.data_root / "split")
    train, test = split.train_full.tocsr(), split.test.tocsr()
    groups = mainstreaminess_groups(train, params.evaluate.groups)
    popularity = item_popularity(train)
    model = load_recommender(args.models_dir / "lightfm_hybrid.npz")
    both = Categories.of(features.names, features.matrix, popularity, 30)
    users = np.flatnonzero(test.getnnz(axis=1) > 0)
    member = {name: np.isin(users, rows) for name, rows in groups.items()}
    results: dict[str, dict[str, float]] = {}

    def record(label: str, top: np.ndarray) -> None:
        measured = per_user_metrics(top, train, test, users, both, 10)
        ndcg = measured["ndcg@10"]
        row = {"ndcg@10": float(np.nanmean(ndcg))}
        row |= {f"ndcg@10/{name}": float(np.nanmean(ndcg[rows])) for name, rows in member.items()}
        row["niche_ratio"] = row["ndcg@10/niche"] / row["ndcg@10/mainstream"]
        row["miscalibration"] = float(np.nanmean(measured["miscalibration"]))
        results[label] = {key: round(value, 4) for key, value in row.items()}
        print(label, results[label], flush=True)

    variants = {
        "genres and tiers": both,
        "tiers only": replace(both, genres=np.zeros((len(popularity), 1), np.float32)),
        "genres only": replace(both, tiers=np.zeros(len(popularity), np.int64)),
        "100 genre columns and tiers": Categories.of(features.names, features.matrix, popularity, 100),
    }
    for name, cats in variants.items():
        lists = calibrated_lists(model.score, train, users, cats, [0.0, *STRENGTHS], 10, 100)
        for strength, top in lists.items():
            record("unmitigated" if strength == 0 else f"calibration {strength:g}, {name}", top)
    # A popularity penalty that grows as the listener is less mainstream (their rank among listeners).
    share = np.argsort(np.argsort(mainstreaminess(train)[users])) / max(len(users) - 1, 1)
    scores = np.asarray(model.score(users), dtype=np.float64)
    for strength in (0.1, 0.2, 0.3):
        ((_, standardised),) = popularity_variants(popularity, [0.0])(scores)
        ((_, penalised),) = popularity_variants(popularity, [1.0])(scores)
        penalty = standardised - penalised  # one unit of the standardised log-popularity per item
        adjusted = standardised - (strength * (1 - share))[:, np.newaxis] * penalty
        top, _ = top_k_from_scores(adjusted, 10, train[users])
        record(f"popularity penalty {strength:g} x (1 - mainstreaminess rank)", top)
    seconds = time.perf_counter() - started
    write_json(args.out, {"listeners": len(users), "variants": results, "seconds": round(seconds, 1)})
    print(json.dumps({"seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
