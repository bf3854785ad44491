"""Experiments on the running service over real HTTP: A/B, interleaving and shadow with a second model.

Every request goes on a new connection so that both worker processes answer (an experiment started on
one worker must reach the other).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys import registry
from recsys.experiments.design import arm_of, bucket
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import Served
from tests.helpers import ADMIN_TOKEN, Project, Server, start_server, stop_server, wait_for
from tests.serving.conftest import build_project

pytestmark = pytest.mark.slow
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
USERS = [f"u{n:02d}" for n in range(40)]


@pytest.fixture(scope="module")
def experiment_server(
    champion_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str, str, Path]]:
    """The service on the champion, a challenger (another seed) saved beside it, and the feedback db path."""
    home, champion = champion_home
    other: Project = build_project(tmp_path_factory.mktemp("challenger-project"), seed=7)
    challenger = registry.save_candidate(
        other.models, other.features, other.split, {"ndcg@10": 0.4}, params_dict={"seed": 7},
        dvc_lock_hash="unknown", git_commit="unknown", prepared_dir=other.prepared, top_tags=3, home=home,
    )  # fmt: skip
    work = tmp_path_factory.mktemp("experiment-service")
    server = start_server(home, work, {"RECSYS_SERVED_LOG_MAX_PER_S": "1000"})
    yield server, champion, challenger, work / "feedback.db"
    server.client.post("/admin/experiment", json={"mode": "off"}, headers=ADMIN)
    stop_server(server)


def _recommend(server: Server, user: str) -> dict[str, Any]:
    answer = server.client.post("/recommend", json={"user_id": user, "k": 5}, headers={"Connection": "close"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _start(server: Server, **design: Any) -> None:
    answer = server.client.post("/admin/experiment", json=design, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    # Every later request, on either worker, runs it (a worker syncs before answering).
    assert all(_arm_seen(server, design["mode"]) for _ in range(16))


def _arm_seen(server: Server, mode: str) -> bool:
    arm = _recommend(server, "u01").get("arm")
    return {
        "off": arm is None,
        "shadow": arm is None,
        "ab": arm is not None,
        "interleave": arm == "interleave",
    }[mode]


def test_the_admin_api_refuses_bad_designs_and_keeps_the_running_one(
    experiment_server: tuple[Server, str, str, Path],
) -> None:
    server, _, challenger, _ = experiment_server
    _start(server, mode="off")
    assert server.client.post("/admin/experiment", json={"mode": "ab"}).status_code == 401
    missing = server.client.post("/admin/experiment", json={"mode": "ab", "share": 0.5}, headers=ADMIN)
    assert missing.status_code == 422 and "challenger" in missing.text
    unknown = {"mode": "ab", "challenger": "music_recommender:nope", "share": 0.5}
    refused = server.client.post("/admin/experiment", json=unknown, headers=ADMIN)
    assert refused.status_code == 409 and "nope" in refused.json()["error"]
    assert (
        server.client.post("/admin/experiment", json={"mode": "ab", "share": 2}, headers=ADMIN).status_code
        == 422
    )
    assert all(
        server.client.get("/admin/experiment", headers=ADMIN).json()["mode"] == "off" for _ in range(4)
    )
    assert all(_recommend(server, user).get("arm") is None for user in USERS[:8])
    assert challenger.startswith("music_recommender")


def test_ab_gives_each_listener_a_sticky_arm_and_its_model_and_fills_in_the_feedback_arm(
    experiment_server: tuple[Server, str, str, Path],
) -> None:
    server, champion, challenger, db = experiment_server
    _start(server, mode="ab", challenger=challenger, share=0.5, salt="test-ab")
    described = server.client.get("/admin/experiment", headers=ADMIN).json()
    assert (
        described["mode"] == "ab"
        and described["challenger"] == challenger
        and described["champion"] == champion
    )
    arms = {}
    for user in USERS:
        first, again = _recommend(server, user), _recommend(server, user)
        assert first["arm"] == again["arm"] == arm_of(user, "test-ab", 0.5)  # sticky, on either worker
        assert first["model_version"] == (challenger if first["arm"] == "challenger" else champion)
        arms[user] = first["arm"]
    assert set(arms.values()) == {"champion", "challenger"}
    user = next(u for u, arm in arms.items() if arm == "challenger")
    event = {"user_id": user, "item_id": _recommend(server, user)["items"][0]["item_id"], "event": "like"}
    stored = server.client.post("/feedback", json={"events": [event | {"event_id": "ab-1"}]})
    assert stored.status_code == 200 and stored.json()["inserted"] == 1
    with FeedbackStore(f"sqlite:///{db}", create=False) as store:
        frame = store.export_frame()
    assert frame.loc[frame["event_id"] == "ab-1", "arm"].tolist() == ["challenger"]


def test_interleaving_drafts_one_list_from_both_models_and_logs_each_slots_model(
    experiment_server: tuple[Server, str, str, Path],
) -> None:
    server, _, challenger, db = experiment_server
    _start(server, mode="interleave", challenger=challenger, salt="test-il")
    credited = set()
    for user in USERS[:20]:
        answer = _recommend(server, user)
        assert answer["arm"] == "interleave" and answer["challenger_version"] == challenger
        ids = [item["item_id"] for item in answer["items"]]
        assert len(ids) == len(set(ids)) == 5
        credited |= {item["model"] for item in answer["items"]}
    assert credited == {"champion", "challenger"}

    def logged() -> Any:
        with FeedbackStore(f"sqlite:///{db}", create=False) as store:
            served = store.served_frame()
        return served[served[Served.ARM] == "interleave"]

    assert wait_for(lambda: len(logged()) >= 20, timeout_s=10)
    row = logged().iloc[-1]
    assert row[Served.CHALLENGER] == challenger
    assert len(row[Served.CREDITS]) == len(row[Served.ITEMS]) and set(row[Served.CREDITS]) <= {
        "champion",
        "challenger",
    }


def test_interleaving_a_share_of_the_traffic_leaves_the_other_listeners_with_the_champion(
    experiment_server: tuple[Server, str, str, Path],
) -> None:
    server, champion, challenger, _ = experiment_server
    design = {"mode": "interleave", "challenger": challenger, "salt": "il-part", "traffic": 0.5}
    assert server.client.post("/admin/experiment", json=design, headers=ADMIN).status_code == 200
    inside = set()
    for user in USERS:
        answer = _recommend(server, user)
        if bucket(user, "il-part") < 0.5:
            assert answer["arm"] == "interleave", user
            inside.add(user)
        else:
            assert answer.get("arm") is None and answer["model_version"] == champion, user
            assert all("model" not in item for item in answer["items"])
    assert 0 < len(inside) < len(USERS)
    refused = {"mode": "interleave", "challenger": challenger, "traffic": 0}
    assert server.client.post("/admin/experiment", json=refused, headers=ADMIN).status_code == 422
    _start(server, mode="off")


def test_shadow_answers_with_the_champion_and_logs_the_challengers_list_unseen(
    experiment_server: tuple[Server, str, str, Path],
) -> None:
    server, champion, challenger, db = experiment_server
    _start(server, mode="shadow", challenger=challenger)
    answers = [_recommend(server, user) for user in USERS[:10]]
    assert all(a["model_version"] == champion and a.get("arm") is None for a in answers)

    def shadows() -> Any:
        with FeedbackStore(f"sqlite:///{db}", create=False) as store:
            served = store.served_frame()
        return served[served[Served.ARM] == "shadow"]

    assert wait_for(lambda: len(shadows()) >= 10, timeout_s=10)
    assert set(shadows()[Served.MODEL_VERSION]) == {challenger}
    _start(server, mode="off")
    assert all(_recommend(server, user).get("arm") is None for user in USERS[:6])


def test_a_restarted_service_resumes_the_running_experiment(
    champion_home: tuple[Path, str], experiment_server: tuple[Server, str, str, Path], tmp_path: Path
) -> None:
    home, champion = champion_home
    _, _, challenger, _ = experiment_server
    server = start_server(home, tmp_path, {})
    try:
        _start(server, mode="ab", challenger=challenger, share=0.5, salt="restart")
    finally:
        stop_server(server)
    again = start_server(home, tmp_path, {})  # the same runtime folder, as after a crash or a deploy
    try:
        described = again.client.get("/admin/experiment", headers=ADMIN).json()
        assert (described["mode"], described["challenger"], described["salt"]) == (
            "ab",
            challenger,
            "restart",
        )
        for user in USERS[:12]:
            answer = _recommend(again, user)
            assert answer["arm"] == arm_of(user, "restart", 0.5)
            assert answer["model_version"] == (challenger if answer["arm"] == "challenger" else champion)
    finally:
        again.client.post("/admin/experiment", json={"mode": "off"}, headers=ADMIN)
        stop_server(again)
