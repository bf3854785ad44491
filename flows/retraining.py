"""The retraining flow: new listener feedback -> merged training data -> challenger -> gate -> champion.

Run it with ``python -m flows.retraining`` from the project root, or on a schedule (nightly) through a
deployment. Under the training run lock (:func:`flows.training.run_lock`, so it never overlaps a training
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
   gate says (:func:`recsys.loop.erasure.honour_erasure`), and every older model version is then deleted from
   the store (they may hold the erased feedback; a rollback would bring it back);
8. advances the cursor (and its count of honoured erasures), only once all of that succeeded: a failed run
   is simply retried on the same events and erasures.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.training import CHALLENGER, dvc_executable, run_lock
from recsys.config import Params, load_params
from recsys.errors import RecsysError
from recsys.io import write_parquet
from recsys.loop.erasure import (
    EVENTS_GLOB,
    PendingErasures,
    anonymise_ids,
    erased_users,
    honour_erasure,
    pending_erasures,
    purge_event_files,
    without_erased_events,
    without_users,
)
from recsys.loop.retrain import (
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
from recsys.models import LightFMRecommender
from recsys.offline.split import Split, load_split, save_split

FEEDBACK_DIR = Path("data/feedback")
SPLIT_DIR = Path("data/split")
FEATURES_DIR = Path("data/features")
PREPARED_DIR = Path("data/prepared")
NO_NEW_FEEDBACK = "no new feedback"
ERASURES_ONLY = "erasures recorded; nothing to retrain"
FEEDBACK_URL_ENV = "RECSYS_FEEDBACK_URL"
DEFAULT_FEEDBACK_DB = FEEDBACK_DIR / "feedback.db"
RELOAD_TIMEOUT_S = 30.0


def events_file(root: Path, position: int) -> Path:
    """``data/feedback/events-<position>.parquet``: the events consumed up to store cursor ``position``."""
    return root / FEEDBACK_DIR / f"events-{position}.parquet"


@task(name="export-feedback", cache_policy=NO_CACHE)
def export_feedback(feedback_url: str, since: int) -> tuple[pd.DataFrame, int]:
    """Every event stored after cursor ``since`` and the cursor after the last of them."""
    from recsys.loop.feedback import EXPORT_CURSOR_ATTR, FeedbackStore

    with FeedbackStore(feedback_url, create=False) as store:
        frame = store.export_frame(since)
    return frame, int(frame.attrs[EXPORT_CURSOR_ATTR])


@task(name="track-with-dvc", cache_policy=NO_CACHE)
def track_with_dvc(root: str, files: list[str]) -> list[str]:
    """``dvc add`` the feedback ``files`` (relative to ``root``) when ``root`` is a DVC project.

    Each export then is a data version of its own: its ``.dvc`` file (visible to git through
    ``.gitignore``'s ``!/data/feedback/*.dvc``) pins the content, and a purge for an erasure re-adds the
    file, so the ``.dvc`` moves to the purged content. Returns the ``.dvc`` files written (none outside a
    DVC project).
    """
    project = Path(root)
    if not files or not (project / ".dvc").is_dir():
        return []
    done = subprocess.run(
        [dvc_executable(), "add", "-q", *files], cwd=project, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RecsysError(f"dvc add {' '.join(files)} failed in {project}: {' / '.join(detail)}")
    return [f"{file}.dvc" for file in files]


def _pinned(pointer: Path) -> list[str]:
    """The md5 of each output a ``.dvc`` file pins."""
    outs = yaml.safe_load(pointer.read_text(encoding="utf-8")).get("outs") or []
    return [str(out["md5"]) for out in outs if out.get("md5")]


def dvc_versions(root: Path, files: list[str]) -> list[str]:
    """The md5 each of ``files``' ``.dvc`` files pins now (files without one are left out)."""
    pointers = [root / f"{file}.dvc" for file in files]
    return [md5 for pointer in pointers if pointer.exists() for md5 in _pinned(pointer)]


@task(name="drop-erased-from-dvc-cache", cache_policy=NO_CACHE)
def drop_from_dvc_cache(root: str, hashes: list[str]) -> list[str]:
    """Delete the DVC cache's copies of the contents ``hashes`` (the exports before an erasure's purge).

    Re-adding a purged file moves its ``.dvc`` to the purged content, but the cache keeps the older
    version, the erased listener's rows included, for ``dvc checkout`` of an older commit. Only those
    objects go (``dvc gc`` would delete every version the workspace does not use), and none that a
    current ``data/feedback/*.dvc`` still pins. Copies already pushed to a DVC remote are not reached.
    Returns the hashes whose cache object was deleted.
    """
    project = Path(root)
    if not hashes or not (project / ".dvc").is_dir():
        return []
    done = subprocess.run(
        [dvc_executable(), "cache", "dir"], cwd=project, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RecsysError(f"dvc cache dir failed in {project}: {(done.stderr or done.stdout).strip()}")
    cache = Path(done.stdout.strip())
    still_used = {md5 for pointer in (project / FEEDBACK_DIR).glob("*.dvc") for md5 in _pinned(pointer)}
    dropped = []
    for md5 in dict.fromkeys(hashes):
        # DVC 3 keeps objects under files/md5/; a cache from DVC 2 has them at the top.
        objects = [cache / "files" / "md5" / md5[:2] / md5[2:], cache / md5[:2] / md5[2:]]
        found = [path for path in objects if path.exists()]
        if md5 in still_used or not found:
            continue
        for path in found:
            path.unlink()
        dropped.append(md5)
    return dropped


@task(name="load-feedback-history", cache_policy=NO_CACHE)
def load_history(root: str, current: Path | None) -> pd.DataFrame:
    """Every event of the earlier exports (``events-*.parquet`` other than ``current``), oldest first."""
    from recsys.loop.feedback import FEEDBACK_COLUMNS

    files = [
        path
        for path in sorted((Path(root) / FEEDBACK_DIR).glob(EVENTS_GLOB), key=_position)
        if path != current
    ]
    frames = [pd.read_parquet(path) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(FEEDBACK_COLUMNS))


def _position(path: Path) -> int:
    """The store cursor in ``events-<cursor>.parquet`` (files sort by it, not by name)."""
    return int(path.stem.removeprefix("events-"))


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
def erased_in_champion(pseudonyms: frozenset[str], salt: str | None) -> int:
    """How many of the champion's users are erased (0 without a champion)."""
    from recsys import registry

    if not pseudonyms or registry.champion() is None:
        return 0
    return len(erased_users(registry.load_artifact("champion").user_ids, pseudonyms, salt))


def _aligned_split(root: Path, user_ids: list[str], item_ids: list[str], tag: str) -> tuple[Split, int]:
    """The split aligned with the champion's users, and how many users the split itself has."""
    split = load_split(root / SPLIT_DIR)
    try:
        if split.item_ids != item_ids:
            raise ValueError("the items differ")
        return align_split(split, user_ids), len(split.user_ids)
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
    from recsys.offline.evaluation import evaluate
    from recsys.offline.popularity import mainstreaminess, user_groups

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
def retrain_and_evaluate(
    root: str,
    events: pd.DataFrame,
    erased: frozenset[str] = frozenset(),
    salt: str | None = None,
    history: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Merge, retrain and measure challenger and champion; nothing is written.

    The training matrix is rebuilt from the split's own listens plus every feedback event exported so far
    (``history``, the earlier ``events-*.parquet``) and this export without its holdout, rather than
    grown from the champion's: events of a run whose challenger was refused, and earlier holdouts, are
    trained on the next time, and each event still counts once.

    ``erased`` holds the pseudonyms (made with ``salt``, the store's) of users to erase: their events are
    dropped (their earlier events were purged from the files before), so their rows hold only the split's
    own listens, and the challenger is fitted from scratch.
    """
    from recsys import registry

    project = Path(root)
    params = load_params(project / "params.yaml")
    artifact = registry.load_artifact("champion")
    split, n_split_users = _aligned_split(project, artifact.user_ids, artifact.item_ids, artifact.tag)
    erased_ids = erased_users(artifact.user_ids, erased, salt)
    events, _ = without_users(events, erased_ids)
    split = replace(split, user_ids=anonymise_ids(split.user_ids, erased_ids, n_split_users, salt))
    user_index = {user: row for row, user in enumerate(split.user_ids)}
    rest, holdout = split_feedback_holdout(events, params.retrain.feedback_holdout_fraction, params.seed)
    earlier = pd.DataFrame(columns=rest.columns) if history is None else without_users(history, erased_ids)[0]
    pieces = [frame for frame in (earlier, rest) if not frame.empty]
    candidates = pd.concat(pieces, ignore_index=True) if pieces else rest
    trainable, n_protected = without_evaluation_pairs(candidates, split)
    trained = champion_training(artifact.known, split)
    # The split's own listens (empty rows for listeners known only through feedback): an erased user's
    # feedback-derived pairs are gone with their purged events.
    base = sp.csr_matrix(split.train_full, dtype=np.float32)
    merged, report = merge_feedback(base, trainable, user_index, artifact.item_index, params.retrain)
    full_fit = report.needs_full_retrain or bool(erased_ids)
    challenger = retrain(artifact.model, merged, full_fit, params.retrain)
    extended = extend_split(split, merged, report.new_users)
    # Both models rank without every pair either of them trained on, so neither is credited for those.
    before = sp.vstack([trained, sp.csr_matrix((len(report.new_users), merged.shape[1]))])
    exclude = sp.csr_matrix(((merged > 0) + (sp.csr_matrix(before) > 0)) > 0, dtype=np.float32)
    indexes = (user_index, artifact.item_index)
    return {
        "champion_tag": artifact.tag,
        "challenger_model": challenger,
        "split": extended,
        "merge": report.to_dict() | {"n_protected_events": n_protected, "n_earlier_events": len(earlier)},
        "n_holdout_events": len(holdout),
        "warm_start": not full_fit,
        "erased_users": len(erased_ids),
        "challenger": _candidate(challenger, exclude, extended, holdout, indexes, params),
        "champion": _candidate(artifact.model, exclude, extended, holdout, indexes, params),
    }


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(root: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Gate the challenger against the re-measured champion; on a win package and promote it."""
    from recsys import registry
    from recsys.offline import gate as gating

    project = Path(root)
    params = load_params(project / "params.yaml")
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
    url = feedback_url or os.environ.get(FEEDBACK_URL_ENV) or f"sqlite:///{root / DEFAULT_FEEDBACK_DB}"
    with run_lock(root, lock_timeout_s):
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
        path = events_file(root, position) if not events.empty else None
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
    unpurged = dvc_versions(root, rewritten)  # read before the re-add moves the .dvc files on
    dvc_files = track_with_dvc(str(root), rewritten)
    return {
        "events": kept,
        "erasures": pending.n_records,
        "erased_users": erased_in_champion(pending.pseudonyms, pending.salt),
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
