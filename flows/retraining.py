"""The retraining flow: new listener feedback -> merged training data -> challenger -> gate -> champion; and
the runner of pending erasure jobs.

Run it with ``python -m flows.retraining`` from the project root, or on a schedule (nightly) through a
deployment. Under the project's run lock (:func:`flows.dvc.run_lock`: training, retraining and every
promotion take it, so none overlaps another) it:

1. drops what a run that failed before advancing the cursor left (``events-<p>.parquet`` beyond the
   cursor and its ``.dvc`` file): those events are exported again now, and must not count twice;
2. exports the feedback events stored after ``data/feedback/cursor.json`` and reads the pending erasure jobs
   (neither: returns ``"no new feedback"`` and changes nothing);
3. runs the erasure jobs' first steps (:mod:`flows.erasure`): rows left in the store, exported files, DVC
   cache and remotes; drops the erased listeners' events from this export, and events already in an
   earlier export (the same listener's ``event_id``);
4. writes the events to ``data/feedback/events-<cursor>.parquet``, a data version of its own (``dvc add``);
5. when there are events, or the champion holds an erased listener's feedback: holds out each user's
   latest events, merges the rest with every earlier export into the split's own listens, retrains
   (from scratch when the champion knows an erased listener), gates, and on a pass packages the challenger
   with the record of whose feedback it trained on and promotes it; a challenger that honours an erasure
   is promoted whatever the gate says (:func:`recsys.feedback.erasure_steps.honour_erasure`); a promotion is
   published (exported into the model exchange on several hosts, and announced in the feedback database):
   every replica on every host loads the new champion within about a second, without a call to each;
6. revokes and deletes every other model version holding an erased listener's feedback, asks the service
   to reload when ``service_url`` is given (``POST {service_url}/admin/reload``: not needed since the
   announcement; services also learn of revocations from the store), and
   marks done the erasure jobs whose listener is found nowhere any more;
7. advances the cursor, only once all of that succeeded: a failed run is simply run again, and each step
   finds what is left to do.

Wiring only: the ML steps are :func:`recsys.retraining.challenger.retrain_on_feedback` and
:func:`recsys.registry.package_project`; the export files and cursor :mod:`recsys.feedback.exports`; the
erasure steps :mod:`flows.erasure`; DVC :mod:`flows.dvc`; calls to the service :mod:`flows.service`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import dvc
from flows.erasure import (
    drop_versions,
    erase_in_dvc,
    erase_in_exports,
    erase_in_store,
    read_erasures,
    verify_erasures,
    versions_holding,
)
from flows.service import publish, reload_service
from recsys.config import load_params
from recsys.feedback import exports
from recsys.feedback.erasure_steps import EVENTS_GLOB, ErasureBatch, honour_erasure, without_erased_events
from recsys.feedback.exports import CURSOR_FILE, FeedbackCursor
from recsys.feedback.store import feedback_url as default_feedback_url
from recsys.io import write_parquet
from recsys.offline.split import load_split, save_split
from recsys.paths import FEEDBACK_DIR, PARAMS_FILE, SPLIT_DIR, model_file
from recsys.retraining.challenger import retrain_on_feedback
from recsys.specs import HYBRID

NO_NEW_FEEDBACK = "no new feedback"
NO_ERASURES = ErasureBatch()
ERASURES_ONLY = "erasures recorded; nothing to retrain"


@task(name="export-feedback", cache_policy=NO_CACHE)
def export_feedback(feedback_url: str, since: int) -> tuple[pd.DataFrame, int]:
    """Every event stored after cursor ``since`` and the cursor after the last of them."""
    from recsys.feedback.store import EXPORT_CURSOR_ATTR, FeedbackStore

    with FeedbackStore(feedback_url, create=False) as store:
        frame = store.export_frame(since)
    return frame, int(frame.attrs[EXPORT_CURSOR_ATTR])


@task(name="discard-unfinished-exports", cache_policy=NO_CACHE)
def discard_unfinished_exports(root: str, position: int) -> list[str]:
    """Delete the exports a failed run wrote beyond cursor ``position`` (and their ``.dvc`` files); returns
    their names. Their events are exported again by this run: kept, they would count twice and their
    holdout would be trained on."""
    folder = Path(root) / FEEDBACK_DIR
    unfinished = [path for path in folder.glob(EVENTS_GLOB) if exports.export_position(path) > position]
    for path in unfinished:
        dvc.untrack(Path(root), str(path.relative_to(root)))
    return sorted(path.name for path in unfinished)


@task(name="track-with-dvc", cache_policy=NO_CACHE)
def track_with_dvc(root: str, files: list[str]) -> list[str]:
    """``dvc add`` the feedback ``files`` (:func:`flows.dvc.track_with_dvc`)."""
    return dvc.track_with_dvc(root, files)


@task(name="load-feedback-history", cache_policy=NO_CACHE)
def load_history(root: str) -> pd.DataFrame:
    """Every event of the earlier exports (``events-*.parquet``), oldest first, each ``event_id`` once."""
    return exports.load_history(Path(root) / FEEDBACK_DIR)


@task(name="retrain-and-evaluate", cache_policy=NO_CACHE)
def retrain_and_evaluate(
    root: str,
    events: pd.DataFrame,
    batch: ErasureBatch = NO_ERASURES,
    history: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Load the champion and the project's split; :func:`recsys.retraining.challenger.retrain_on_feedback`."""
    from recsys import registry

    project = Path(root)
    params = load_params(project / PARAMS_FILE)
    artifact = registry.load_artifact("champion", dataset=params.dataset.name)
    split = load_split(project / SPLIT_DIR)
    return retrain_on_feedback(artifact, split, events, params, batch.pseudonyms, batch.salt, history)


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(root: str, outcome: dict[str, Any], erased: int = 0) -> dict[str, Any]:
    """Gate the challenger against the re-measured champion; on a win (or when the champion holds the
    feedback of ``erased`` erased listeners) package the challenger and promote it."""
    from recsys import registry
    from recsys.offline import gate as gating

    project = Path(root)
    params = load_params(project / PARAMS_FILE)
    gated = gating.decide_feedback(outcome["challenger"], outcome["champion"], params.gate)
    decision = honour_erasure(gated, erased)
    create_markdown_artifact(gating.render_markdown(decision), key="retraining-gate", description="Gate")
    result = decision.to_dict() | {
        "model_tag": outcome["champion_tag"],
        "erasure_override": decision.promote and not gated.promote,
    }
    if not decision.promote:
        return result
    with tempfile.TemporaryDirectory(prefix="recsys-retrain-") as staging:
        models, split_dir = Path(staging) / "models", Path(staging) / "split"
        outcome["challenger_model"].save(model_file(HYBRID, models))
        save_split(outcome["split"], split_dir)
        tag = registry.package_project(
            project,
            outcome["challenger"],
            params.model_dump(mode="json"),
            models_dir=models,
            split_dir=split_dir,
            feedback_users=outcome["feedback_users"],
        )
    registry.promote(tag)
    return result | {"model_tag": tag}


