"""Exploration with logged propensities: the logged probabilities are the frequencies the policy shows items
with, the service's lists carry them, and the served log keeps them beside the arm."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys.cli.main import app
from recsys.config import ExploreParams
from recsys.experiments.replay import replayable
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import Served
from recsys.serving import exploration, logic
from recsys.serving.exploration import EXPLORE_REASON, EXPLORE_SHARE_ENV, Explorer, explore
from recsys.serving.schemas import RecommendRequest
from recsys.serving.settings import share_from_env
from recsys.serving.state import ServingState
from tests.helpers import Server, start_server, stop_server, wait_for

LIST, POOL = np.arange(10), np.arange(100, 130)


@pytest.mark.parametrize(("share", "slots"), [(0.1, 1), (0.3, 2), (1.0, 3)])
def test_each_logged_propensity_is_how_often_the_policy_shows_the_item(share: float, slots: int) -> None:
    rng = np.random.default_rng(7)
    runs = 20_000
    shown: Counter[int] = Counter()
    logged: dict[int, set[float]] = {}
    for _ in range(runs):
        out = explore(
            LIST, LIST * 1.0, POOL, POOL * 0.0, share=share, slots=slots, draw=rng.random(), rng=rng
        )
        assert len(set(out.indices.tolist())) == len(LIST)  # never an item twice
        assert out.explored == (tuple(range(10 - slots, 10)) if set(out.indices) - set(LIST) else ())
        for item, p in zip(out.indices.tolist(), out.propensities, strict=True):
            shown[item] += 1
            logged.setdefault(item, set()).add(p)
    assert all(len(p) == 1 for p in logged.values()), "an item's propensity depends on the draw"
    for item, count in shown.items():
        p = next(iter(logged[item]))
        tolerance = 4 * np.sqrt(p * (1 - p) / runs) + 1e-9
        assert abs(count / runs - p) <= tolerance, (item, count / runs, p)
    assert sum(shown[int(i)] for i in POOL) == pytest.approx(share * slots * runs, rel=0.05)


def test_no_share_an_empty_pool_or_a_list_of_one_never_explores() -> None:
    rng = np.random.default_rng(0)
    for pool, share, k in ((POOL, 0.0, 10), (np.empty(0, dtype=np.int64), 1.0, 10), (POOL, 1.0, 1)):
        out = explore(LIST[:k], LIST[:k] * 1.0, pool, pool * 0.0, share=share, slots=1, draw=0.0, rng=rng)
        assert out.indices.tolist() == LIST[:k].tolist() and out.explored == ()
        assert out.propensities == (1.0,) * k


def test_the_share_override_is_validated_and_replaces_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXPLORE_SHARE_ENV, "0.25")
    assert share_from_env(EXPLORE_SHARE_ENV) == 0.25
    assert Explorer(0.25).settings(ExploreParams(share=0.1, slots=2)) == ExploreParams(share=0.25, slots=2)
    assert Explorer(None).settings(ExploreParams(share=0.1)).share == 0.1
    for bad in ("1.5", "-0.1", "nan", "some"):
        monkeypatch.setenv(EXPLORE_SHARE_ENV, bad)
        with pytest.raises(ValueError, match=EXPLORE_SHARE_ENV):
            share_from_env(EXPLORE_SHARE_ENV)
    monkeypatch.setenv(EXPLORE_SHARE_ENV, " ")
    assert share_from_env(EXPLORE_SHARE_ENV) is None
    assert exploration.params_of({}) == ExploreParams()
    assert exploration.params_of({"params": {"explore": {"share": 0.5}}}).share == 0.5


def test_an_explored_list_shows_a_long_tail_item_of_the_listeners_own_candidates(
    champion_home: tuple[Path, str],
) -> None:
    home, tag = champion_home
    from recsys import registry

    state = ServingState(registry.load_artifact(tag, home=home))
    user = state.user_ids[0]
    request = RecommendRequest(user_id=user, k=5, session=False)
    plain = logic.recommend(state, request, set())
    always = Explorer(1.0, np.random.default_rng(3))
    explored = logic.recommend(state, request, set(), explorer=always)
    items = explored["items"]
    assert [i["item_id"] for i in items[:4]] == [i["item_id"] for i in plain["items"][:4]]
    last = items[-1]
    assert last["explored"] is True and last["reason"] == EXPLORE_REASON
    index = state.item_index[last["item_id"]]
    assert state.long_tail[index] and index not in set(state.known_items(state.row_of(user)).tolist())
    assert all(i["propensity"] == 1.0 for i in items[:4]) and 0 < last["propensity"] <= 1.0
    never = logic.recommend(state, request, set(), explorer=Explorer(0.0))
    assert never["items"] == plain["items"] and "propensity" not in never["items"][0]
    cold = logic.recommend(state, RecommendRequest(user_id="nobody-known", k=5), set(), explorer=always)
    assert cold["cold_start"] and "propensity" not in cold["items"][0]


@pytest.fixture(scope="module")
def exploring(champion_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service exploring every list it can (share 1), logging every list."""
    home, _ = champion_home
    env = {EXPLORE_SHARE_ENV: "1", "RECSYS_SERVED_LOG_MAX_PER_S": "1000"}
    running = start_server(home, tmp_path_factory.mktemp("exploring"), env)
    yield running
    stop_server(running)


