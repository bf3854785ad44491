"""The retraining flow: new listener feedback -> merged training data -> challenger -> gate -> champion.

Run it with ``python -m flows.retraining`` from the project root, or on a schedule (nightly) through a
deployment. Under the training run lock (:func:`flows.dvc.run_lock`, so it never overlaps a training
run) it:

1. exports the feedback events stored after ``data/feedback/cursor.json`` and reads the ``delete_user``
   audit records the cursor has not honoured yet (neither: returns ``"no new feedback"`` and changes
   nothing);
2. honours those erasures (:mod:`recsys.loop.erasure`): purges the erased users' rows from every
   ``data/feedback/events-*.parquet`` and drops their events from this export. When none of them is a user
   of the champion and no event is left, it records the erasures in the cursor and stops there;
3. writes the events to ``data/feedback/events-<cursor>.parquet``, a data version of its own: in a DVC
   project it is ``dvc add``-ed (:func:`track_with_dvc`; commit the ``.dvc`` file, which ``.gitignore``
   lets through), and a file purged for an erasure is re-added and its older version, the erased user's
   rows included, deleted from the DVC cache (:func:`drop_from_dvc_cache`);
4. holds out each user's latest events (``retrain.feedback_holdout_fraction``) as the recent-feedback test,
   and drops events on pairs of the fixed test split or on cold-start items (they would leak the test);
5. merges the rest, together with every event of the earlier exports (their holdouts and the events
   of runs whose challenger was refused included), into the split's own listens (``train + valid`` of
   ``data/split``, aligned with the champion's users) with :func:`recsys.loop.retrain.merge_feedback`: the
   training data is rebuilt from the events each run, so each event counts once and none is lost;
   erased users' events are gone from the files, so their feedback-derived pairs go too (rows of
   listeners known only through feedback become empty, and their id is replaced);
6. retrains: a warm start of the champion when no user is new and nobody was erased, else a full fit with
   its settings;
7. evaluates challenger and champion on the fixed test split and on the held-out likes
   (``feedback_hit_rate@k``), gates with :func:`recsys.offline.gate.decide_feedback` (not worse beyond
   tolerance), and on a pass packages and promotes the challenger, then asks the service to reload
   (``POST {service_url}/admin/reload``). A challenger that honours an erasure is promoted whatever the
   gate says (:func:`recsys.loop.erasure.honour_erasure`), and every older model version is then deleted
   from the store (they may hold the erased feedback; a rollback would bring it back);
8. advances the cursor (and its count of honoured erasures), only once all of that succeeded: a failed run
   is simply retried on the same events and erasures.

Wiring only: steps 4-7 are :func:`recsys.loop.challenger.retrain_on_feedback` and
:func:`recsys.registry.package_project`; the export files and cursor :mod:`recsys.loop.exports`; DVC
:mod:`flows.dvc`.
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
from recsys.config import load_params
from recsys.errors import RecsysError
from recsys.io import write_parquet
from recsys.loop import exports
from recsys.loop.challenger import retrain_on_feedback
from recsys.loop.erasure import (
    PendingErasures,
    erased_users,
    honour_erasure,
    pending_erasures,
    purge_event_files,
    without_erased_events,
)
from recsys.loop.exports import CURSOR_FILE, FeedbackCursor
from recsys.loop.feedback import feedback_url as default_feedback_url
from recsys.offline.split import load_split, save_split
from recsys.paths import FEEDBACK_DIR, HYBRID, PARAMS_FILE, SPLIT_DIR, model_file

NO_NEW_FEEDBACK = "no new feedback"
ERASURES_ONLY = "erasures recorded; nothing to retrain"
RELOAD_TIMEOUT_S = 30.0


@task(name="export-feedback", cache_policy=NO_CACHE)
def export_feedback(feedback_url: str, since: int) -> tuple[pd.DataFrame, int]:
    """Every event stored after cursor ``since`` and the cursor after the last of them."""
    from recsys.loop.feedback import EXPORT_CURSOR_ATTR, FeedbackStore

    with FeedbackStore(feedback_url, create=False) as store:
        frame = store.export_frame(since)
    return frame, int(frame.attrs[EXPORT_CURSOR_ATTR])


@task(name="track-with-dvc", cache_policy=NO_CACHE)
def track_with_dvc(root: str, files: list[str]) -> list[str]:
    """``dvc add`` the feedback ``files``: each export a data version (:func:`flows.dvc.track_with_dvc`)."""
    return dvc.track_with_dvc(root, files)


@task(name="drop-erased-from-dvc-cache", cache_policy=NO_CACHE)
def drop_from_dvc_cache(root: str, hashes: list[str]) -> list[str]:
    """Delete cached exports from before an erasure's purge (:func:`flows.dvc.drop_from_dvc_cache`)."""
    return dvc.drop_from_dvc_cache(root, hashes)