@flow(name="retraining")
def retraining_flow(
    project_dir: str = ".",
    feedback_url: str | None = None,
    service_url: str | None = None,
    admin_token_block: str | None = None,
    lock_timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Retrain the champion on the feedback stored since the last run, and run the pending erasure jobs
    (steps in the module docstring).

    Parameters
    ----------
    project_dir : str
        Root: ``params.yaml``, ``data/split``, ``data/features``, ``data/prepared``, ``data/feedback``.
    feedback_url : str, optional
        The feedback store; default ``$RECSYS_FEEDBACK_URL``, else ``sqlite:///data/feedback/feedback.db``
        (relative to ``project_dir``).
    service_url : str, optional
        When given, a promotion is followed by ``POST /admin/reload``.
    admin_token_block : str, optional
        The name of a Prefect ``Secret`` block holding the admin token for that call; without it the token
        is ``$RECSYS_ADMIN_TOKEN`` (:mod:`flows.service`). Never the token itself: Prefect stores parameters.
    lock_timeout_s : float
        How long to wait for another run to release the project's lock.

    Returns
    -------
    dict
        ``{"status", "cursor"}`` when there is neither new feedback nor a pending erasure. Otherwise also
        ``events``, ``events_file``, ``dvc_files`` (its ``.dvc`` file), ``discarded_exports``,
        ``duplicate_events``; after a retraining
        ``merge``, ``n_holdout_events``, ``warm_start``, ``challenger``/``champion`` metrics, ``promote``,
        ``reasons``, ``model_tag``, ``erasure_override``, ``reloaded``; whenever erasure jobs ran ``erasures``
        (jobs), ``erased_users`` (erased listeners whose feedback the champion held), ``erased_events``
        (rows dropped from this export), ``erasure`` (each step's outcome: ``store``, ``exports``, ``dvc``,
        ``models``, ``verify``: the jobs done and those still pending with where their listener was found).
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    url = feedback_url or default_feedback_url(root)
    dataset = load_params(root / PARAMS_FILE).dataset.name
    with dvc.run_lock(root, lock_timeout_s):
        cursor = FeedbackCursor.load(root / CURSOR_FILE)
        discarded = discard_unfinished_exports(str(root), cursor.position)
        events, position = export_feedback(url, cursor.position)
        # Read after the export: an erasure made before it is then honoured by this very run.
        batch = read_erasures(url)
        if events.empty and not batch:
            logger.info("no feedback after cursor %d and no pending erasure: nothing to do", cursor.position)
            return {"status": NO_NEW_FEEDBACK, "cursor": cursor.position}
        steps = _first_erasure_steps(url, str(root), batch)
        events, n_erased = without_erased_events(events, batch.pseudonyms, batch.salt)
        history: pd.DataFrame = load_history(str(root))
        known = exports.known_events(events, history)
        events = events[~known]
        holding = versions_holding(batch) if batch else {}
        champion = _champion_tag(dataset)
        erased = len(holding.get(champion, [])) if champion else 0
        path = exports.events_file(root / FEEDBACK_DIR, position) if not events.empty else None
        outcome: dict[str, Any] = {}
        decision: dict[str, Any] = {"promote": False}
        dvc_files: list[str] = []
        if path is not None:
            write_parquet(path, events)
            dvc_files = track_with_dvc(str(root), [str(path.relative_to(root))])
        if path is not None or erased:
            outcome = retrain_and_evaluate(str(root), events, batch, history)
            decision = gate_and_promote(str(root), outcome, erased)
        published = publish(decision["model_tag"], url, dataset) if decision["promote"] else None
        if batch:
            steps["models"] = drop_versions(url, batch, versions_holding(batch))
        reloaded = (
            reload_service(service_url, admin_token_block) if decision["promote"] and service_url else None
        )
        if batch:
            steps["verify"] = verify_erasures(url, str(root), batch)
        relative = str(path.relative_to(root)) if path is not None else ""
        erasures = {
            "erasure_jobs": len(batch.jobs),
            "erasures_done": len(steps.get("verify", {}).get("done", [])),
        }
        cursor.advanced(position, len(events), relative, **erasures).save(root / CURSOR_FILE)
    summary: dict[str, Any] = {
        "status": _status(outcome, decision),
        "cursor": position,
        "events": len(events),
        "events_file": str(path) if path is not None else None,
        "dvc_files": dvc_files,
        "discarded_exports": discarded,
        "duplicate_events": int(known.sum()),
        "erasures": len(batch.jobs),
        "erased_users": erased,
        "erased_events": n_erased,
        "erasure": steps,
        "reloaded": reloaded,
        "published": published,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if outcome:
        summary |= _retraining_summary(outcome, decision)
    logger.info(
        "retraining: %s on %d events, %d erasure jobs (%d done); champion %s",
        summary["status"],
        len(events),
        len(batch.jobs),
        erasures["erasures_done"],
        summary.get("model_tag", champion),
    )
    return summary


def _first_erasure_steps(url: str, root: str, batch: ErasureBatch) -> dict[str, Any]:
    """The erasure steps before any model is touched: the store, the exported files, DVC."""
    if not batch:
        return {}
    return {
        "store": erase_in_store(url, batch),
        "exports": erase_in_exports(url, root, batch),
        "dvc": erase_in_dvc(url, root, batch),
    }


def _champion_tag(dataset: str) -> str | None:
    from recsys import registry

    info = registry.champion(dataset=dataset)
    return info.tag if info is not None else None


def _status(outcome: dict[str, Any], decision: dict[str, Any]) -> str:
    if not outcome:
        return ERASURES_ONLY
    return "promoted" if decision["promote"] else "kept the champion"


def _retraining_summary(outcome: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    return {
        "merge": outcome["merge"],
        "n_holdout_events": outcome["n_holdout_events"],
        "warm_start": outcome["warm_start"],
        "challenger": outcome["challenger"]["metrics"],
        "champion": outcome["champion"]["metrics"],
        "champion_tag": outcome["champion_tag"],
        "promote": decision["promote"],
        "reasons": decision["reasons"],
        "model_tag": decision["model_tag"],
        "erasure_override": decision["erasure_override"],
    }


if __name__ == "__main__":
    retraining_flow()
