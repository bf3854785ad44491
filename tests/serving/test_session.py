"""Within the session: a listener's events since the model was packaged change their next list, for known
listeners and the page's anonymous ones, on every worker; older events, other listeners and ``session: false``
leave the list as trained."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from recsys import registry
from recsys.config import SessionParams
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import FeedbackStore
from recsys.serving import logic
from recsys.serving.feedback_follower import FeedbackFollower
from recsys.serving.schemas import NewListenerRequest, RecommendRequest
from recsys.serving.session import SessionEvent, SessionIndex, adapt, session_of
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import Signals
from recsys.serving.state import ServingState
from tests.helpers import Server, is_rock
from tests.serving.conftest import ITEM_IDS


@pytest.fixture(scope="module")
def state(champion_home: tuple[Path, str]) -> ServingState:
    return ServingState(registry.load_artifact("champion", home=champion_home[0]))


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _events(*pairs: tuple[str, str], at: float | None = None) -> tuple[SessionEvent, ...]:
    when = _now() if at is None else at
    return tuple(SessionEvent(n + 1, item, event, when) for n, (item, event) in enumerate(pairs))


def _ids(answer: dict) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


def _rock(item_id: str) -> bool:
    return is_rock(int(item_id[1:]))  # the tiny catalogue's ids are a00, a01, ...


def _pop_share(ids: list[str]) -> float:
    return float(np.mean([not _rock(i) for i in ids]))


def _pop_items_unheard(state: ServingState, user: int, n: int) -> list[str]:
    heard = {state.item_ids[i] for i in state.known_items(user).tolist()}
    return [i for i in sorted(state.item_ids) if not _rock(i) and i not in heard][:n]


def test_adapt_moves_toward_likes_and_away_from_skips_keeping_the_length() -> None:
    unit = np.eye(3, dtype=np.float32)
    vector = np.array([3.0, 0.0, 0.0, 0.2, 1.0], dtype=np.float32)
    toward = adapt(vector, unit, np.array([1]), np.array([1.0]), step=0.5)
    away = adapt(vector, unit, np.array([2]), np.array([-1.0]), step=0.5)
    assert toward[1] > 0 and away[2] < 0  # toward item 1, away from item 2
    for moved in (toward, away):
        assert np.linalg.norm(moved[:3]) == pytest.approx(3.0, rel=1e-5)
        assert moved[3:].tolist() == pytest.approx([0.2, 1.0])
    assert adapt(vector, unit, np.array([], dtype=np.int64), np.array([]), step=0.5) is vector
    assert np.array_equal(adapt(vector, unit, np.array([1]), np.array([1.0]), step=0.0), vector)


def test_only_events_after_packaging_of_known_items_count() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    events = (
        SessionEvent(1, "a", "like", 50.0),  # before the model: the retraining's to learn
        SessionEvent(2, "b", "skip", 150.0),
        SessionEvent(3, "zz", "like", 160.0),  # not in the catalogue
        SessionEvent(4, "c", "like", 170.0),
    )
    session = session_of(events, index, SessionParams(), packaged_at=100.0)
    assert session.items.tolist() == [1, 2] and session.weights.tolist() == pytest.approx([-0.3, 1.0])
    assert session.exclude.tolist() == [1, 2] and session.liked.tolist() == [2]
    kept_shown = session_of(events, index, SessionParams(exclude_shown=False), packaged_at=100.0)
    assert kept_shown.exclude.size == 0
    assert session_of(events, index, SessionParams(enabled=False), 100.0).events == 0
    assert session_of(events, index, SessionParams(max_events=1), 100.0).items.tolist() == [2]


def test_the_index_keeps_each_listeners_newest_events_once() -> None:
    index = SessionIndex(max_events=2, max_listeners=2)
    index.extend([(1, "u1", "a", "like", 1.0), (2, "u1", "b", "skip", 2.0), (3, "u2", "a", "play", 3.0)])
    index.extend([(2, "u1", "b", "skip", 2.0), (4, "u1", "c", "like", 4.0)])  # id 2 read again
    assert [e.item for e in index.get("u1") or ()] == ["b", "c"]
    assert index.get("nobody") == () and not index.overflow
    index.extend([(5, "u3", "a", "like", 5.0)])  # a third listener: the index is full
    assert index.overflow and index.get("u3") is None and index.get("nobody") is None
    index.drop("u1")
    assert index.get("u1") is None  # not held (the index overflowed): ask the store


def test_a_known_listeners_likes_pull_the_next_list_and_session_false_ignores_them(
    state: ServingState,
) -> None:
    user_id = "u00"  # even: a rock listener
    user = state.user_index[user_id]
    request = RecommendRequest(user_id=user_id, k=6)
    before = logic.recommend(state, request, frozenset())
    assert before["session_events"] == 0
    liked = _pop_items_unheard(state, user, 3)
    events = _events(*((item, "like") for item in liked))
    after = logic.recommend(state, request, frozenset(), events)
    assert after["session_events"] == 3
    assert not set(_ids(after)) & set(liked)  # what they reacted to leaves the list
    assert _pop_share(_ids(after)) > _pop_share(_ids(before))
    assert any(item["reason"].startswith("because you like") for item in after["items"])
    as_trained = logic.recommend(state, request.model_copy(update={"session": False}), frozenset(), events)
    assert _ids(as_trained) == _ids(before) and as_trained["session_events"] == 0
    old = _events(*((item, "like") for item in liked), at=state.packaged_at - 60)
    assert _ids(logic.recommend(state, request, frozenset(), old)) == _ids(before)
    # Adapted lists are ranked afresh, never cached: a later request without events is unchanged.
    assert _ids(logic.recommend(state, request, frozenset())) == _ids(before)


def test_skips_push_the_list_away(state: ServingState) -> None:
    user_id = "u00"
    request = RecommendRequest(user_id=user_id, k=6)
    before = _ids(logic.recommend(state, request, frozenset()))
    skipped = before[:3]
    after = _ids(logic.recommend(state, request, frozenset(), _events(*((i, "skip") for i in skipped))))
    assert not set(after) & set(skipped)
    params = state.session_params
    vector = state.user_vectors[state.user_index[user_id]]
    moved = state.adapted(vector, state.session(_events(*((i, "skip") for i in skipped))), 8)
    rows = [state.item_index[i] for i in skipped]
    assert params.skip < 0
    assert (state.item_vectors[rows] @ moved).mean() < (state.item_vectors[rows] @ vector).mean()


def test_a_new_listeners_stored_likes_count_without_the_page_resending_them(state: ServingState) -> None:
    rock = [state.names[state.item_index[i]] for i in sorted(state.item_ids) if _rock(i)][:2]
    request = NewListenerRequest(favourites=rock, k=6, user_id="page-visitor")
    before = logic.new_listener(state, request, frozenset())
    pop = [i for i in sorted(state.item_ids) if not _rock(i)][:4]
    after = logic.new_listener(state, request, frozenset(), _events(*((i, "like") for i in pop)))
    assert before["session_events"] == 0 and after["session_events"] == 4
    assert not set(_ids(after)) & set(pop)
    assert _pop_share(_ids(after)) > _pop_share(_ids(before))
    off = logic.new_listener(
        state, request.model_copy(update={"session": False}), frozenset(), _events(("a10", "like"))
    )
    assert _ids(off) == _ids(before)


def _feedback(user: str, item: str, event: str, when: datetime | None = None) -> FeedbackEvent:
    return FeedbackEvent(
        user_id=user,
        item_id=item,
        event=event,
        timestamp=when or datetime.now(UTC),
        event_id=str(uuid.uuid4()),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _worker(tmp_path: Path, url: str, machine: str, clock: Clock) -> FeedbackFollower:
    settings = ServingSettings(
        home=tmp_path, feedback_url=url, admin_token=None, runtime_dir=tmp_path / machine, session_window_h=24
    )
    return FeedbackFollower(settings, Signals(settings.runtime_dir), clock=clock)


def test_every_worker_learns_a_listeners_events_and_forgets_them_on_erasure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with FeedbackStore(url) as store:
        old = datetime.now(UTC) - timedelta(days=3)  # outside the 24-hour window
        store.add_events([_feedback("u1", "a1", "like", old), _feedback("u2", "a2", "dislike")])
    clock = Clock()
    here, there = _worker(tmp_path, url, "m1", clock), _worker(tmp_path, url, "m1", clock)
    remote = _worker(tmp_path, url, "m2", clock)
    for worker in (here, there, remote):
        worker.sync()
    assert here.session("u1") == () and [e.item for e in here.session("u2") or ()] == ["a2"]
    here.add([_feedback("u1", "a3", "like"), _feedback("u1", "a4", "skip")])
    assert [e.event for e in here.session("u1") or ()] == ["like", "skip"]  # before the POST returns
    assert not there.session_signalled()  # its index was read less than SESSION_SYNC_MIN_S ago
    clock.now += 1.0
    assert not there.signalled() and there.session_signalled() and there.session("u1") == ()
    there.sync_sessions()  # what the app does before answering
    assert [e.item for e in there.session("u1") or ()] == ["a3", "a4"] and not there.session_signalled()
    remote.sync()  # another machine: by its periodic sync
    assert [e.item for e in remote.session("u1") or ()] == ["a3", "a4"]
    here.delete_user("u1", "test erasure")  # u1 never disliked anything: found by pseudonym all the same
    assert here.session("u1") == ()
    there.sync_signalled()
    remote.sync()
    assert there.session("u1") == () and remote.session("u1") == ()


def test_a_like_changes_the_next_list_on_the_running_service(server: Server) -> None:
    user_id = "u04"

    def ask() -> dict:
        answer = server.client.post("/recommend", json={"user_id": user_id, "k": 5})
        assert answer.status_code == 200
        return answer.json()

    before = ask()
    assert before["session_events"] == 0
    pop = [item for item in ITEM_IDS if not _rock(item)]
    liked = [item for item in pop if item not in _ids(before)][:3]
    events = [
        {"user_id": user_id, "item_id": item, "event": "like", "event_id": str(uuid.uuid4())}
        for item in liked
    ]
    assert server.client.post("/feedback", json={"events": events}).status_code == 200
    for _ in range(6):  # two workers: each one's next answer knows the likes
        after = ask()
        assert after["session_events"] == 3 and _ids(after) != _ids(before)
        assert not set(_ids(after)) & set(liked)
    plain = server.client.post("/recommend", json={"user_id": user_id, "k": 5, "session": False}).json()
    assert _ids(plain) == _ids(before)


def test_a_sessions_cached_list_is_a_full_ranking_until_the_next_event(state: ServingState) -> None:
    user = state.user_index["u00"]
    last, other = sorted(state.item_ids)[-1], sorted(state.item_ids)[-2]
    events = _events((last, "like"), (state.item_ids[state.known_items(user)[0]], "skip"))
    session = state.session(events)
    vector = state.adapted(state.user_vectors[user], session, len(state.known_items(user)))
    listened = np.concatenate([state.known_items(user), session.exclude])
    for k in (1, 5, 20):
        expected = state.rank(vector, k, listened)
        got = state.rank_session(user, session, k)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-5)
    later = state.session((*events, SessionEvent(99, other, "like", _now())))
    assert later.key != session.key
    assert state.item_index[other] not in state.rank_session(user, later, 20)[0].tolist()


def test_a_full_read_keeps_each_listeners_newest_and_back_dated_events_never_hold_the_cursor(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    since = datetime.now(UTC) - timedelta(hours=1)
    with FeedbackStore(url) as store:
        store.add_events([_feedback("u1", f"a{n:02d}", "play") for n in range(12)])
        store.add_events([_feedback("u2", "a00", "like")])
        rows, cursor = store.session_events_since(0, since, per_user=5)
        assert [row[2] for row in rows if row[1] == "u1"] == [f"a{n:02d}" for n in range(7, 12)]
        assert [row[1] for row in rows].count("u2") == 1 and cursor == 13
        store.add_events([_feedback("u3", "a01", "like", datetime.now(UTC) - timedelta(days=2))])
        rows, cursor = store.session_events_since(cursor, since)
        assert rows == [] and cursor == 14  # outside the window, yet read past
    index = SessionIndex(max_events=5, max_listeners=1)
    index.replace([(1, "old", "a", "like", 1.0), (2, "new", "b", "like", 2.0)])
    assert index.get("new") is not None and index.get("old") is None and index.overflow
