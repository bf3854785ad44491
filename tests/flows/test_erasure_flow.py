"""Erasure through the retraining flow: a deleted listener's feedback leaves the exported files and the model.

Each test gets its own tiny project, champion and SQLite feedback store, and first replays the steps before
it: feedback is merged into a promoted champion (:func:`_merge_feedback`), two of its listeners are deleted
and the next run (with no new feedback) retrains without them (:func:`_erase_two`), and a run after that
changes nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from flows.dvc import dvc_executable, dvc_versions
from flows.retraining import ERASURES_ONLY, NO_NEW_FEEDBACK, retraining_flow
from recsys import registry
from recsys.columns import Col
from recsys.loop.erasure import ERASED_PREFIX
from recsys.loop.events import FeedbackEvent
from recsys.loop.exports import CURSOR_FILE, FeedbackCursor
from recsys.loop.feedback import FeedbackStore
from recsys.offline.split import Split, load_split
from recsys.registry import RegistryError
from tests.helpers import PROJECT_ROOT, build_project, dvc_cached, feedback_state, force_feedback_gate

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NEW_LISTENER = "listener-x"  # known only through feedback
OTHER_NEW_LISTENER = "listener-o"
FEEDBACK_DIR = "data/feedback"


@pytest.fixture(autouse=True)
def no_salt_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``RECSYS_PSEUDONYM_SALT``: the service and the flow share the store's own random salt."""
    monkeypatch.delenv("RECSYS_PSEUDONYM_SALT", raising=False)


@pytest.fixture(params=["lastfm-artists", "spotify-songs"])
def project(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/{split,features,prepared} of a 20 x 15 synthetic project and a promoted champion fitted on it,
    in a model store of this test's own; once as the artist data set and once as a song data set (its own
    model name, which registry calls without a data set then mean through RECSYS_DATASET)."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv(registry.DATASET_ENV, request.param)
    root = tmp_path / "erasure"
    built = build_project(root / "data")
    settings = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    settings["dataset"]["name"] = request.param
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    subprocess.run([dvc_executable(), "init", "--no-scm", "-q"], cwd=root, check=True)
    tag = built.save(0.1, home, params_dict={"seed": 0, "dataset": {"name": request.param}})
    assert tag.startswith(registry.model_name(request.param) + ":")
    registry.promote(tag, home=home)
    return root


@pytest.fixture
def store(project: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(f"sqlite:///{project / FEEDBACK_DIR / 'feedback.db'}") as feedback:
        yield feedback


@pytest.fixture
def split(project: Path) -> Split:
    return load_split(project / "data/split")


def _free_items(split: Split, row: int, n: int) -> list[str]:
    """``n`` artists the split user in ``row`` has in no part and that are not cold: feedback adds pairs."""
    taken = set((split.train_full + split.test + split.cold)[row].indices) | set(split.cold_items)
    return [item for column, item in enumerate(split.item_ids) if column not in taken][:n]


def _listeners(split: Split) -> tuple[str, str]:
    """The erased Last.fm listener and one whose feedback must survive."""
    return split.user_ids[3], split.user_ids[5]


def _run(project: Path, store: FeedbackStore) -> dict[str, Any]:
    result: dict[str, Any] = retraining_flow(project_dir=str(project), feedback_url=store.url)
    return result


def _exported(project: Path) -> pd.DataFrame:
    files = sorted((project / FEEDBACK_DIR).glob("events-*.parquet"))
    return pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)


def _row(known: sp.csr_matrix, user_ids: list[str], user: str) -> np.ndarray:
    return np.asarray(known[user_ids.index(user)].todense()).ravel()