@task(name="load-feedback-history", cache_policy=NO_CACHE)
def load_history(root: str, current: Path | None) -> pd.DataFrame:
    """Every event of the earlier exports (``events-*.parquet`` other than ``current``), oldest first."""
    return exports.load_history(Path(root) / FEEDBACK_DIR, current)


@task(name="read-erasures", cache_policy=NO_CACHE)
def read_erasures(feedback_url: str, applied: int) -> PendingErasures:
    """The ``delete_user`` audit records after the first ``applied`` (the cursor's ``erasures_applied``)."""
    from recsys.loop.feedback import FeedbackStore

    with FeedbackStore(feedback_url, create=False) as store:
        return pending_erasures(store.audit_log(), applied, store.pseudonym_salt())


@task(name="purge-exported-feedback", cache_policy=NO_CACHE)
def purge_exported_feedback(root: str, pseudonyms: frozenset[str], salt: str | None) -> dict[str, int]:
    """Remove the erased users' rows from every exported events file; ``file name -> rows removed``."""
    return purge_event_files(Path(root) / FEEDBACK_DIR, pseudonyms, salt)


@task(name="erased-in-champion", cache_policy=NO_CACHE)
def erased_in_champion(pseudonyms: frozenset[str], salt: str | None, dataset: str | None = None) -> int:
    """How many of the data set's champion's users are erased (0 without a champion)."""
    from recsys import registry

    if not pseudonyms or registry.champion(dataset=dataset) is None:
        return 0
    return len(erased_users(registry.load_artifact("champion", dataset=dataset).user_ids, pseudonyms, salt))


