"""``make bench-profile``: the hybrid's validation quality per training minute on generated data.

The artist-sized hybrid (128 components, WARP ``max_sampled`` 200, 20 tags an item, two members) costs
215 s an epoch at S50: hours. This benchmark picks a profile for large catalogues by what each setting
buys per minute. On one size (default S10, the folders ``make bench-scale`` left in ``--work``), each
configuration trains one epoch at a time and is scored on a seeded sample of the validation listeners
(nDCG@10, training items excluded) every ``--every`` epochs, until ``--budget`` minutes of training (or
``--max-epochs``). Implicit's ALS, the fastest competitor, is fitted and scored beside them as the peer.
Configurations run two at a time (one core each), so every per-epoch time is measured under the same
contention. Results: ``bench/results/profile.json`` and the "Scale: the hybrid's profile" table in
``docs/benchmarks.md``.

Examples
--------
``python -m benchmarks.profile --size S10 --budget 10``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale import features_folder, replace_section
from recsys.io import write_json, write_text

RESULTS = Path("bench/results/profile.json")
DOC = Path("docs/benchmarks.md")
COMMAND = "make bench-profile"
SECTION = "## Scale: the hybrid's profile for large catalogues"

CONFIGS: dict[str, dict[str, Any]] = {
    "artists: 128 comp., max_sampled 200, 20 tags": {"lightfm": {"members": 1}},
    "128 comp., max_sampled 30, 20 tags": {"lightfm": {"members": 1, "max_sampled": 30}},
    "64 comp., max_sampled 30, 20 tags": {"lightfm": {"members": 1, "no_components": 64, "max_sampled": 30}},
    "64 comp., max_sampled 30, 6 tags": {
        "lightfm": {"members": 1, "no_components": 64, "max_sampled": 30},
        "tags": 6,
    },
    "no features (LightFM-CF): 64 comp., max_sampled 30": {"lightfm": {"members": 1}, "cf": True},
}
"""Each configuration: overrides of ``train.lightfm`` (``cf``: the ``train.lightfm_cf`` section and no item
features instead), and ``tags``: the item's top tags kept (``features.tags.top_n``)."""


def sampled_rows(matrix: Any, users: int, seed: int = 0) -> Any:
    """``matrix`` with only a seeded sample of ``users`` non-empty rows kept (the others emptied)."""
    import scipy.sparse as sp

    rows = np.flatnonzero(np.diff(matrix.indptr))
    if len(rows) <= users:
        return matrix
    keep = np.zeros(matrix.shape[0], dtype=matrix.dtype)
    keep[np.random.default_rng(seed).choice(rows, size=users, replace=False)] = 1
    out = sp.csr_matrix(sp.diags(keep) @ matrix)
    out.eliminate_zeros()
    return out