def _merge_feedback(
    project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Step 1: feedback of two new listeners and two split listeners, merged into a promoted champion."""
    erased, kept = _listeners(split)
    rows = [(NEW_LISTENER, item, "like") for item in split.item_ids[:6]]
    rows += [(OTHER_NEW_LISTENER, item, "like") for item in split.item_ids[4:10]]
    rows += [(erased, item, "like") for item in _free_items(split, 3, 4)]
    rows += [(kept, item, "play") for item in _free_items(split, 5, 4)]
    store.add_events(
        [
            FeedbackEvent(
                user_id=u, item_id=i, event=e, timestamp=T0 + timedelta(minutes=n), event_id=f"f{n}"
            )
            for n, (u, i, e) in enumerate(rows)
        ]
    )
    force_feedback_gate(monkeypatch, promote=True)  # the tiny model's metrics must not decide this setup step
    return _run(project, store)


def _erase_two(project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 2 (after step 1): the feedback-only listener and a split listener erased, the next run done."""
    erased, _ = _listeners(split)
    store.delete_user(NEW_LISTENER, "erasure request")
    store.delete_user(erased, "erasure request")
    force_feedback_gate(monkeypatch, promote=False)
    _run(project, store)


def test_feedback_is_exported_and_merged_into_the_champion(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    erased, kept = _listeners(split)

    summary = _merge_feedback(project, store, split, monkeypatch)

    assert summary["promote"] and summary["erased_users"] == 0 and summary["purged_rows"] == 0
    champion = registry.load_artifact("champion")
    assert champion.tag == summary["model_tag"]
    assert _row(champion.known, champion.user_ids, NEW_LISTENER).any()
    original = np.asarray((split.train_full + split.test + split.cold)[3].todense()).ravel()
    assert (_row(champion.known, champion.user_ids, erased) != original).any()  # feedback pairs merged
    assert set(_exported(project)[Col.USER]) == {NEW_LISTENER, OTHER_NEW_LISTENER, erased, kept}


def test_an_erasure_alone_retrains_and_removes_the_users_feedback_everywhere(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    erased, _ = _listeners(split)
    before = registry.load_artifact("champion")
    exported = _exported(project)
    n_erased_rows = int(exported[Col.USER].isin([NEW_LISTENER, erased]).sum())
    # The store deletes its copy; the exported file and the champion still hold the feedback.
    assert store.delete_user(NEW_LISTENER, "erasure request") == (exported[Col.USER] == NEW_LISTENER).sum()
    store.delete_user(erased, "erasure request")
    force_feedback_gate(monkeypatch, promote=False)  # the metrics would keep the champion
    files = [str(path.relative_to(project)) for path in (project / FEEDBACK_DIR).glob("events-*.parquet")]
    unpurged = dvc_versions(project, files)
    assert unpurged and all(dvc_cached(project, md5) for md5 in unpurged)

    summary = _run(project, store)

    assert summary["status"] == "promoted" and summary["promote"] and summary["erasure_override"]
    assert summary["events"] == 0 and summary["events_file"] is None
    assert (summary["erasures"], summary["erased_users"]) == (2, 2)
    assert summary["purged_rows"] == n_erased_rows > 0
    assert summary["warm_start"] is False
    assert "legal obligation" in summary["reasons"][0]
    assert summary["reasons"][1].endswith("test gate: promote=False")
    after = registry.load_artifact("champion")
    assert after.tag == summary["model_tag"] != before.tag
    # Older versions may hold the erased feedback: gone, so no rollback can serve it again.
    assert before.tag in summary["versions_deleted_for_erasure"]
    assert [info.tag for info in registry.list_models()] == [after.tag]
    with pytest.raises(RegistryError):
        registry.load_artifact(before.tag)
    # The feedback-only listener keeps an empty row under a pseudonymous id; the raw id is gone.
    assert NEW_LISTENER not in after.user_ids
    assert not _row(after.known, after.user_ids, f"{ERASED_PREFIX}{store.pseudonym(NEW_LISTENER)}").any()
    original = np.asarray((split.train_full + split.test + split.cold)[3].todense()).ravel()
    assert np.array_equal(_row(after.known, after.user_ids, erased), original)
    others = [row for row, user in enumerate(before.user_ids) if user not in (NEW_LISTENER, erased)]
    # Everyone else keeps every pair; the only new ones are their events held out by the first run, which
    # this run trains on.
    kept_before, kept_after = before.known[others] > 0, after.known[others] > 0
    assert (kept_before > kept_after).nnz == 0
    rows, cols = (kept_after > kept_before).nonzero()
    added = {(before.user_ids[others[r]], after.item_ids[c]) for r, c in zip(rows, cols, strict=True)}
    assert added <= set(zip(exported[Col.USER], exported[Col.ITEM], strict=True))
    assert _row(after.known, after.user_ids, OTHER_NEW_LISTENER).any()
    remaining = _exported(project)
    assert not remaining[Col.USER].isin([NEW_LISTENER, erased]).any()
    # The purged files were re-added to DVC: their .dvc files point at the purged content.
    assert summary["dvc_files"] and all(name.endswith(".parquet.dvc") for name in summary["dvc_files"])
    status = subprocess.run(
        [dvc_executable(), "status", "--json", *summary["dvc_files"]],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and json.loads(status.stdout) == {}
    # The versions with the erased rows are gone from the DVC cache; the purged ones are there.
    assert sorted(summary["dvc_cache_dropped"]) == sorted(unpurged)
    assert not any(dvc_cached(project, md5) for md5 in unpurged)
    assert all(dvc_cached(project, md5) for md5 in dvc_versions(project, files))
    expected = exported[~exported[Col.USER].isin([NEW_LISTENER, erased])]
    assert sorted(remaining[Col.EVENT_ID]) == sorted(expected[Col.EVENT_ID])
    audit = [record for record in store.audit_log() if record.action == "delete_user"]
    assert [record.user_pseudonym for record in audit] == [
        store.pseudonym(NEW_LISTENER),
        store.pseudonym(erased),
    ]
    cursor = FeedbackCursor.load(project / CURSOR_FILE)
    assert cursor.erasures_applied == 2 and cursor.history[-1]["purged_rows"] == n_erased_rows
    assert NEW_LISTENER not in (project / CURSOR_FILE).read_text(encoding="utf-8")


def test_a_third_run_changes_nothing(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    _erase_two(project, store, split, monkeypatch)
    before = feedback_state(project)

    summary = _run(project, store)

    assert summary == {
        "status": NO_NEW_FEEDBACK,
        "cursor": FeedbackCursor.load(project / CURSOR_FILE).position,
    }
    assert feedback_state(project) == before


def test_erasing_a_listener_the_model_never_saw_is_recorded_without_a_retrain(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    _erase_two(project, store, split, monkeypatch)
    champion = registry.champion()
    models = len(registry.list_models())
    store.delete_user("never-exported", "erasure request")

    summary = _run(project, store)

    assert summary["status"] == ERASURES_ONLY
    assert (summary["erasures"], summary["erased_users"], summary["purged_rows"]) == (1, 0, 0)
    assert registry.champion() == champion and len(registry.list_models()) == models
    assert FeedbackCursor.load(project / CURSOR_FILE).erasures_applied == 3
    assert _run(project, store)["status"] == NO_NEW_FEEDBACK
