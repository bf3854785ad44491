"""The nightly feedback retraining at a generated size: a step of ``make bench-scale`` (``--only retrain``).

A project folder beside the size's data (``<size>/retrain``: ``params.yaml`` and ``data/{split,features,
prepared}`` linked to the size's own) gets a promoted champion packaged from ``models_dir`` and a SQLite
feedback store of ``events`` generated events (known listeners, items drawn by popularity; plays, likes,
skips and dislikes). Then the real retraining flow (:func:`flows.retraining.retraining_flow`, Prefect's
ephemeral server) runs once: export, merge, warm start, both models measured on the fixed test split and the
held-out feedback, gate, package, promote. Reported: the time to store the events, a dry export, and the
flow's wall time with its outcome.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

EVENT_MIX = {"play": 0.55, "like": 0.2, "skip": 0.2, "dislike": 0.05}
BATCH = 10_000


def _project(root: Path, options: dict[str, Any]) -> Path:
    """``<root>/retrain``: params with ``options["overrides"]`` (dotted keys) and links to the size's data."""
    from flows.dvc import apply_overrides
    from recsys.paths import FEATURES_DIR, PREPARED_DIR, SPLIT_DIR

    project = root / "retrain"
    if project.exists():
        shutil.rmtree(project)
    (project / "data").mkdir(parents=True)
    shutil.copyfile(root / "params.yaml", project / "params.yaml")
    apply_overrides(project / "params.yaml", options.get("overrides", {}))
    links = {SPLIT_DIR: "split", FEATURES_DIR: options.get("features", "features"), PREPARED_DIR: "prepared"}
    for target, name in links.items():
        (project / target).symlink_to(root / name, target_is_directory=True)
    return project


def synthetic_events(
    user_ids: list[str], item_ids: list[str], counts: np.ndarray, n: int, seed: int
) -> list[Any]:
    """``n`` feedback events of known listeners on items drawn in proportion to their listeners."""
    from recsys.feedback.events import FeedbackEvent

    rng = np.random.default_rng(seed)
    users = rng.integers(len(user_ids), size=n)
    items = rng.choice(len(item_ids), size=n, p=counts / counts.sum())
    kinds = rng.choice(list(EVENT_MIX), size=n, p=list(EVENT_MIX.values()))
    start = datetime(2026, 12, 1, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, size=n))
    return [
        FeedbackEvent(
            user_id=user_ids[u],
            item_id=item_ids[i],
            event=str(kind),
            timestamp=start + timedelta(seconds=int(s)),
            event_id=f"bench-{seed}-{row}",
        )
        for row, (u, i, kind, s) in enumerate(zip(users, items, kinds, seconds, strict=True))
    ]


def step_retrain(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Package a champion, store ``options["events"]`` events, run the retraining flow once (timed)."""
    os.environ["BENTOML_HOME"] = str(root / "bentoml-retrain")
    from flows.retraining import retraining_flow
    from recsys import registry
    from recsys.config import load_params
    from recsys.feedback.store import FeedbackStore, feedback_url
    from recsys.offline.split import load_split

    project = _project(root, options)
    shutil.rmtree(root / "bentoml-retrain", ignore_errors=True)
    tag = registry.save_candidate(
        root / options.get("models", "models"), project / "data/features", project / "data/split", {},
        params_dict=load_params(project / "params.yaml").model_dump(mode="json"), dvc_lock_hash="bench",
        git_commit="bench",
        prepared_dir=project / "data/prepared",
    )  # fmt: skip
    registry.promote(tag)
    split = load_split(project / "data/split")
    counts = np.asarray((split.train_full > 0).sum(axis=0)).ravel().astype(float) + 1e-9
    counts[split.cold_items] = 0.0
    events = synthetic_events(list(split.user_ids), list(split.item_ids), counts, options["events"], seed=0)
    url = feedback_url(project)
    began = time.perf_counter()
    with FeedbackStore(url) as store:
        for first in range(0, len(events), BATCH):
            store.add_events(events[first : first + BATCH])
    store_seconds = time.perf_counter() - began
    began = time.perf_counter()
    with FeedbackStore(url, create=False) as store:
        exported = len(store.export_frame(0))
    export_seconds = time.perf_counter() - began
    began = time.perf_counter()
    summary = retraining_flow(project_dir=str(project))
    flow_seconds = time.perf_counter() - began
    return {
        "events": options["events"],
        "store_seconds": store_seconds,
        "export_seconds": export_seconds,
        "exported": exported,
        "flow_seconds": flow_seconds,
        "status": summary["status"],
        "warm_start": summary["warm_start"],
        "warm_start_epochs": yaml.safe_load((project / "params.yaml").read_text())["retrain"][
            "warm_start_epochs"
        ],
        "merge": summary["merge"],
        "challenger_ndcg@10": summary["challenger"].get("ndcg@10"),
        "champion_ndcg@10": summary["champion"].get("ndcg@10"),
    }
