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
:mod:`recsys.retraining.promotion` (the gate, packaging from the objects in memory); the run's record
:class:`recsys.retraining.run.RetrainingRun`; the export files and cursor :mod:`recsys.feedback.exports`; the
erasure steps :mod:`flows.erasure`; DVC :mod:`flows.dvc`; calls to the service :mod:`flows.service`.
"""

from __future__ import annotations

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
from recsys.feedback.erasure_steps import EVENTS_GLOB, ErasureBatch, without_erased_events
from recsys.feedback.exports import CURSOR_FILE, FeedbackCursor
from recsys.feedback.store import feedback_url as default_feedback_url
from recsys.io import write_parquet
from recsys.offline.gate import render_markdown
from recsys.offline.split import load_split
from recsys.paths import FEEDBACK_DIR, PARAMS_FILE, SPLIT_DIR
from recsys.retraining.challenger import Retrained, retrain_on_feedback
from recsys.retraining.promotion import gate_retrained, promote_retrained
from recsys.retraining.run import NO_NEW_FEEDBACK, RetrainingRun

NO_ERASURES = ErasureBatch()


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
) -> Retrained:
    """Load the champion and the project's split; :func:`recsys.retraining.challenger.retrain_on_feedback`."""
    from recsys import registry

    project = Path(root)
    params = load_params(project / PARAMS_FILE)
    artifact = registry.load_artifact("champion", dataset=params.dataset.name)
    split = load_split(project / SPLIT_DIR)
    return retrain_on_feedback(artifact, split, events, params, batch.pseudonyms, batch.salt, history)


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(root: str, outcome: Retrained, erased: int = 0) -> dict[str, Any]:
    """Gate the challenger against the re-measured champion; on a win (or when the champion holds the
    feedback of ``erased`` erased listeners) package the challenger and promote it
    (:mod:`recsys.retraining.promotion`)."""
    project = Path(root)
    params = load_params(project / PARAMS_FILE)
    decision, override = gate_retrained(outcome, params, erased)
    create_markdown_artifact(render_markdown(decision), key="retraining-gate", description="Gate")
    result = decision.to_dict() | {"model_tag": outcome.champion_tag, "erasure_override": override}
    return result | {"model_tag": promote_retrained(project, outcome, params)} if decision.promote else result


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
        run = RetrainingRun(position, discarded_exports=discarded, erasures=len(batch.jobs))
        run.erasure = _first_erasure_steps(url, str(root), batch)
        events, history = _new_events(root, events, batch, run)
        holding = versions_holding(batch) if batch else {}
        champion = _champion_tag(dataset)
        run.erased_users = len(holding.get(champion, [])) if champion else 0
        path = _write_export(root, events, position, run)
        if path is not None or run.erased_users:
            run.retrained = retrain_and_evaluate(str(root), events, batch, history)
            run.decision = gate_and_promote(str(root), run.retrained, run.erased_users)
        run.published = publish(run.decision["model_tag"], url, dataset) if run.promoted else None
        if batch:
            run.erasure["models"] = drop_versions(url, batch, versions_holding(batch))
        run.reloaded = (
            reload_service(service_url, admin_token_block) if run.promoted and service_url else None
        )
        if batch:
            run.erasure["verify"] = verify_erasures(url, str(root), batch)
        relative = str(path.relative_to(root)) if path is not None else ""
        erasures = {"erasure_jobs": run.erasures, "erasures_done": run.erasures_done}
        cursor.advanced(position, run.events, relative, **erasures).save(root / CURSOR_FILE)
    summary = run.summary(time.perf_counter() - start)
    logger.info(
        "retraining: %s on %d events, %d erasure jobs (%d done); champion %s",
        run.status,
        run.events,
        run.erasures,
        run.erasures_done,
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


def _new_events(
    root: Path, events: pd.DataFrame, batch: ErasureBatch, run: RetrainingRun
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This export without the erased listeners' events and those an earlier export holds; and the earlier
    exports' events."""
    events, run.erased_events = without_erased_events(events, batch.pseudonyms, batch.salt)
    history: pd.DataFrame = load_history(str(root))
    known = exports.known_events(events, history)
    run.duplicate_events = int(known.sum())
    return events[~known], history


def _write_export(root: Path, events: pd.DataFrame, position: int, run: RetrainingRun) -> Path | None:
    """The new events as ``events-<position>.parquet``, tracked by DVC; None when there are none."""
    run.events = len(events)
    if events.empty:
        return None
    path = exports.events_file(root / FEEDBACK_DIR, position)
    write_parquet(path, events)
    run.events_file = str(path)
    run.dvc_files = track_with_dvc(str(root), [str(path.relative_to(root))])
    return path


def _champion_tag(dataset: str) -> str | None:
    from recsys import registry

    info = registry.champion(dataset=dataset)
    return info.tag if info is not None else None


if __name__ == "__main__":
    retraining_flow()
