"""The retraining flow: new listener feedback -> merged training data -> challenger -> gate -> champion.

Run it with ``python -m flows.retraining`` from the project root, or on a schedule (nightly) through a
deployment. Under the training run lock (:func:`flows.training.run_lock`, so it never overlaps a training
run) it:

1. exports the feedback events stored after ``data/feedback/cursor.json`` (none: returns
   ``"no new feedback"`` and changes nothing);
2. writes them to ``data/feedback/events-<cursor>.parquet``, a data version of its own. Tracking it with
   DVC is optional: ``dvc add data/feedback/events-<cursor>.parquet`` and commit the ``.dvc`` file;
3. holds out each user's latest events (``retrain.feedback_holdout_fraction``) as the recent-feedback test,
   and drops events on pairs of the fixed test split or on cold-start items (they would leak the test);
4. merges the rest into the champion's training data (its known listens without the test pairs and
   cold-start items of ``data/split``: ``train + valid`` for a champion of the training flow, the merged
   matrix for one of this flow) with :func:`recsys.retrain.merge_feedback`;
5. retrains: a warm start of the champion when no user is new, else a full fit with its settings;
6. evaluates challenger and champion on the fixed test split and on the held-out likes
   (``feedback_hit_rate@k``), gates with :func:`recsys.gate.decide`, and on a win packages and promotes
   the challenger, then asks the service to reload (``POST {service_url}/admin/reload``);
7. advances the cursor, only once all of that succeeded: a failed run is simply retried on the same events.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.training import CHALLENGER, run_lock
from recsys.config import Params, load_params
from recsys.errors import RecsysError
from recsys.io import write_parquet
from recsys.models import LightFMRecommender
from recsys.retrain import (
    CURSOR_FILE,
    FeedbackCursor,
    align_split,
    champion_training,
    extend_split,
    liked_hit_rate,
    merge_feedback,
    retrain,
    split_feedback_holdout,
    without_evaluation_pairs,
)
from recsys.split import Split, load_split, save_split

FEEDBACK_DIR = Path("data/feedback")
SPLIT_DIR = Path("data/split")
FEATURES_DIR = Path("data/features")
PREPARED_DIR = Path("data/prepared")
NO_NEW_FEEDBACK = "no new feedback"
FEEDBACK_URL_ENV = "RECSYS_FEEDBACK_URL"
DEFAULT_FEEDBACK_DB = FEEDBACK_DIR / "feedback.db"
RELOAD_TIMEOUT_S = 30.0


def events_file(root: Path, position: int) -> Path:
    """``data/feedback/events-<position>.parquet``: the events consumed up to store cursor ``position``."""
    return root / FEEDBACK_DIR / f"events-{position}.parquet"


@task(name="export-feedback", cache_policy=NO_CACHE)
def export_feedback(feedback_url: str, since: int) -> tuple[pd.DataFrame, int]:
    """Every event stored after cursor ``since`` and the cursor after the last of them."""
    from recsys.feedback import EXPORT_CURSOR_ATTR, FeedbackStore

    with FeedbackStore(feedback_url, create=False) as store:
        frame = store.export_frame(since)
    return frame, int(frame.attrs[EXPORT_CURSOR_ATTR])


def _aligned_split(root: Path, user_ids: list[str], item_ids: list[str], tag: str) -> Split:
    split = load_split(root / SPLIT_DIR)
    try:
        if split.item_ids != item_ids:
            raise ValueError("the items differ")
        return align_split(split, user_ids)
    except ValueError as exc:
        raise RecsysError(
            f"the champion {tag} was not trained on {root / SPLIT_DIR} ({exc}): "
            "run the training flow first, then retrain on feedback"
        ) from exc


def _candidate(
    model: LightFMRecommender,
    exclude: sp.csr_matrix,
    split: Split,
    holdout: pd.DataFrame,
    indexes: tuple[dict[str, int], dict[str, int]],
    params: Params,
) -> dict[str, Any]:
    """Gate input of one model: test-split metrics (overall and per group) plus the feedback hit rate."""
    from recsys.evaluation import evaluate
    from recsys.fairness import mainstreaminess, user_groups

    # The champion's users only (new listeners have no test items): both models are measured on the same
    # rows, groups and item popularity.
    n_users = len(indexes[0])
    test = split.test[:n_users]
    train = exclude[:n_users]
    groups = user_groups(mainstreaminess(train), params.evaluate.groups)
    result = evaluate(model.score, train, test, params.evaluate, user_groups=groups)
    hit_rate = liked_hit_rate(model.score, train, holdout, *indexes, k=params.evaluate.primary_k)
    return {"metrics": dict(result.metrics) | hit_rate, "groups": result.groups}


@task(name="retrain-and-evaluate", cache_policy=NO_CACHE)
def retrain_and_evaluate(root: str, events: pd.DataFrame) -> dict[str, Any]:
    """Merge, retrain and measure challenger and champion; nothing is written."""
    from recsys import registry

    project = Path(root)
    params = load_params(project / "params.yaml")
    artifact = registry.load_artifact("champion")
    split = _aligned_split(project, artifact.user_ids, artifact.item_ids, artifact.tag)
    rest, holdout = split_feedback_holdout(events, params.retrain.feedback_holdout_fraction, params.seed)
    trainable, n_protected = without_evaluation_pairs(rest, split)
    base = champion_training(artifact.known, split)
    merged, report = merge_feedback(base, trainable, artifact.user_index, artifact.item_index, params.retrain)
    challenger = retrain(artifact.model, merged, report.needs_full_retrain, params.retrain)
    extended = extend_split(split, merged, report.new_users)
    # Both models rank without every pair either of them trained on, so neither is credited for those.
    before = sp.vstack([base, sp.csr_matrix((len(report.new_users), merged.shape[1]))])
    exclude = sp.csr_matrix(((merged > 0) + (sp.csr_matrix(before) > 0)) > 0, dtype=np.float32)
    indexes = (artifact.user_index, artifact.item_index)
    return {
        "champion_tag": artifact.tag,
        "challenger_model": challenger,
        "split": extended,
        "merge": report.to_dict() | {"n_protected_events": n_protected},
        "n_holdout_events": len(holdout),
        "warm_start": not report.needs_full_retrain,
        "challenger": _candidate(challenger, exclude, extended, holdout, indexes, params),
        "champion": _candidate(artifact.model, exclude, extended, holdout, indexes, params),
    }


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(root: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Gate the challenger against the re-measured champion; on a win package and promote it."""
    from recsys import gate as gating
    from recsys import registry

    project = Path(root)
    params = load_params(project / "params.yaml")
    decision = gating.decide(outcome["challenger"], outcome["champion"], params.gate)
    create_markdown_artifact(gating.render_markdown(decision), key="retraining-gate", description="Gate")
    result = decision.to_dict() | {"model_tag": outcome["champion_tag"]}
    if not decision.promote:
        return result
    with tempfile.TemporaryDirectory(prefix="recsys-retrain-") as staging:
        models, split_dir = Path(staging) / "models", Path(staging) / "split"
        outcome["challenger_model"].save(models / f"{CHALLENGER}.npz")
        save_split(outcome["split"], split_dir)
        tag = registry.save_champion_candidate(
            models,
            project / FEATURES_DIR,
            split_dir,
            outcome["challenger"],
            params_dict=params.model_dump(mode="json"),
            dvc_lock_hash=registry.dvc_lock_hash(project / "dvc.lock"),
            git_commit=registry.git_commit(project),
            prepared_dir=project / PREPARED_DIR,
        )
    registry.promote(tag)
    return result | {"model_tag": tag}


