"""Erasure through the retraining flow: a listener's data leaves every place it reached, whatever fails.

Each test gets its own tiny project (a DVC project with a local remote), champion and SQLite feedback store,
and first replays the steps before it: feedback is merged into a promoted champion and the exports are pushed
to the remote (:func:`_merge_feedback`), then two of its listeners are deleted.

Whether a copy is left is judged by :func:`copies_of`, which searches with the *raw* ids (the code under test
only ever sees pseudonyms): the store's tables and the SQLite files' bytes, the exported files, every object
of the DVC cache and remote, and every stored model version of every data set.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

import flows.retraining as retraining
from flows.dvc import dvc_executable
from flows.retraining import retraining_flow
from recsys import registry
from recsys.columns import Col
from recsys.errors import ConfigError
from recsys.feedback.erasure_steps import ERASED_PREFIX
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.exports import CURSOR_FILE, FeedbackCursor
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import EVENTS, RATINGS, SERVED, ServedRecommendation
from recsys.offline.split import Split, load_split
from recsys.retraining.run import ERASURES_ONLY, NO_NEW_FEEDBACK
from tests.helpers import PROJECT_ROOT, build_project, feedback_state, force_feedback_gate

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NEW_LISTENER = "listener-x-Zq81"  # known only through feedback
OTHER_NEW_LISTENER = "listener-o-Pw42"
FEEDBACK_DIR = "data/feedback"


class InjectedFault(RuntimeError):
    """The failure a test injects after a step of the flow did its work."""


@pytest.fixture(autouse=True)
def no_salt_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``RECSYS_PSEUDONYM_SALT``: the service and the flow share the store's own random salt."""
    monkeypatch.delenv("RECSYS_PSEUDONYM_SALT", raising=False)


