"""The session settings (``params.yaml`` ``session``) chosen on the real data, offline.

``python -m benchmarks.session_tuning`` replays the closed loop's first two sessions on the project's hybrid
(``models/lightfm_hybrid.npz``) for the test listeners: session 1 shows each listener the model's top ``k``
as trained; they like the items of their held-out (test) artists and skip the others; session 2 is the list
moved by those reactions (:func:`recsys.serving.session.adapt`, the items shown left out) for each setting
of ``step`` and ``skip``: a fixed step (``step=0.5``), or one relative to the listener's listened items
(``step=2/listened``: an event weighs like two listened items, the served rule). A hit is a held-out artist
not liked yet. The reference row is the list as trained without the items shown (``as trained, shown left
out``: what leaving out alone gives; session 1's list again finds nothing, by construction). Writes
``bench/results/session_tuning.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from recsys import stages
from recsys.io import write_json
from recsys.models import LightFMRecommender
from recsys.models.scorer import top_k_from_scores
from recsys.serving.session import adapt

RESULTS = Path("bench/results/session_tuning.json")
STEPS = (0.0, 0.1, 0.25, 0.5, 1.0)
SKIPS = (0.0, -0.05, -0.1, -0.3)
HISTORY_STEPS = (1.0, 2.0, 5.0)
"""``step`` divided by the listener's listened items: each event weighs like one more listened item."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--like", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    split, _ = stages.training_inputs(args.data_root / "features", args.data_root / "split")
    model = LightFMRecommender.load(args.models_dir / "lightfm_hybrid.npz")
    scorer = model.scorer()
    embeddings = scorer.item_vectors[:, :-2]
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    train, test = split.train_full.tocsr(), split.test.tocsr()
    users = np.flatnonzero(test.getnnz(axis=1) > 0)
    k = args.k
    first, _ = scorer.top_k(users, k, train)
    rows: dict[str, list[int]] = {}
    listeners = 0  # those with a held-out artist left to find after session 1
    for row, user in enumerate(users.tolist()):
        held = set(test.indices[test.indptr[user] : test.indptr[user + 1]].tolist())
        shown = first[row]
        left = held - set(shown.tolist())
        if not left:
            continue
        listeners += 1
        known = train.indices[train.indptr[user] : train.indptr[user + 1]]
        exclude = np.concatenate([known, shown])
        # (label, step, skip weight): the fixed steps, then steps relative to the listened items.
        settings = [("as trained, shown left out", 0.0, 0.0)]
        settings += [(f"step={t:g} skip={w:g}", t, w) for t in STEPS if t > 0 for w in SKIPS]
        listened = max(len(known), 1)
        settings += [
            (f"step={t:g}/listened skip={w:g}", t / listened, w) for t in HISTORY_STEPS for w in SKIPS
        ]
        for key, step, skip in settings:
            weights = np.array([args.like if i in held else skip for i in shown.tolist()])
            moved = adapt(scorer.user_vectors[user], unit, shown, weights, step)
            scores = (scorer.item_vectors @ moved)[np.newaxis, :]
            scores[0, exclude] = -np.inf
            top, _ = top_k_from_scores(scores, k)
            rows.setdefault(key, []).append(int(bool(left & set(top[0].tolist()))))
    results = {
        "listeners": listeners,
        "k": k,
        "like": args.like,
        "hit_rate": {key: round(float(np.mean(hits)), 4) for key, hits in rows.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
