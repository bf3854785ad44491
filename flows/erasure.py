"""The erasure steps the retraining flow runs for pending erasure jobs: each a task, recorded in the jobs.

Wiring only: what each step means is :mod:`recsys.feedback.erasure_steps`; the store's side
:mod:`recsys.feedback.erasure_jobs`; DVC :mod:`flows.dvc`; the model store :mod:`recsys.registry`. Every
step is idempotent (a rerun after a failure anywhere finishes the job), and :func:`verify_erasures` marks a
job done only when its listener is found in none of the places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import dvc
from recsys.errors import RecsysError
from recsys.feedback.erasure_steps import (
    ErasureBatch,
    erasure_batch,
    events_holding,
    held_by_model,
    objects_holding,
    purge_event_files,
)
from recsys.paths import FEEDBACK_DIR

REVOKED_REASON = "holds the feedback of an erased listener"


def _store(feedback_url: str) -> Any:
    from recsys.feedback.store import FeedbackStore

    # create: a store written before erasure jobs existed gets their table (and its older erasures a job).
    return FeedbackStore(feedback_url, create=True)


@task(name="read-erasure-jobs", cache_policy=NO_CACHE)
def read_erasures(feedback_url: str) -> ErasureBatch:
    """The pending erasure jobs, checked to share this flow's pseudonym salt (:func:`erasure_batch`)."""
    with _store(feedback_url) as store:
        return erasure_batch(store.erasure_jobs(), store.pseudonym_salt())


@task(name="erase-in-store", cache_policy=NO_CACHE)
def erase_in_store(feedback_url: str, batch: ErasureBatch) -> dict[str, Any]:
    """Delete the listeners' rows still in the store from before their erasure; compact the database."""
    with _store(feedback_url) as store:
        held = store.held_rows(batch.jobs, delete=True)
        outcome = {"rows_deleted": _total(held)} | store.compact()
        store.record_erasure_step(batch.jobs, "store", outcome)
    return outcome


@task(name="erase-in-exports", cache_policy=NO_CACHE)
def erase_in_exports(feedback_url: str, root: str, batch: ErasureBatch) -> dict[str, Any]:
    """Purge the listeners' rows from every exported events file."""
    purged = purge_event_files(Path(root) / FEEDBACK_DIR, batch.pseudonyms, batch.salt)
    outcome = {"rows_purged": sum(purged.values()), "files": {name: n for name, n in purged.items() if n}}
    with _store(feedback_url) as store:
        store.record_erasure_step(batch.jobs, "exports", outcome)
    return outcome


@task(name="erase-in-dvc", cache_policy=NO_CACHE)
def erase_in_dvc(feedback_url: str, root: str, batch: ErasureBatch) -> dict[str, Any]:
    """Re-add purged exports to DVC, then delete every cached copy holding the listeners' rows: the local
    cache and local remotes by their content, every remote by the objects found (or recorded by an earlier
    attempt of the same jobs)."""
    project = Path(root)
    if not dvc.is_dvc_project(project):
        outcome: dict[str, Any] = {"readded": [], "dropped": [], "remotes": {}}
    else:
        readded = dvc.track_with_dvc(root, dvc.changed_feedback_files(project))
        pinned = {md5 for pins in dvc.feedback_pins(project).values() for md5 in pins}
        dropped: dict[str, list[str]] = {}
        for where, folder in dvc.object_folders(project).items():
            for path in objects_holding(folder, batch.pseudonyms, batch.salt):
                md5 = _md5_of(Path(path))
                if md5 in pinned:
                    raise RecsysError(
                        f"{path} holds erased rows but a data/feedback/*.dvc file still pins it: the purged "
                        "file was not re-added; run the retraining flow again"
                    )
                Path(path).unlink()
                dropped.setdefault(md5, []).append(where)
        earlier = {md5 for job in batch.jobs for md5 in job.steps.get("dvc", {}).get("dropped", [])}
        every = sorted(set(dropped) | earlier)
        outcome = {
            "readded": readded,
            "dropped": every,
            "where": dropped,
            "remotes": dvc.remove_from_remotes(project, every),
        }
    with _store(feedback_url) as store:
        store.record_erasure_step(batch.jobs, "dvc", outcome)
    return outcome


@task(name="versions-holding-erased", cache_policy=NO_CACHE)
def versions_holding(batch: ErasureBatch) -> dict[str, list[str]]:
    """``model tag -> pseudonyms held`` over every stored version of every data set's model."""
    from recsys import registry

    holding: dict[str, list[str]] = {}
    for info in registry.all_versions():
        record = registry.read_feedback_record(info.path)
        trained = "feedback_users" in info.metrics  # measured on feedback: made by the retraining flow
        users = registry.read_user_ids(info.path) if record is None and trained else []
        held = held_by_model(record, users, trained, batch.pseudonyms, batch.salt)
        if held:
            holding[info.tag] = sorted(held)
    return holding