def run_config(root: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration epoch by epoch; its curve of (epoch, training seconds, validation nDCG@10)."""
    from recsys import stages
    from recsys.config import load_params
    from recsys.models import LightFMRecommender
    from recsys.offline.tune import validation_scorer

    spec = CONFIGS[name]
    params = load_params(Path(root) / "params.yaml")
    loaded, features = stages.training_inputs(
        features_folder(Path(root), spec.get("tags")), Path(root) / "split"
    )
    valid = sampled_rows(loaded.valid, options["users"])
    score = validation_scorer(loaded.train, valid, "ndcg@10")
    section = params.train.lightfm_cf if spec.get("cf") else params.train.lightfm
    config = section.model_copy(update=spec["lightfm"])
    model = LightFMRecommender(config, params.seed, 1)
    item_features = None if spec.get("cf") else features.matrix
    curve = []
    while model.epochs_trained < options["max_epochs"] and model.train_seconds < options["budget"] * 60:
        model.fit_partial(loaded.train, options["every"], item_features=item_features)
        curve.append(
            {
                "epoch": model.epochs_trained,
                "train_seconds": round(model.train_seconds, 2),
                "ndcg@10": score(model),
            }
        )
        print(f"  {name}: epoch {model.epochs_trained} {curve[-1]['train_seconds']:.0f} s "
              f"nDCG@10 {curve[-1]['ndcg@10']:.4f}", flush=True)  # fmt: skip
    return {
        "name": name,
        "config": config.model_dump(),
        "nonzeros_per_item": None if item_features is None else item_features.nnz / item_features.shape[0],
        "seconds_per_epoch": model.seconds_per_epoch,
        "curve": curve,
    }


def run_als(root: str, options: dict[str, Any]) -> dict[str, Any]:
    """The peer: the configured implicit ALS fitted on the same training part, scored the same way."""
    from recsys import stages
    from recsys.config import load_params
    from recsys.offline.train import baselines
    from recsys.offline.tune import validation_scorer

    params = load_params(Path(root) / "params.yaml")
    loaded, _ = stages.training_inputs(Path(root) / "features", Path(root) / "split")
    model = next(candidate for candidate in baselines(params) if candidate.name == "als")
    start = time.perf_counter()
    model.fit(loaded.train)
    seconds = time.perf_counter() - start
    value = validation_scorer(loaded.train, sampled_rows(loaded.valid, options["users"]), "ndcg@10")(model)
    print(f"  als: {seconds:.0f} s nDCG@10 {value:.4f}", flush=True)
    return {"name": "implicit ALS (configured)", "fit_seconds": seconds, "ndcg@10": value}


def _job(args: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    root, name, options = args
    return run_als(root, options) if name == "als" else run_config(root, name, options)


def best_within(curve: list[dict[str, Any]], seconds: float) -> float | None:
    """The best validation nDCG@10 reached within ``seconds`` of training (None: no point that early)."""
    values = [point["ndcg@10"] for point in curve if point["train_seconds"] <= seconds]
    return max(values) if values else None


def table(sizes: dict[str, dict[str, Any]]) -> str:
    """The doc section: per size, one row per configuration, the best score within equal training budgets."""
    lines = [
        SECTION,
        "",
        f"Command: `{COMMAND}`; validation nDCG@10 on sampled listeners, training items excluded; "
        "configurations two at a time, one core each. The best score reached within each training budget "
        "(minutes of training at that size), and the best score of the curve with its epoch:",
    ]
    for size, payload in sizes.items():
        lines += _size_rows(size, payload)
    return "\n".join(lines) + "\n"


def _size_rows(size: str, payload: dict[str, Any]) -> list[str]:
    budgets = payload["budgets_minutes"]
    lines = [
        "",
        f"{size} (`python -m benchmarks.profile {payload['args']}`, {payload['machine']}, "
        f"{payload['users']:,} listeners sampled):",
        "",
        "| configuration | feature nonzeros / item | s / epoch | "
        + " | ".join(f"best in {b:g} min" for b in budgets)
        + " | best (epoch) |",
        "| --- | --- | --- | " + " | ".join("---" for _ in budgets) + " | --- |",
    ]
    for row in payload["configs"]:
        best = max(row["curve"], key=lambda point: point["ndcg@10"])
        cells = [best_within(row["curve"], b * 60) for b in budgets]
        nnz = "-" if row["nonzeros_per_item"] is None else f"{row['nonzeros_per_item']:.1f}"
        lines.append(
            f"| {row['name']} | {nnz} | {row['seconds_per_epoch']:.1f} | "
            + " | ".join("-" if c is None else f"{c:.4f}" for c in cells)
            + f" | {best['ndcg@10']:.4f} ({best['epoch']}) |"
        )
    als = payload["als"]
    lines.append(f"| {als['name']} | - | fit {als['fit_seconds']:.0f} s | " + " | ".join(
        f"{als['ndcg@10']:.4f}" if als["fit_seconds"] <= b * 60 else "-" for b in budgets
    ) + f" | {als['ndcg@10']:.4f} |")  # fmt: skip
    return lines


def saved_sizes() -> dict[str, dict[str, Any]]:
    """The results of every size profiled so far (a single-size file of the first version is read too)."""
    if not RESULTS.exists():
        return {}
    saved = json.loads(RESULTS.read_text(encoding="utf-8"))
    return saved["sizes"] if "sizes" in saved else {saved["size"]: saved}


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.profile [--size S10] [--budget 10] [--every 5]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="S10")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "recsys-scale"))
    parser.add_argument("--budget", type=float, default=10, help="training minutes per configuration")
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="epochs between validation scores")
    parser.add_argument("--users", type=int, default=5000, help="validation listeners sampled")
    parser.add_argument("--configs", default="", help="comma-separated indexes into CONFIGS (default: all)")
    args = parser.parse_args(argv)
    root = Path(args.work) / args.size
    if not (root / "split").exists():
        raise SystemExit(
            f"{root}: no split; run `make bench-scale` (or benchmarks.scale --sizes {args.size}) first"
        )
    names = list(CONFIGS)
    if args.configs:
        names = [names[int(index)] for index in args.configs.split(",")]
    options = {"budget": args.budget, "max_epochs": args.max_epochs, "every": args.every, "users": args.users}
    for tags in {CONFIGS[name].get("tags") for name in names}:
        features_folder(root, tags)  # once, before the workers race for it
    jobs = [(str(root), name, options) for name in ["als", *names]]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_job, jobs, chunksize=1)
    sizes = saved_sizes()
    sizes[args.size] = {
        "args": " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores",
        "users": args.users,
        "budgets_minutes": sorted({2, 5, args.budget}),
        "als": results[0],
        "configs": results[1:],
    }
    write_json(RESULTS, {"command": COMMAND, "sizes": sizes})
    write_text(DOC, replace_section(DOC.read_text(encoding="utf-8"), SECTION, table(sizes)))
    print(table(sizes))


if __name__ == "__main__":
    main()
