"""The two-stage ranker at a generated size, with the large-catalogue preset's settings and the ranker on.

``python -m benchmarks.scale_ranker --size S10`` generates the size (the ``synthetic`` source through the
project's stages, in ``<work>/<size>``, reused when already there), then in one fresh process: the ranker
learns as the ``train`` stage has it learn (generators fitted on the train part, the hybrid with
``hybrid_members`` and at most ``hybrid_epochs``; candidates for at most ``max_listeners`` validation
listeners; the booster), then its generators are fitted on train + valid (what the ``train`` stage fits
anyway, timed apart), then it ranks ``--listeners`` test listeners (per-listener time, extrapolated to every
test listener and to the evaluate stage's three passes: test, cold start, candidate recall). Peak RSS is
the process's. Writes ``bench/results/scale_ranker_<size>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale import STEPS, features_folder, preset_settings, run_step
from recsys.io import write_json

EVALUATE_PASSES = 3
"""The evaluate stage ranks every test listener for the test protocol and for candidate recall, and the
cold-start listeners once more."""


def step_ranker(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Learn, fit the scoring generators, rank a sample of test listeners (one process, timed apart)."""
    from flows.dvc import apply_overrides
    from recsys.config import load_params
    from recsys.models.ranker import TwoStageRanker
    from recsys.offline.features import load_item_features, without_identity
    from recsys.offline.split import load_split

    params_file = root / "params_ranker.yaml"
    params_file.write_bytes((root / "params.yaml").read_bytes())
    apply_overrides(params_file, options["overrides"])
    params = load_params(params_file)
    split = load_split(root / "split")
    features = without_identity(load_item_features(root / options["features"]), split.cold_items)
    ranker = TwoStageRanker(params, seed=params.seed, threads=1)
    start = time.perf_counter()
    ranker.learn(split.train_full, features.matrix, holdout=split.valid, feature_groups=features.group_slices)
    learned = time.perf_counter()
    ranker.use_generators({})
    fitted = time.perf_counter()
    users = np.flatnonzero(np.diff(split.test.indptr))
    sample = np.sort(
        np.random.default_rng(0).choice(users, size=min(options["listeners"], len(users)), replace=False)
    )
    for batch in np.array_split(sample, max(1, len(sample) // 512)):
        ranker.score(batch)
    ranked = time.perf_counter()
    per_listener = (ranked - fitted) / len(sample)
    return {
        "learn_seconds": learned - start,
        "generators_seconds": fitted - learned,
        "rank_seconds_per_listener": per_listener,
        "ranked_listeners": len(sample),
        "test_listeners": len(users),
        "evaluate_seconds_extrapolated": per_listener * len(users) * EVALUATE_PASSES,
        "learned_from_listeners": min(
            params.train.ranker.max_listeners, int((np.diff(split.valid.indptr) > 0).sum())
        ),
        "importance_top": sorted(ranker.importance.items(), key=lambda item: -item[1])[:5],
        "shape": list(split.train_full.shape),
        "pairs": int(split.train_full.nnz + split.test.nnz + split.valid.nnz + split.cold.nnz),
    }


STEPS["ranker"] = step_ranker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="S10")
    parser.add_argument("--work", type=Path, default=Path("/tmp/recsys-scale-ranker"))
    parser.add_argument(
        "--listeners", type=int, default=2048, help="test listeners ranked (then extrapolated)"
    )
    args = parser.parse_args(argv)
    from flows.dvc import apply_overrides

    root = args.work / args.size
    if not (root / "split").exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "params.yaml").write_bytes(Path("params.yaml").read_bytes())
        apply_overrides(
            root / "params.yaml", {"dataset.name": "synthetic", "dataset.synthetic.size": args.size}
        )
        for name in ("generate", "prepare", "features", "split"):
            step = run_step(name, root)
            if "error" in step:
                print(json.dumps(step))
                return 1
    settings, _, tags = preset_settings()
    overrides = {key: value for key, value in settings.items() if key.startswith("train.")}
    overrides["train.ranker.enabled"] = True
    result = run_step(
        "ranker",
        root,
        overrides=overrides,
        features=features_folder(root, tags).name,
        listeners=args.listeners,
    )
    result["size"] = args.size
    write_json(Path(f"bench/results/scale_ranker_{args.size}.json"), result)
    print(json.dumps(result, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
