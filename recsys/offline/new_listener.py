"""Offline check of the new-listener path: does folding in 5 favourite artists beat most-popular?

Protocol: every test user with at least ``n_favourites`` training artists and one test artist gets
``n_favourites`` of their training artists, drawn with a seeded generator, as "favourites"; the model
folds them into a user vector (:meth:`LightFMRecommender.fold_in_user`) and ranks every item except the
user's training artists; the relevant items are the user's held-out test artists. Most-popular ranks by
training listeners under the same exclusions. The model never uses the user's own trained vector, but
its item embeddings were trained with that user's training listens (no retraining per user), so this is
an optimistic estimate of a truly new listener.

``python -m recsys.offline.new_listener [DATA_ROOT]`` trains a quick hybrid on the pipeline's outputs and
prints the report as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import LightFMParams, load_params
from recsys.models import LightFMRecommender
from recsys.offline.features import load_item_features, without_identity
from recsys.offline.metrics import ranking_metrics
from recsys.offline.ranking import rank_top_k
from recsys.offline.split import Split, load_split, train_popularity


def pick_favourites(
    train: sp.csr_matrix, users: np.ndarray, n_favourites: int, seed: int
) -> list[np.ndarray]:
    """``n_favourites`` distinct training items of each user, drawn with ``seed`` (users need that many)."""
    rng = np.random.default_rng(seed)
    return [
        rng.choice(train.indices[train.indptr[u] : train.indptr[u + 1]], n_favourites, replace=False)
        for u in users
    ]


def eligible_users(train: sp.csr_matrix, test: sp.csr_matrix, n_favourites: int) -> np.ndarray:
    """Users with at least ``n_favourites`` training items and one test item."""
    return np.flatnonzero((np.diff(train.indptr) >= n_favourites) & (np.diff(test.indptr) > 0))


def new_listener_report(
    model: LightFMRecommender, split: Split, n_favourites: int = 5, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """P@k and nDCG@k of fold-in from ``n_favourites`` favourites, of most-popular, and of trained users.

    Parameters
    ----------
    model : LightFMRecommender
        A hybrid trained on ``split.train_full``.
    split : Split
        The evaluation split; its ``test`` part holds the relevant items.
    n_favourites, k, seed : int
        Favourites per user, cut-off, and the seed of the favourites' draw.

    Returns
    -------
    dict
        ``{"n_users", "n_favourites", "k", "fold_in": {...}, "most_popular": {...}, "trained_user": {...}}``.
    """
    train, test = split.train_full, split.test
    users = eligible_users(train, test, n_favourites)
    favourites = pick_favourites(train, users, n_favourites, seed)
    scorer = model.scorer()
    vectors = np.stack([model.fold_in_user(f) for f in favourites]) if len(users) else np.empty((0, 0))
    row_of = {int(u): row for row, u in enumerate(users)}
    popularity = train_popularity(split).astype(np.float32)

    def fold_in(batch: np.ndarray) -> np.ndarray:
        return vectors[[row_of[int(u)] for u in batch]] @ scorer.item_vectors.T

    def most_popular(batch: np.ndarray) -> np.ndarray:
        return np.broadcast_to(popularity, (len(batch), len(popularity))).copy()

    report: dict[str, Any] = {"n_users": len(users), "n_favourites": n_favourites, "k": k, "seed": seed}
    for name, score_fn in (
        ("fold_in", fold_in),
        ("most_popular", most_popular),
        ("trained_user", scorer.score),
    ):
        top = rank_top_k(score_fn, users, k, exclude=train)
        metrics = ranking_metrics(top, test, users, [k])
        report[name] = {
            f"precision@{k}": float(np.nanmean(metrics[f"precision@{k}"])),
            f"ndcg@{k}": float(np.nanmean(metrics[f"ndcg@{k}"])),
        }
    return report


def train_hybrid(
    split: Split, features_dir: Path, params: LightFMParams, seed: int, num_threads: int = 2
) -> LightFMRecommender:
    """A hybrid LightFM on ``split.train_full`` with the split's cold items' identity columns removed."""
    features = without_identity(load_item_features(features_dir), split.cold_items)
    model = LightFMRecommender(params, seed=seed, num_threads=num_threads)
    return model.fit(split.train_full, features.matrix)


def main(argv: list[str]) -> None:
    """Train a quick hybrid (params.yaml's settings, at most 30 epochs) and print the report."""
    root = Path(argv[0]) if argv else Path("data")
    params = load_params()
    lightfm = params.train.lightfm.model_copy(update={"epochs": min(params.train.lightfm.epochs, 30)})
    split = load_split(root / "split")
    model = train_hybrid(split, root / "features", lightfm, params.seed)
    print(json.dumps(new_listener_report(model, split, seed=params.seed), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
