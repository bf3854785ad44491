"""The retraining flow end to end: a tiny project with a champion, a SQLite feedback store, a stub service.

Tests run in file order and share the module's project, store and registry.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
import yaml
from prefect import flow

from flows.dvc import dvc_executable
from flows.retraining import (
    gate_and_promote,
    retrain_and_evaluate,
    retraining_flow,
)
from flows.service import reload_service
from recsys import registry
from recsys.config import Params
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.exports import CURSOR_FILE, FeedbackCursor, events_file
from recsys.feedback.store import FeedbackStore
from recsys.models import load_recommender
from recsys.models.ranker import TwoStageRanker
from recsys.offline.features import load_item_features, without_identity
from recsys.offline.split import load_split
from recsys.paths import FEEDBACK_DIR, model_file
from recsys.retraining.challenger import Retrained
from recsys.retraining.run import NO_NEW_FEEDBACK
from recsys.serving.state import ServingState
from recsys.specs import HYBRID, RANKER
from tests.helpers import PROJECT_ROOT, build_project, feedback_state, force_feedback_gate

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ADMIN_TOKEN = "s3cret"


class _ReloadHandler(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str | None]]] = []

    def do_POST(self) -> None:
        type(self).calls.append((self.path, self.headers.get("X-Admin-Token")))
        ok = self.headers.get("X-Admin-Token") == ADMIN_TOKEN
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return


CHAMPION_STRENGTH = 0.5


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    """A loopback stand-in for the service's ``/admin/reload``."""
    server = HTTPServer(("127.0.0.1", 0), _ReloadHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def own_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A BentoML home of this test only: every test starts from its own champion, in any order."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path: Path, own_registry: Path) -> Path:
    """data/{split,features,prepared} of a 20 x 15 synthetic project and a promoted champion fitted on it."""
    root = tmp_path / "retrain"
    built = build_project(root / "data")
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    # A DVC project (without git), so each export is added to DVC as its own data version.
    subprocess.run([dvc_executable(), "init", "--no-scm", "-q"], cwd=root, check=True)
    # Packaged with a popularity re-ranking strength, which a retrained challenger inherits.
    tag = built.save(0.1, own_registry, bias_strength=CHAMPION_STRENGTH)
    registry.promote(tag, home=own_registry)
    return root


@pytest.fixture
def store(project: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(f"sqlite:///{project / 'data/feedback/feedback.db'}") as feedback:
        yield feedback


def _add(store: FeedbackStore, rows: list[tuple[str, str, str]], prefix: str) -> None:
    store.add_events(
        [
            FeedbackEvent(
                user_id=user,
                item_id=item,
                event=event,
                timestamp=T0 + timedelta(minutes=i),
                event_id=f"{prefix}{i}",
            )
            for i, (user, item, event) in enumerate(rows)
        ]
    )


@pytest.fixture(autouse=True)
def admin_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow's calls to the service read the token from the environment, never from a parameter."""
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", ADMIN_TOKEN)


def _run(project: Path, store: FeedbackStore, service_url: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = retraining_flow(
        project_dir=str(project), feedback_url=store.url, service_url=service_url
    )
    return result


def test_known_listeners_feedback_warm_starts_a_gated_challenger_and_advances_the_cursor(
    prefect_harness: None, project: Path, store: FeedbackStore, service: str
) -> None:
    champion_before = registry.champion()
    assert champion_before is not None
    rows = [
        (f"u{u:02d}", f"a{(u + j) % 15:02d}", event)
        for u in range(10)
        for j, event in enumerate(("play", "play", "like"))
    ]
    # First, so that they are not among each user's latest events (the recent-feedback holdout).
    split = load_split(project / "data/split")
    disliked = split.item_ids[split.train_full[2].indices[0]]  # a training pair, so the merge sees it
    rows = [("u01", "zz-unknown", "play"), (split.user_ids[2], disliked, "dislike"), *rows]
    _add(store, rows, "first-")

    summary = _run(project, store, service)

    assert summary["events"] == len(rows)
    assert summary["cursor"] == store.export_frame(None).attrs["cursor"] > 0
    assert summary["warm_start"] is True
    assert summary["merge"]["n_unknown_item_events"] == 1
    assert summary["merge"]["new_users"] == []
    assert summary["merge"]["events_by_type"]["dislike"] == 1
    assert summary["merge"]["pairs_removed"] >= 1
    assert summary["merge"]["n_protected_events"] >= 0
    assert summary["n_holdout_events"] > 0
    assert {"ndcg@10", "feedback_hit_rate@10"} <= set(summary["challenger"]) & set(summary["champion"])
    assert summary["champion"]["feedback_users"] > 0  # each user's latest event, a like, is held out
    exported = pd.read_parquet(events_file(project / FEEDBACK_DIR, summary["cursor"]))
    assert sorted(exported["event_id"]) == sorted(f"first-{i}" for i in range(len(rows)))
    relative = events_file(project / FEEDBACK_DIR, summary["cursor"]).relative_to(project)
    assert summary["dvc_files"] == [f"{relative}.dvc"] and (project / f"{relative}.dvc").exists()
    status = subprocess.run(
        [dvc_executable(), "status", "--json", f"{relative}.dvc"], cwd=project, capture_output=True, text=True
    )
    assert status.returncode == 0 and json.loads(status.stdout) == {}  # tracked and unchanged
    cursor = FeedbackCursor.load(project / CURSOR_FILE)
    assert cursor.position == summary["cursor"] and cursor.history[-1]["events"] == len(rows)
    champion_after = registry.champion()
    assert champion_after is not None
    if summary["promote"]:
        assert champion_after.tag == summary["model_tag"] != champion_before.tag
        assert _ReloadHandler.calls[-1] == ("/admin/reload", ADMIN_TOKEN)
    else:
        assert champion_after.tag == champion_before.tag == summary["model_tag"]
        assert summary["reasons"]


def test_a_second_run_without_new_feedback_changes_nothing(
    prefect_harness: None, project: Path, store: FeedbackStore
) -> None:
    _add(store, [(f"u{u:02d}", f"a{u:02d}", "like") for u in range(5)], "first-")
    _run(project, store)
    before = feedback_state(project)

    summary = _run(project, store)

    assert summary == {
        "status": NO_NEW_FEEDBACK,
        "cursor": FeedbackCursor.load(project / CURSOR_FILE).position,
    }
    assert feedback_state(project) == before  # cursor, champion, exported files (bytes), models


def test_a_new_listener_forces_a_full_fit_that_grows_the_user_rows(
    prefect_harness: None, project: Path, store: FeedbackStore
) -> None:
    before = FeedbackCursor.load(project / CURSOR_FILE).position

    summary = _add_new_listener(project, store)

    assert summary["warm_start"] is False
    assert summary["merge"]["new_users"] == ["brand-new"]
    assert summary["merge"]["needs_full_retrain"] is True
    assert summary["cursor"] > before
    if summary["promote"]:
        artifact = registry.load_artifact("champion")
        assert artifact.user_ids[-1] == "brand-new" and artifact.model.n_users == len(artifact.user_ids)


def test_reload_sends_the_admin_token_and_fails_loudly_when_refused(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert reload_service.fn(service) == 200
    assert _ReloadHandler.calls[-1] == ("/admin/reload", ADMIN_TOKEN)
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "wrong")
    with pytest.raises(Exception, match="403"):
        reload_service.fn(service)


def _add_new_listener(project: Path, store: FeedbackStore) -> dict[str, Any]:
    """A listener unknown to the champion likes six artists; the flow exports them (the cursor moves)."""
    _add(store, [("brand-new", f"a{i:02d}", "like") for i in range(6)] + [("u03", "a05", "play")], "second-")
    return _run(project, store)


def _force_a_win(project: Path, store: FeedbackStore) -> tuple[Retrained, dict[str, Any]]:
    """Retrain on every stored event and promote the challenger, whatever the tiny model scored."""

    @flow
    def forced_win(root: str, events: pd.DataFrame) -> tuple[Retrained, dict[str, Any]]:
        outcome = retrain_and_evaluate(root, events)
        # A clear win on every rule: the champion's numbers, ndcg@10 + 1.
        winner = {
            "metrics": dict(outcome.champion["metrics"]),
            "groups": outcome.champion["groups"],
            "bias_strength": outcome.challenger["bias_strength"],
        }
        winner["metrics"]["ndcg@10"] += 1.0
        # Its paired lead too: +1 for every listener, so the interval's bound is +1 as well.
        lead = dataclasses.replace(outcome.lead, delta=1.0, delta_low=1.0, delta_high=1.0)
        outcome = dataclasses.replace(outcome, challenger=winner, lead=lead)
        return outcome, gate_and_promote(root, outcome)

    result: tuple[Retrained, dict[str, Any]] = forced_win(str(project), store.export_frame(None))
    return result


def test_a_winning_challenger_is_packaged_with_its_feedback_and_promoted(
    prefect_harness: None, project: Path, store: FeedbackStore
) -> None:
    _add_new_listener(project, store)
    before = registry.champion()

    outcome, decision = _force_a_win(project, store)

    champion = registry.load_artifact("champion")
    assert decision["promote"] and champion.tag == decision["model_tag"] != (before.tag if before else None)
    # Both were measured as served, at the champion's strength, and the new champion is served at it too.
    assert outcome.champion["bias_strength"] == champion.bias_strength == CHAMPION_STRENGTH
    assert champion.user_ids == outcome.split.user_ids and "brand-new" in champion.user_ids
    row = champion.user_ids.index("brand-new")
    assert champion.known[row].nnz > 0  # the packaged known listens include the merged feedback
    assert champion.model.n_users == len(champion.user_ids)


def test_the_next_run_starts_from_the_retrained_champion(
    prefect_harness: None, project: Path, store: FeedbackStore
) -> None:
    _add_new_listener(project, store)
    _force_a_win(project, store)
    assert "brand-new" in registry.load_artifact("champion").user_ids
    _add(store, [("brand-new", "a07", "play"), ("u04", "a01", "like"), ("u05", "a02", "play")], "third-")

    summary = _run(project, store)

    assert summary["warm_start"] is True  # the listener added last time is no longer new
    assert summary["merge"]["new_users"] == []
    assert summary["events"] == 3


def test_events_of_a_refused_run_and_its_holdout_are_trained_on_next_time(
    prefect_harness: None, project: Path, store: FeedbackStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = registry.load_artifact("champion")
    split = load_split(project / "data/split")
    cold = {champion.item_ids[i] for i in split.cold_items}

    def new_pairs(user: str, n: int) -> list[tuple[str, str]]:
        row = champion.known[champion.user_index[user]]
        fresh = [i for i in champion.item_ids if i not in cold and row[0, champion.item_index[i]] == 0]
        return [(user, item) for item in fresh[:n]]

    refused = [pair for user in ("u06", "u07", "u08") for pair in new_pairs(user, 3)]
    _add(store, [(user, item, "like") for user, item in refused], "refused-")
    force_feedback_gate(monkeypatch, promote=False)
    first = _run(project, store)
    assert not first["promote"] and first["n_holdout_events"] > 0  # some of them were only a test

    later = new_pairs("u09", 1)
    _add(store, [(user, item, "play") for user, item in later], "later-")
    force_feedback_gate(monkeypatch, promote=True)
    second = _run(project, store)

    assert second["promote"] and second["events"] == len(later)
    assert second["merge"]["n_earlier_events"] >= len(refused)
    after = registry.load_artifact("champion")
    for user, item in [*refused, *later]:  # nothing was lost: not the refused run, not its holdout
        assert after.known[after.user_index[user], after.item_index[item]] > 0, (user, item)


@pytest.fixture
def songs_project(tmp_path: Path, own_registry: Path) -> Path:
    """The synthetic project as a song data set (params.yaml: spotify-songs), with its own champion."""
    root = tmp_path / "retrain-songs"
    built = build_project(root / "data")
    settings = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    settings["dataset"]["name"] = "spotify-songs"
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    subprocess.run([dvc_executable(), "init", "--no-scm", "-q"], cwd=root, check=True)
    tag = built.save(0.1, own_registry, params_dict={"seed": 0, "dataset": {"name": "spotify-songs"}})
    registry.promote(tag, home=own_registry)
    return root


def test_a_champion_served_by_the_ranker_is_retrained_into_a_ranker_that_knows_the_feedback(
    prefect_harness: None, project: Path, store: FeedbackStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = project / "data"
    split = load_split(data / "split")
    features = without_identity(load_item_features(data / "features"), split.cold_items)
    params = Params.model_validate(
        {
            "train": {
                "itemknn": {"neighbours": 10},
                "ranker": {"generators": [HYBRID, "most_popular", "itemknn"], "min_child_samples": 5},
            }
        }
    )
    ranker = TwoStageRanker(params).learn(split.train_full, features.matrix, holdout=split.valid)
    ranker.use_generators({HYBRID: load_recommender(model_file(HYBRID, data / "models"))})
    ranker.save(model_file(RANKER, data / "models"))
    tag = registry.save_candidate(
        data / "models", data / "features", data / "split", {"ndcg@10": 0.1}, params_dict={},
        dvc_lock_hash="x", git_commit="x", prepared_dir=data / "prepared", source_model=RANKER,
    )  # fmt: skip
    registry.promote(tag)
    force_feedback_gate(monkeypatch, promote=True)

    summary = _add_new_listener(project, store)

    assert summary["promote"] and summary["served_model"] == RANKER
    artifact = registry.load_artifact("champion")
    assert artifact.tag == summary["model_tag"] != tag and artifact.served_model == RANKER
    assert isinstance(artifact.ranker, TwoStageRanker) and artifact.ranker.n_users == len(artifact.user_ids)
    assert artifact.user_ids[-1] == "brand-new" and artifact.ranked is not None
    # The same booster; its hybrid is the retrained one, and the new listener's likes are listens it knows.
    assert artifact.ranker.importance == ranker.importance
    assert artifact.ranker.generators[HYBRID].n_users == len(artifact.user_ids)
    state = ServingState(artifact)
    row = state.user_index["brand-new"]
    listed = {artifact.item_ids[i] for i in state.ranked_top(row)[0] if i >= 0}
    known = {artifact.item_ids[i] for i in state.known_items(row)}
    # Their likes (but the latest, held out to measure) are listens now: known, so never listed.
    assert known and known <= {f"a{i:02d}" for i in range(6)} and listed and not known & listed


def test_retraining_on_a_song_data_set_promotes_within_that_data_set(
    prefect_harness: None, songs_project: Path
) -> None:
    before = registry.champion(dataset="spotify-songs")
    assert before is not None and before.tag.startswith("music_recommender_spotify_songs:")
    with FeedbackStore(f"sqlite:///{songs_project / 'data/feedback/feedback.db'}") as store:
        _add(store, [("brand-new", f"a{i:02d}", "like") for i in range(6)] + [("u03", "a05", "play")], "s-")
        _, decision = _force_a_win(songs_project, store)

    after = registry.champion(dataset="spotify-songs")
    assert decision["promote"] and after is not None and after.tag == decision["model_tag"] != before.tag
    assert after.tag.startswith("music_recommender_spotify_songs:")
    assert after.metadata["params"]["dataset"]["name"] == "spotify-songs"
    assert "brand-new" in registry.load_artifact(dataset="spotify-songs").user_ids
    # The artists' model name was never touched: no artist champion, no artist version.
    assert registry.champion() is None and registry.list_models() == []
    assert [info.stage for info in registry.list_models(dataset="spotify-songs")] == ["retired", "champion"]


def test_the_admin_token_is_never_stored_by_prefect(
    prefect_harness: None, project: Path, store: FeedbackStore, service: str
) -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL

    force_promotion = [("u01", "a03", "like"), ("u02", "a04", "like"), ("u03", "a05", "play")]
    _add(store, force_promotion, "token-")
    summary = retraining_flow(project_dir=str(project), feedback_url=store.url, service_url=service)

    api = str(PREFECT_API_URL.value())
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200, "sort": "ID_DESC"}, timeout=30).json()
    tasks = httpx.post(f"{api}/task_runs/filter", json={"limit": 200, "sort": "ID_DESC"}, timeout=30).json()
    stored = json.dumps([run["parameters"] for run in runs]) + json.dumps(tasks)
    assert runs and service in stored  # what is stored is what the test reads
    assert ADMIN_TOKEN not in stored
    if summary["promote"]:
        assert _ReloadHandler.calls[-1] == ("/admin/reload", ADMIN_TOKEN)  # it was sent all the same
