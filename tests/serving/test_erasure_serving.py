"""The running service honours erasures and revocations without a reload call, and loads only what it may.

- a listener erased through one worker is answered as unknown by every worker whose model holds their
  feedback (and by a second service sharing the store, at its periodic sync), while the others are not;
- lists served just before an erasure, still queued in a worker, never reach the store;
- a model the retraining flow revoked stops being served (champion reloaded, experiment stopped) with no
  ``POST /admin/reload``;
- a restart loads the registry's champion, never a stale announced tag, and never another data set's model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys import registry
from recsys.experiments.design import CHALLENGER_ARM, CHAMPION_ARM, arm_of
from recsys.feedback.announcements import RELOAD, announcement_key
from recsys.feedback.store import FeedbackStore
from tests.helpers import ADMIN_TOKEN, Project, Server, start_server, stop_server, wait_for
from tests.serving.conftest import save_champion

pytestmark = pytest.mark.slow
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
SYNC_BOUND_S = 20.0  # the periodic sync runs every 5 s; the workers may be slow beside other tests
FEEDBACK_USER, OTHER_USER = "u00", "u02"


def _package(
    project: Project, home: Path, feedback_users: tuple[str, ...] = (), dataset: str | None = None
) -> str:
    return save_champion(project, home, dataset, feedback_users, promote=False)


@pytest.fixture
def home(project: Project, tmp_path: Path) -> tuple[Path, str]:
    """A store of this test's own whose champion trained on ``u00``'s feedback."""
    path = tmp_path / "bentoml"
    tag = _package(project, path, (FEEDBACK_USER,))
    registry.promote(tag, home=path)
    return path, tag


@pytest.fixture
def server(home: tuple[Path, str], tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "a").mkdir()
    running = start_server(home[0], tmp_path / "a", {})
    yield running
    stop_server(running)


def _answers(server: Server, user: str, tries: int = 12) -> list[dict[str, Any]]:
    """``/recommend`` answers for ``user``, each on a new connection so both workers answer."""
    return [
        server.client.post(
            "/recommend", json={"user_id": user, "k": 3}, headers={"Connection": "close"}
        ).json()
        for _ in range(tries)
    ]


def _personal(server: Server, user: str) -> set[bool]:
    return {not answer["cold_start"] for answer in _answers(server, user)}


def test_an_erased_listener_is_unknown_to_every_model_holding_their_feedback(
    server: Server, home: tuple[Path, str], tmp_path: Path
) -> None:
    (tmp_path / "b").mkdir()
    elsewhere = start_server(
        home[0], tmp_path / "b", {"RECSYS_FEEDBACK_URL": f"sqlite:///{tmp_path / 'a' / 'feedback.db'}"}
    )
    try:
        assert _personal(server, FEEDBACK_USER) == {True} == _personal(elsewhere, FEEDBACK_USER)

        erased = server.client.delete(f"/users/{FEEDBACK_USER}/feedback", headers=ADMIN)

        assert erased.status_code == 200
        assert _personal(server, FEEDBACK_USER) == {False}  # every worker of this service, at once
        assert _personal(server, OTHER_USER) == {True}  # the model holds no feedback of theirs
        assert wait_for(lambda: _personal(elsewhere, FEEDBACK_USER) == {False}, SYNC_BOUND_S, 0.5)
        assert _personal(elsewhere, OTHER_USER) == {True}
    finally:
        stop_server(elsewhere)


def test_lists_queued_before_an_erasure_never_reach_the_store(server: Server, tmp_path: Path) -> None:
    for _ in range(5):  # queued in the workers' served logs, written about once a second
        assert server.client.post("/recommend", json={"user_id": OTHER_USER, "k": 3}).status_code == 200
    assert server.client.delete(f"/users/{OTHER_USER}/feedback", headers=ADMIN).status_code == 200
    time.sleep(3.0)  # every queue flushed
    assert server.client.post("/recommend", json={"user_id": "u04", "k": 3}).status_code == 200
    with FeedbackStore(f"sqlite:///{tmp_path / 'a' / 'feedback.db'}", create=False) as store:
        assert wait_for(lambda: store.count_served() > 0, 10.0, 0.2)
        assert OTHER_USER not in set(store.served_frame()["user_id"])


def test_a_revoked_champion_or_challenger_stops_being_served_without_a_reload(
    server: Server, project: Project, home: tuple[Path, str], tmp_path: Path
) -> None:
    old = home[1]
    challenger = _package(project, home[0], (FEEDBACK_USER,))
    design = {"mode": "ab", "challenger": challenger, "share": 0.5, "salt": "revoke-test"}
    started = server.client.post("/admin/experiment", json=design, headers=ADMIN)
    assert started.status_code == 200, started.text
    # Listeners of both arms (the salt is fixed, so the test knows them).
    users = [f"u{n:02d}" for n in range(40)]
    arms = {arm_of(user, "revoke-test", 0.5): user for user in users}
    assert set(arms) == {CHAMPION_ARM, CHALLENGER_ARM}
    new = _package(project, home[0])
    registry.promote(new, home=home[0])  # promoted, and no reload call reaches the service
    served = {a["model_version"] for user in arms.values() for a in _answers(server, user, 4)}
    assert served == {old, challenger}  # the A/B arms

    with FeedbackStore(f"sqlite:///{tmp_path / 'a' / 'feedback.db'}", create=False) as store:
        store.revoke_models([old, challenger], "holds the feedback of an erased listener")

    def moved_on() -> bool:
        answers = [a for user in arms.values() for a in _answers(server, user, 4)]
        return {a["model_version"] for a in answers} == {new} and not any(a.get("arm") for a in answers)

    assert wait_for(moved_on, SYNC_BOUND_S, 0.5)
    described = server.client.get("/admin/experiment", headers=ADMIN).json()
    assert "revoked" in (described["error"] or "")
    refused = server.client.post(
        "/admin/experiment", json={"mode": "ab", "challenger": challenger, "share": 0.5}, headers=ADMIN
    )
    assert refused.status_code == 409 and "revoked" in refused.json()["error"]


def test_a_restart_loads_the_champion_and_never_another_data_sets_model(
    project: Project, home: tuple[Path, str], tmp_path: Path
) -> None:
    path, champion = home
    songs = _package(project, path, dataset="spotify-songs")
    registry.promote(songs, home=path, dataset="spotify-songs")
    older = _package(project, path)
    (tmp_path / "c").mkdir()
    key = announcement_key(registry.model_name(), RELOAD)
    with FeedbackStore(f"sqlite:///{tmp_path / 'c' / 'feedback.db'}") as store:
        store.announce(key, older)  # left by an earlier run of the service

    server = start_server(path, tmp_path / "c", {})
    try:
        assert {a["model_version"] for a in _answers(server, "u04")} == {champion}
        # Another data set's model announced as this service's (a mistaken publish, say) is refused.
        with FeedbackStore(f"sqlite:///{tmp_path / 'c' / 'feedback.db'}") as store:
            store.announce(key, songs)
        time.sleep(3.0)
        assert {a["model_version"] for a in _answers(server, "u04")} == {champion}
        assert "not a model of this service's data set" in server.output()
    finally:
        stop_server(server)