@task(name="drop-erased-versions", cache_policy=NO_CACHE)
def drop_versions(feedback_url: str, batch: ErasureBatch, holding: dict[str, list[str]]) -> dict[str, Any]:
    """Revoke (services stop serving them) then delete every version holding the listeners' feedback but
    the champions, which only a retrained model may replace."""
    from recsys import registry
    from recsys.registry import exchange as model_exchange

    champions = {info.tag for info in registry.all_versions() if info.stage == registry.CHAMPION}
    doomed = [tag for tag in holding if tag not in champions]
    with _store(feedback_url) as store:
        store.revoke_models(doomed, REVOKED_REASON)
        deleted = registry.delete_versions(doomed)
        revoked, _ = store.revocations_since(0)
        exchange = model_exchange.exchange_from_env()
        unshared = model_exchange.remove(revoked, exchange) if exchange is not None else []
        outcome = {
            "deleted": deleted,
            "exchange_deleted": unshared,
            "champions_holding": sorted(set(holding) & champions),
        }
        store.record_erasure_step(batch.jobs, "models", outcome)
    return outcome


@task(name="verify-erasures", cache_policy=NO_CACHE)
def verify_erasures(feedback_url: str, root: str, batch: ErasureBatch) -> dict[str, Any]:
    """Search every place again; mark done the jobs whose listener is found nowhere.

    Returns ``{"done": job ids, "pending": {job id: places still holding the listener}}``.
    """
    with _store(feedback_url) as store:
        batch = ErasureBatch(tuple(store.erasure_jobs_by_id([job.id for job in batch.jobs])), batch.salt)
    places = _where_found(feedback_url, Path(root), batch)
    with _store(feedback_url) as store:
        compacted = store.compact()
        remaining = {}
        for job in batch.jobs:
            found = sorted(places.get(job.pseudonym, ()))
            if not compacted.get("truncated", True):
                found.append("store: the SQLite write-ahead log could not be truncated (a reader held it)")
            store.record_erasure_step([job], "verify", {"remaining": found})
            if found:
                remaining[job.id] = found
        done = [job for job in batch.jobs if job.id not in remaining]
        store.complete_erasures(done)
    return {"done": [job.id for job in done], "pending": remaining}


def _where_found(feedback_url: str, root: Path, batch: ErasureBatch) -> dict[str, set[str]]:
    """``pseudonym -> places`` (tables, exported files, cached objects, remotes, model tags, the model
    exchange's archives of revoked versions) holding it."""
    from recsys.registry import exchange as model_exchange

    found: dict[str, set[str]] = {}

    def add(pseudonyms: Any, place: str) -> None:
        for pseudonym in pseudonyms:
            found.setdefault(pseudonym, set()).add(place)

    with _store(feedback_url) as store:
        for pseudonym, tables in store.held_rows(batch.jobs).items():
            add([pseudonym], f"store: {', '.join(sorted(tables))}")
    for name, held in events_holding(root / FEEDBACK_DIR, batch.pseudonyms, batch.salt).items():
        add(held, f"export: {name}")
    if dvc.is_dvc_project(root):
        for where, folder in dvc.object_folders(root).items():
            for path, held in objects_holding(folder, batch.pseudonyms, batch.salt).items():
                add(held, f"{where}: {_md5_of(Path(path))}")
        dropped = sorted({md5 for job in batch.jobs for md5 in job.steps.get("dvc", {}).get("dropped", [])})
        for name, present in dvc.objects_in_remotes(root, dropped).items():
            for job in batch.jobs:
                if set(present) & set(job.steps.get("dvc", {}).get("dropped", [])):
                    add([job.pseudonym], f"remote:{name}")
    for tag, pseudonyms in versions_holding.fn(batch).items():
        add(pseudonyms, f"model: {tag}")
    exchange = model_exchange.exchange_from_env()
    if exchange is not None:
        with _store(feedback_url) as store:
            revoked = set(store.revocations_since(0)[0])
        for tag in sorted(revoked & set(model_exchange.archived(exchange))):
            # Which listener it holds is not read from the archive: every pending job waits for it.
            add([job.pseudonym for job in batch.jobs], f"exchange: {tag}")
    return found


def _md5_of(path: Path) -> str:
    """The md5 a DVC object is stored under (``<2 chars>/<30 chars>``)."""
    return path.parent.name + path.name


def _total(held: dict[str, dict[str, int]]) -> int:
    return sum(count for tables in held.values() for count in tables.values())