@task(name="reload-service", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def reload_service(service_url: str, admin_token: str | None) -> int:
    """``POST {service_url}/admin/reload`` with the ``X-Admin-Token`` header; returns the HTTP status."""
    import httpx

    headers = {"X-Admin-Token": admin_token} if admin_token else {}
    response = httpx.post(
        f"{service_url.rstrip('/')}/admin/reload", headers=headers, timeout=RELOAD_TIMEOUT_S
    )
    if response.status_code >= 400:
        raise RecsysError(
            f"{service_url} refused the reload: HTTP {response.status_code} {response.text[:200]}"
        )
    return response.status_code


@flow(name="retraining")
def retraining_flow(
    project_dir: str = ".",
    feedback_url: str | None = None,
    service_url: str | None = None,
    admin_token: str | None = None,
    lock_timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Retrain the champion on the feedback stored since the last run (steps in the module docstring).

    Parameters
    ----------
    project_dir : str
        Root: ``params.yaml``, ``data/split``, ``data/features``, ``data/prepared``, ``data/feedback``.
    feedback_url : str, optional
        The feedback store; default ``$RECSYS_FEEDBACK_URL``, else ``sqlite:///data/feedback/feedback.db``
        (relative to ``project_dir``).
    service_url, admin_token : str, optional
        When ``service_url`` is given, a promotion is followed by ``POST /admin/reload``.
    lock_timeout_s : float
        How long to wait for a training run to release the project's lock.

    Returns
    -------
    dict
        ``{"status", "cursor", ...}``; with new feedback also ``events``, ``events_file``, ``merge``,
        ``warm_start``, ``challenger``/``champion`` metrics, ``promote``, ``reasons``, ``model_tag``,
        ``reloaded``, ``seconds``.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    url = feedback_url or os.environ.get(FEEDBACK_URL_ENV) or f"sqlite:///{root / DEFAULT_FEEDBACK_DB}"
    with run_lock(root, lock_timeout_s):
        cursor = FeedbackCursor.load(root / CURSOR_FILE)
        events, position = export_feedback(url, cursor.position)
        if events.empty:
            logger.info("no feedback after cursor %d: nothing to do", cursor.position)
            return {"status": NO_NEW_FEEDBACK, "cursor": cursor.position}
        path = events_file(root, position)
        write_parquet(path, events)
        outcome = retrain_and_evaluate(str(root), events)
        decision = gate_and_promote(str(root), outcome)
        reloaded = None
        if decision["promote"] and service_url:
            reloaded = reload_service(service_url, admin_token)
        cursor.advanced(position, len(events), str(path.relative_to(root))).save(root / CURSOR_FILE)
    summary = {
        "status": "promoted" if decision["promote"] else "kept the champion",
        "cursor": position,
        "events": len(events),
        "events_file": str(path),
        "merge": outcome["merge"],
        "n_holdout_events": outcome["n_holdout_events"],
        "warm_start": outcome["warm_start"],
        "challenger": outcome["challenger"]["metrics"],
        "champion": outcome["champion"]["metrics"],
        "champion_tag": outcome["champion_tag"],
        "promote": decision["promote"],
        "reasons": decision["reasons"],
        "model_tag": decision["model_tag"],
        "reloaded": reloaded,
        "seconds": round(time.perf_counter() - start, 1),
    }
    logger.info(
        "retraining: %s on %d events; champion %s", summary["status"], len(events), summary["model_tag"]
    )
    return summary


if __name__ == "__main__":
    retraining_flow()