@task(name="retrain-and-evaluate", cache_policy=NO_CACHE)
def retrain_and_evaluate(
    root: str,
    events: pd.DataFrame,
    erased: frozenset[str] = frozenset(),
    salt: str | None = None,
    history: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Load the champion and the project's split; :func:`recsys.loop.challenger.retrain_on_feedback`."""
    from recsys import registry

    project = Path(root)
    params = load_params(project / PARAMS_FILE)
    artifact = registry.load_artifact("champion", dataset=params.dataset.name)
    split = load_split(project / SPLIT_DIR)
    return retrain_on_feedback(artifact, split, events, params, erased, salt, history)


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(root: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Gate the challenger against the re-measured champion; on a win package and promote it."""
    from recsys import registry
    from recsys.offline import gate as gating

    project = Path(root)
    params = load_params(project / PARAMS_FILE)
    gated = gating.decide_feedback(outcome["challenger"], outcome["champion"], params.gate)
    decision = honour_erasure(gated, outcome.get("erased_users", 0))
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
        )
    registry.promote(tag)
    deleted = registry.delete_versions_except(tag) if outcome.get("erased_users", 0) else []
    return result | {"model_tag": tag, "versions_deleted_for_erasure": deleted}


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
        ``{"status", "cursor"}`` when there is neither new feedback nor a new erasure. After a retraining
        also ``events``, ``events_file``, ``merge``, ``warm_start``, ``challenger``/``champion`` metrics,
        ``promote``, ``reasons``, ``model_tag``, ``erasure_override``, ``reloaded``, ``seconds``. Whenever
        erasures were honoured also ``erasures`` (audit records), ``erased_users`` (users of the champion
        reset), ``purged_rows`` (rows removed from exported files), ``purged_files``, ``erased_events``
        (rows dropped from this export), ``dvc_files`` (``.dvc`` files written) and ``dvc_cache_dropped``
        (DVC cache objects of the files before the purge, deleted: :func:`drop_from_dvc_cache`).
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    url = feedback_url or default_feedback_url(root)
    with dvc.run_lock(root, lock_timeout_s):
        cursor = FeedbackCursor.load(root / CURSOR_FILE)
        events, position = export_feedback(url, cursor.position)
        # Read after the export: an erasure made before it is then honoured by this very run.
        pending = read_erasures(url, cursor.erasures_applied)
        if events.empty and not pending:
            logger.info("no feedback after cursor %d and no new erasure: nothing to do", cursor.position)
            return {"status": NO_NEW_FEEDBACK, "cursor": cursor.position}
        erasure = _honour_erasures(root, pending, events)
        events = erasure.pop("events")
        if events.empty and not erasure["erased_users"]:
            cursor.advanced(position, 0, "", **_cursor_erasures(pending, erasure)).save(root / CURSOR_FILE)
            logger.info("recorded %d erasures; none touches the champion", pending.n_records)
            return {"status": ERASURES_ONLY, "cursor": position, "events": 0} | erasure
        path = exports.events_file(root / FEEDBACK_DIR, position) if not events.empty else None
        if path is not None:
            write_parquet(path, events)
            erasure["dvc_files"] += track_with_dvc(str(root), [str(path.relative_to(root))])
        history = load_history(str(root), path)
        outcome = retrain_and_evaluate(str(root), events, pending.pseudonyms, pending.salt, history)
        decision = gate_and_promote(str(root), outcome)
        reloaded = None
        if decision["promote"] and service_url:
            reloaded = reload_service(service_url, admin_token)
        relative = str(path.relative_to(root)) if path is not None else ""
        advanced = cursor.advanced(position, len(events), relative, **_cursor_erasures(pending, erasure))
        advanced.save(root / CURSOR_FILE)
    summary = {
        "status": "promoted" if decision["promote"] else "kept the champion",
        "cursor": position,
        "events": len(events),
        "events_file": str(path) if path is not None else None,
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
        "versions_deleted_for_erasure": decision.get("versions_deleted_for_erasure", []),
        "reloaded": reloaded,
        "seconds": round(time.perf_counter() - start, 1),
    } | erasure
    logger.info(
        "retraining: %s on %d events, %d erased users; champion %s",
        summary["status"],
        len(events),
        summary["erased_users"],
        summary["model_tag"],
    )
    return summary


def _honour_erasures(root: Path, pending: PendingErasures, events: pd.DataFrame) -> dict[str, Any]:
    """Purge exported files and this export of the pending erasures; count the champion's erased users.

    Returns ``{"events": the export without erased users, "erasures", "erased_users", "purged_rows",
    "purged_files", "erased_events"}`` (all counts 0 without pending erasures).
    """
    if not pending:
        nothing = {"erasures": 0, "erased_users": 0, "purged_rows": 0, "purged_files": {}, "erased_events": 0}
        return {"events": events, "dvc_files": [], "dvc_cache_dropped": []} | nothing
    purged = purge_exported_feedback(str(root), pending.pseudonyms, pending.salt)
    kept, n_dropped = without_erased_events(events, pending.pseudonyms, pending.salt)
    rewritten = [str(FEEDBACK_DIR / name) for name, n in purged.items() if n]
    unpurged = dvc.dvc_versions(root, rewritten)  # read before the re-add moves the .dvc files on
    dvc_files = track_with_dvc(str(root), rewritten)
    return {
        "events": kept,
        "erasures": pending.n_records,
        "erased_users": erased_in_champion(
            pending.pseudonyms, pending.salt, load_params(root / PARAMS_FILE).dataset.name
        ),
        "purged_rows": sum(purged.values()),
        "purged_files": {name: n for name, n in purged.items() if n},
        "erased_events": n_dropped,
        "dvc_files": dvc_files,
        "dvc_cache_dropped": drop_from_dvc_cache(str(root), unpurged),
    }


def _cursor_erasures(pending: PendingErasures, erasure: dict[str, Any]) -> dict[str, int]:
    return {
        "erasures_applied": pending.total,
        "erased_users": int(erasure["erased_users"]),
        "purged_rows": int(erasure["purged_rows"]),
    }


if __name__ == "__main__":
    retraining_flow()
