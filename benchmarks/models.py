"""``make bench``: training, evaluation and top-k speed on the real data, beside their floors.

Each figure is measured in the same run as its floor (a raw numpy product for scoring) so the ratio is
meaningful on any machine. Results go to ``bench/results/models.json`` and ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from recsys import paths, stages
from recsys.config import Params, data_dir_from_env, load_params
from recsys.io import write_json, write_text
from recsys.models import LightFMRecommender
from recsys.offline.evaluation import evaluate

RESULTS = Path("bench/results/models.json")
DOC = Path("docs/benchmarks.md")
COMMAND = "make bench-models"


def _best_of(repeats: int, action: Callable[[], object]) -> float:
    """Fastest of ``repeats`` wall-clock timings of ``action`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def _inputs(params: Params) -> tuple[Any, Any]:
    """The split and features of this workspace, or freshly made from RECSYS_DATA_DIR."""
    if (paths.SPLIT_DIR / "train.npz").exists() and (paths.FEATURES_DIR / "item_features.npz").exists():
        return stages.training_inputs(paths.FEATURES_DIR, paths.SPLIT_DIR)
    local = data_dir_from_env()
    if local is None:
        raise SystemExit("make bench needs the pipeline outputs (make run) or RECSYS_DATA_DIR")
    root = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    stages.prepare(params, local, root / "prepared")
    stages.features(params, root / "prepared", root / "features")
    stages.split(params, root / "prepared", root / "split")
    return stages.training_inputs(root / "features", root / "split")


def epoch_seconds(params: Params, train: Any, features: Any, epochs: int = 5) -> dict[str, float]:
    """Seconds per LightFM epoch, with and without item features (``train.num_threads`` threads)."""
    out = {}
    for name, matrix in (("hybrid", features), ("cf", None)):
        config = params.train.lightfm.model_copy(update={"epochs": epochs})
        model = LightFMRecommender(config, seed=params.seed, num_threads=params.train.num_threads)
        model.fit(train, matrix)
        out[f"{name}_seconds_per_epoch"] = round(model.seconds_per_epoch, 4)
    return out


def scoring(model: LightFMRecommender, exclude: Any, k: int = 10, users: int = 2000) -> dict[str, float]:
    """Top-k microseconds per user (single-user requests and 512-user batches) beside the numpy floor."""
    scorer = model.scorer()
    rng = np.random.default_rng(0)
    picks = rng.integers(0, scorer.n_users, size=users)
    items_t = np.ascontiguousarray(scorer.item_vectors.T)

    def single() -> None:
        for user in picks:
            scorer.top_k(np.array([user]), k, exclude)

    def floor() -> None:
        for user in picks:
            scorer.user_vectors[user] @ items_t

    batch = np.arange(min(512, scorer.n_users))
    single_s = _best_of(3, single)
    floor_s = _best_of(3, floor)
    batch_s = _best_of(3, lambda: scorer.top_k(batch, k, exclude))
    return {
        "topk_us_per_user_single": round(1e6 * single_s / users, 1),
        "numpy_product_floor_us_per_user": round(1e6 * floor_s / users, 1),
        "single_over_floor": round(single_s / floor_s, 2),
        "topk_us_per_user_batch512": round(1e6 * batch_s / len(batch), 1),
        "n_items": scorer.n_items,
        "dimensions": int(scorer.item_vectors.shape[1]),
    }


def run(params: Params) -> dict[str, Any]:
    """Every measurement; returns the results dict."""
    loaded, features = _inputs(params)
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {platform.python_version()}"}
    results |= epoch_seconds(params, loaded.train_full, features.matrix)
    model = LightFMRecommender(params.train.lightfm.model_copy(update={"epochs": 10}), seed=params.seed)
    model.fit(loaded.train_full, features.matrix)
    results["full_evaluation_seconds"] = round(
        _best_of(2, lambda: evaluate(model.score, loaded.train_full, loaded.test, params.evaluate)), 3
    )
    results["evaluated_users"] = int(loaded.train_full.shape[0])
    # One BLAS thread, as the service runs: for a single user's product, threads only add overhead.
    with threadpool_limits(limits=1):
        results |= scoring(model, loaded.train_full)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The models section of docs/benchmarks.md."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in results.items())
    return (
        "## Models: training, evaluation, top-k\n\n"
        f"Command: `{COMMAND}` (writes `{RESULTS}`; `make bench` runs it and the two benchmarks below). "
        "Real Last.fm data, `params.yaml` settings.\n\n"
        "| measure | value |\n| --- | --- |\n" + rows + "\n"
    )


def update_doc(section: str, doc: Path = DOC) -> None:
    """Replace (or add) the models section of the benchmarks document, keeping other sections."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n\n"
    head = "## Models: training, evaluation, top-k"
    if head in text:
        before, _, after = text.partition(head)
        rest = after.split("\n## ", 1)
        text = before + section + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text(doc, text)


def main() -> None:
    results = run(load_params())
    write_json(RESULTS, results)
    update_doc(markdown(results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