@pytest.fixture(params=["lastfm-artists", "spotify-songs"])
def dataset(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def project(dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/{split,features,prepared} of a 20 x 15 synthetic project and a promoted champion fitted on it,
    in a model store of this test's own, as the artist or the song data set; a DVC project (no git) with a
    local remote."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv(registry.DATASET_ENV, dataset)
    return _make_project(tmp_path, dataset)


def _make_project(folder: Path, dataset: str) -> Path:
    """The project of :func:`project` under ``folder`` (``erasure/``, ``bentoml/``, ``dvc-remote/``): the
    remote's path is relative, so a copy of the folder is a project of its own."""
    home = folder / "bentoml"
    root = folder / "erasure"
    built = build_project(root / "data")
    settings = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    settings["dataset"]["name"] = dataset
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "remote", "add", "-d", "shared", "../../dvc-remote")  # relative to erasure/.dvc
    tag = built.save(0.1, home, params_dict={"seed": 0, "dataset": {"name": dataset}})
    assert tag.startswith(registry.model_name(dataset) + ":")
    registry.promote(tag, home=home)
    return root


@pytest.fixture(scope="module")
def merged_template(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding an artist project whose feedback is already merged (:func:`_merge_feedback`), made
    once for the fault tests, each of which works on a copy."""
    folder = tmp_path_factory.mktemp("merged")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(folder / "bentoml"))
        patch.setenv(registry.DATASET_ENV, "lastfm-artists")
        patch.delenv("RECSYS_PSEUDONYM_SALT", raising=False)
        root = _make_project(folder, "lastfm-artists")
        with FeedbackStore(f"sqlite:///{root / FEEDBACK_DIR / 'feedback.db'}") as store:
            _merge_feedback(root, store, load_split(root / "data/split"), patch)
    return folder


@pytest.fixture
def merged(merged_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of :func:`merged_template` of this test's own; its project root."""
    folder = tmp_path / "merged"
    shutil.copytree(merged_template, folder, symlinks=True)
    monkeypatch.setenv("BENTOML_HOME", str(folder / "bentoml"))
    monkeypatch.setenv(registry.DATASET_ENV, "lastfm-artists")
    return folder / "erasure"


@pytest.fixture
def store(project: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(f"sqlite:///{project / FEEDBACK_DIR / 'feedback.db'}") as feedback:
        yield feedback


@pytest.fixture
def split(project: Path) -> Split:
    return load_split(project / "data/split")


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([dvc_executable(), *args], cwd=root, check=True, capture_output=True)


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


def _original(split: Split, user: str) -> np.ndarray:
    row = split.user_ids.index(user)
    return np.asarray((split.train_full + split.test + split.cold)[row].todense()).ravel()


def _merge_feedback(
    project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Feedback of two new listeners and two split listeners, merged into a promoted champion; the exports
    pushed to the DVC remote; served lists and a rating stored for the listeners to erase."""
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
    summary = _run(project, store)
    _dvc(project, "push", "-q")
    now = datetime.now(UTC)
    store.add_served(
        [
            ServedRecommendation(now, user, "recommend", "m:1", False, ("a01",), 0.0)
            for user in (NEW_LISTENER, erased)
        ]
    )
    store.add_rating(NEW_LISTENER, 4, "m:1")
    return summary


def _erase_two(store: FeedbackStore, split: Split) -> tuple[str, str]:
    erased, _ = _listeners(split)
    store.delete_user(NEW_LISTENER, "erasure request")
    store.delete_user(erased, "erasure request")
    return NEW_LISTENER, erased


def copies_of(project: Path, store: FeedbackStore, split: Split, users: tuple[str, ...]) -> list[str]:
    """Every place a copy of ``users``' feedback is left, found with their raw ids."""
    found = []
    with store.engine.connect() as conn:
        for table in (EVENTS, SERVED, RATINGS):
            n = conn.execute(sa.select(sa.func.count()).where(table.c[Col.USER].in_(users))).scalar_one()
            found += [f"table {table.name}"] * bool(n)
    database = project / FEEDBACK_DIR / "feedback.db"
    for path in (database, database.with_name("feedback.db-wal")):
        if path.exists():
            data = path.read_bytes()
            found += [f"bytes of {path.name}: {user}" for user in users if user.encode() in data]
    for path in sorted((project / FEEDBACK_DIR).glob("events-*.parquet")):
        found += [f"export {path.name}"] * bool(pd.read_parquet(path)[Col.USER].isin(users).any())
    for folder in (project / ".dvc" / "cache", project.parent / "dvc-remote"):  # the cache, the remote
        for path in (p for p in folder.rglob("*") if p.is_file()):
            with open(path, "rb") as handle:
                if handle.read(4) != b"PAR1":
                    continue
            frame = pd.read_parquet(path)
            if Col.USER in frame and frame[Col.USER].isin(users).any():
                found.append(f"{folder.name} object {path.parent.name}{path.name}")
    for info in registry.all_versions():
        artifact = registry.load_artifact(info.tag, dataset=None)
        for user in users:
            if user not in artifact.user_ids:
                continue
            row = np.asarray(artifact.known[artifact.user_ids.index(user)].todense()).ravel()
            if user not in split.user_ids or not np.array_equal(row, _original(split, user)):
                found.append(f"model {info.tag}: {user}")
        if artifact.feedback_users and set(users) & artifact.feedback_users:
            found.append(f"model {info.tag}: feedback record")
    return found


def test_feedback_is_exported_merged_and_recorded_with_the_model(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    erased, kept = _listeners(split)

    summary = _merge_feedback(project, store, split, monkeypatch)

    assert summary["promote"] and summary["erasures"] == 0 and summary["erased_users"] == 0
    champion = registry.load_artifact("champion")
    assert champion.tag == summary["model_tag"]
    assert NEW_LISTENER in champion.user_ids
    trained = {NEW_LISTENER, OTHER_NEW_LISTENER, erased, kept}
    assert set(_exported(project)[Col.USER]) == trained
    # The model records whose feedback it trained on, so an erasure can find it.
    assert champion.feedback_users is not None and NEW_LISTENER in champion.feedback_users
    assert champion.feedback_users <= trained
    assert copies_of(project, store, split, (NEW_LISTENER, erased))  # the oracle sees the copies


def test_an_erasure_alone_retrains_and_leaves_no_copy_anywhere(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    before = registry.load_artifact("champion")
    exported = _exported(project)
    users = _erase_two(store, split)
    force_feedback_gate(monkeypatch, promote=False)  # the metrics would keep the champion

    summary = _run(project, store)

    assert summary["status"] == "promoted" and summary["promote"] and summary["erasure_override"]
    assert summary["events"] == 0 and summary["events_file"] is None
    assert (summary["erasures"], summary["erased_users"]) == (2, 2)
    assert summary["warm_start"] is False
    assert "legal obligation" in summary["reasons"][0]
    steps = summary["erasure"]
    assert steps["exports"]["rows_purged"] == int(exported[Col.USER].isin(users).sum()) > 0
    assert steps["store"]["rows_deleted"] == 0 and steps["store"]["truncated"]  # deleted when requested
    assert steps["dvc"]["readded"] and steps["dvc"]["dropped"]
    # Every cached copy went, from the local cache and from the remote the exports were pushed to.
    assert {where for places in steps["dvc"]["where"].values() for where in places} == {
        "cache",
        "remote:shared",
    }
    assert before.tag in steps["models"]["deleted"] and not steps["models"]["champions_holding"]
    assert steps["verify"] == {
        "done": [job.id for job in store.erasure_jobs(pending_only=False)],
        "pending": {},
    }
    assert not store.erasure_jobs()
    after = registry.load_artifact("champion")
    assert after.tag == summary["model_tag"] != before.tag
    with pytest.raises(registry.RegistryError):
        registry.load_artifact(before.tag)
    assert store.is_revoked(before.tag)
    # The feedback-only listener keeps an empty row under a pseudonymous id; the raw id is gone.
    assert NEW_LISTENER not in after.user_ids
    pseudonymous = after.user_ids.index(f"{ERASED_PREFIX}{store.pseudonym(NEW_LISTENER)}")
    assert after.known[pseudonymous].nnz == 0
    # Everyone else keeps every pair.
    others = [row for row, user in enumerate(before.user_ids) if user not in users]
    assert ((before.known[others] > 0) > (after.known[others] > 0)).nnz == 0
    assert OTHER_NEW_LISTENER in after.user_ids
    # Purged files are re-added: their .dvc files pin the purged content (dvc status is clean).
    status = subprocess.run(
        [dvc_executable(), "status", "--json"], cwd=project, capture_output=True, text=True, check=True
    )
    assert status.stdout.strip() in ("{}", "")
    assert copies_of(project, store, split, users) == []
    assert NEW_LISTENER not in (project / CURSOR_FILE).read_text(encoding="utf-8")


def test_every_version_holding_the_feedback_goes_not_only_the_champion(
    prefect_harness: None,
    project: Path,
    store: FeedbackStore,
    split: Split,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    with_feedback = registry.champion()
    assert with_feedback is not None
    pipeline = registry.rollback()  # the champion trained on feedback is rolled back: it stays in the store
    # A candidate (an experiment's challenger, say) trained on the listener's feedback, and one that is not.
    built = build_project(project.parent / "copy")  # the project's own data, built again
    params = {"seed": 0, "dataset": {"name": dataset}}
    challenger = built.save(
        0.2, Path(registry.bentoml_home()), params_dict=params, feedback_users=[NEW_LISTENER]
    )
    unrelated = built.save(
        0.2, Path(registry.bentoml_home()), params_dict=params, feedback_users=[OTHER_NEW_LISTENER]
    )
    users = _erase_two(store, split)

    summary = _run(project, store)

    # The champion (the pipeline's model) never trained on feedback: nothing to retrain, only to delete.
    assert summary["status"] == ERASURES_ONLY and summary["erased_users"] == 0
    assert sorted(summary["erasure"]["models"]["deleted"]) == sorted([with_feedback.tag, challenger])
    assert {info.tag for info in registry.all_versions()} == {pipeline.tag, unrelated}
    assert store.is_revoked(challenger) and not store.is_revoked(unrelated)
    assert copies_of(project, store, split, users) == []
    assert not store.erasure_jobs()


@pytest.mark.parametrize("dataset", ["lastfm-artists"])
def test_a_third_run_changes_nothing(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    _erase_two(store, split)
    force_feedback_gate(monkeypatch, promote=False)
    _run(project, store)
    before = feedback_state(project)

    summary = _run(project, store)

    assert summary == {
        "status": NO_NEW_FEEDBACK,
        "cursor": FeedbackCursor.load(project / CURSOR_FILE).position,
    }
    assert feedback_state(project) == before


@pytest.mark.parametrize("dataset", ["lastfm-artists"])
def test_erasing_a_listener_the_model_never_saw_is_recorded_without_a_retrain(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    champion = registry.champion()
    models = len(registry.list_models())
    store.delete_user("never-exported", "erasure request")

    summary = _run(project, store)

    assert summary["status"] == ERASURES_ONLY
    assert (summary["erasures"], summary["erased_users"]) == (1, 0)
    assert registry.champion() == champion and len(registry.list_models()) == models
    assert summary["erasure"]["verify"]["pending"] == {} and not store.erasure_jobs()
    assert _run(project, store)["status"] == NO_NEW_FEEDBACK


@pytest.mark.parametrize("dataset", ["lastfm-artists"])
def test_a_salt_that_differs_between_service_and_flow_is_an_error_not_an_empty_erasure(
    prefect_harness: None, project: Path, store: FeedbackStore, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge_feedback(project, store, split, monkeypatch)
    monkeypatch.setenv("RECSYS_PSEUDONYM_SALT", "the-service-s-own-salt")  # the service ran with an override
    users = _erase_two(store, split)
    monkeypatch.delenv("RECSYS_PSEUDONYM_SALT")  # the flow runs without it

    with pytest.raises(ConfigError, match="another pseudonym salt"):
        _run(project, store)

    assert len(store.erasure_jobs()) == 2  # still pending, nothing counted as done
    monkeypatch.setenv("RECSYS_PSEUDONYM_SALT", "the-service-s-own-salt")
    force_feedback_gate(monkeypatch, promote=False)
    _run(project, store)
    assert not store.erasure_jobs()
    assert copies_of(project, store, split, users) == []


# --- a fault after every step, then a rerun ---------------------------------------------------------

STEPS = (
    "discard_unfinished_exports",
    "export_feedback",
    "read_erasures",
    "erase_in_store",
    "erase_in_exports",
    "erase_in_dvc",
    "load_history",
    "versions_holding",
    "track_with_dvc",
    "retrain_and_evaluate",
    "gate_and_promote",
    "drop_versions",
    "verify_erasures",
)


def _failing_after(step: Callable[..., Any]) -> Callable[..., Any]:
    def failing(*args: Any, **kwargs: Any) -> Any:
        step(*args, **kwargs)
        raise InjectedFault(f"injected after {step.__name__}")

    return failing


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_a_fault_after_any_step_then_a_rerun_leaves_no_copy_and_counts_each_event_once(
    merged: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    split = load_split(merged / "data/split")
    _, kept = _listeners(split)
    with FeedbackStore(f"sqlite:///{merged / FEEDBACK_DIR / 'feedback.db'}") as store:
        # New feedback in the same run as the erasure: every step of the flow runs.
        fresh = [(kept, item, "like") for item in _free_items(split, 5, 6)[4:]]
        fresh.append((OTHER_NEW_LISTENER, "a00", "play"))
        store.add_events(
            [
                FeedbackEvent(user_id=u, item_id=i, event=e, event_id=f"n{n}")
                for n, (u, i, e) in enumerate(fresh)
            ]
        )
        users = _erase_two(store, split)
        force_feedback_gate(monkeypatch, promote=False)
        with monkeypatch.context() as patch:
            patch.setattr(retraining, step, _failing_after(getattr(retraining, step)))
            with pytest.raises(InjectedFault):
                _run(merged, store)

        summary = _run(merged, store)

        assert copies_of(merged, store, split, users) == []
        assert not store.erasure_jobs(), summary["erasure"].get("verify")
        assert registry.champion() is not None
        exported = _exported(merged)
        assert not exported[[Col.USER, Col.EVENT_ID]].duplicated().any()  # each event in one export only
        assert {f"n{n}" for n in range(len(fresh))} <= set(exported[Col.EVENT_ID])
        champion = registry.load_artifact("champion")
        row = np.asarray(champion.known[champion.user_ids.index(kept)].todense()).ravel()
        assert (row > 0).sum() >= (_original(split, kept) > 0).sum()  # the kept one's feedback is trained on
        assert _run(merged, store)["status"] == NO_NEW_FEEDBACK