@pytest.mark.slow
def test_the_service_explores_and_logs_each_items_propensity_beside_the_arm(
    exploring: Server, champion_home: tuple[Path, str]
) -> None:
    answer = exploring.client.post("/recommend", json={"user_id": "u00", "k": 5})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert items[-1].get("explored") is True and items[-1]["reason"] == EXPLORE_REASON
    assert [i["propensity"] for i in items[:4]] == [1.0] * 4 and 0 < items[-1]["propensity"] < 1
    cold = exploring.client.post("/recommend", json={"user_id": "stranger", "k": 5}).json()
    assert cold["cold_start"] and all("propensity" not in i for i in cold["items"])
    store_url = f"sqlite:///{exploring.log.parent / 'feedback.db'}"
    ids = [i["item_id"] for i in items]

    def both_logged() -> bool:  # written by each worker's thread; other tests of this server log u00 too
        served = store.served_frame()
        return (served[Served.USER] == "stranger").any() and any(
            logged == ids for logged in served.loc[served[Served.USER] == "u00", Served.ITEMS]
        )

    with FeedbackStore(store_url, create=False) as store:
        assert wait_for(both_logged, 30.0, 0.2)
        served = store.served_frame()
    mine = served[served[Served.USER] == "u00"]
    logged = mine[[row == ids for row in mine[Served.ITEMS]]].iloc[-1]
    assert logged[Served.PROPENSITIES] == [i["propensity"] for i in items]
    assert logged[Served.EXPLORED] == [4]
    stranger = served[served[Served.USER] == "stranger"].iloc[-1]
    assert stranger[Served.PROPENSITIES] is None and stranger[Served.EXPLORED] is None


@pytest.mark.slow
def test_replay_estimates_a_model_from_the_services_log_and_refuses_what_it_cannot(
    exploring: Server, champion_home: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, tag = champion_home
    monkeypatch.setenv("BENTOML_HOME", str(home))
    users = [f"u{n:02d}" for n in range(12)]
    for user in users:
        answer = exploring.client.post("/recommend", json={"user_id": user, "k": 5, "session": False})
        first = answer.json()["items"][0]["item_id"]
        event = {"event_id": f"e-{user}", "user_id": user, "item_id": first, "event": "like"}
        assert exploring.client.post("/feedback", json={"events": [event]}).status_code == 200
    store_url = f"sqlite:///{exploring.log.parent / 'feedback.db'}"
    with FeedbackStore(store_url, create=False) as store:
        assert wait_for(lambda: len(replayable(store.served_frame())) >= len(users), 30.0, 0.2)
    out = tmp_path / "replay.json"
    args = ["experiment", "replay", "--challenger", tag, "--feedback-url", store_url, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    estimate = json.loads(out.read_text())
    # Every list explores its last place, so the champion's fifth item is never shown: a fifth unsupported.
    assert estimate["challenger"] == tag and estimate["support"] == pytest.approx(0.8)
    assert estimate["ips"]["value"] > 0 and estimate["ips"]["low"] <= estimate["ips"]["value"]
    assert estimate["listeners"] >= len(users)

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    FeedbackStore(empty).close()
    refused = CliRunner().invoke(app, ["experiment", "replay", "--challenger", tag, "--feedback-url", empty])
    assert refused.exit_code != 0 and "no logged list carries propensities" in refused.output
    with FeedbackStore(empty) as store:
        store.revoke_models([tag], "test: holds an erased listener's feedback")
    revoked = CliRunner().invoke(app, ["experiment", "replay", "--challenger", tag, "--feedback-url", empty])
    assert revoked.exit_code != 0 and "revoked" in revoked.output
