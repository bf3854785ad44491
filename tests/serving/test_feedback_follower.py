"""The worker's in-memory dislike index: complete at start, never asks the store on a lookup, and brought
up to date by signals (workers of one service), by the periodic sync (other machines) and after erasures;
the erasures and model revocations each worker learns the same way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import FeedbackStore, FeedbackUnavailableError
from recsys.feedback.tables import EVENTS
from recsys.serving.feedback_follower import FeedbackFollower
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import Signals

SYNC_S, FULL_SYNC_S, RETRY_S = 5.0, 600.0, 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _event(user: str, item: str, event: str = "dislike") -> FeedbackEvent:
    return FeedbackEvent(
        user_id=user, item_id=item, event=event, timestamp=datetime.now(UTC), event_id=str(uuid.uuid4())
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with FeedbackStore(url) as store:
        store.add_events([_event(f"u{n}", "a1") for n in range(200)] + [_event("u0", "a2", "like")])
    return url


def _worker(tmp_path: Path, url: str, clock: Clock, machine: str = "m1") -> FeedbackFollower:
    """A worker's feedback side; workers of one machine share the signals folder."""
    settings = ServingSettings(
        home=tmp_path,
        feedback_url=url,
        admin_token=None,
        runtime_dir=tmp_path / machine,
        dislike_sync_s=SYNC_S,
        dislike_full_sync_s=FULL_SYNC_S,
        feedback_retry_s=RETRY_S,
    )
    return FeedbackFollower(settings, Signals(settings.runtime_dir), clock=clock)


def _synced_pair(tmp_path: Path, url: str, clock: Clock) -> tuple[FeedbackFollower, FeedbackFollower]:
    """Two workers of one service (one machine), each with its index read."""
    first, second = _worker(tmp_path, url, clock), _worker(tmp_path, url, clock)
    first.sync()
    second.sync()
    return first, second


def _unreachable(feedback: FeedbackFollower) -> list[int]:
    """Make ``feedback``'s store fail like a database that is down; returns a list counting the tries."""
    tries: list[int] = []

    def down() -> FeedbackStore:
        tries.append(1)
        raise FeedbackUnavailableError("feedback store unavailable (test)")

    feedback.store = down  # type: ignore[method-assign]
    return tries


def test_the_index_is_read_in_full_and_lookups_never_ask_the_store(tmp_path: Path, url: str) -> None:
    worker = _worker(tmp_path, url, Clock())
    assert not worker.loaded and worker.dislikes("u1") == frozenset()
    worker.sync()
    assert worker.loaded
    assert all(worker.dislikes(f"u{n}") == {"a1"} for n in range(200))
    assert worker.dislikes("u0") == {"a1"}  # a like is not a dislike
    assert worker.dislikes("nobody") == frozenset()
    tries = _unreachable(worker)
    assert worker.dislikes("u7") == {"a1"} and tries == []
    worker.close()


def test_a_dislike_through_one_worker_reaches_the_other_before_its_next_answer(
    tmp_path: Path, url: str
) -> None:
    clock = Clock()
    first, second = _synced_pair(tmp_path, url, clock)
    assert not second.signalled()
    first.add([_event("u5", "a9"), _event("new-listener", "a3")])
    assert first.dislikes("u5") == {"a1", "a9"}  # its own worker knows before the POST returns
    assert first.dislikes("new-listener") == {"a3"}
    assert second.signalled() and second.dislikes("u5") == {"a1"}
    second.sync()  # what the app does before answering when signalled
    assert second.dislikes("u5") == {"a1", "a9"} and second.dislikes("new-listener") == {"a3"}
    assert not second.signalled()
    first.add([_event("u5", "a4", "like")])  # no dislike: announced for the sessions only
    clock.now += 1.0
    assert not second.signalled() and second.session_signalled()
    second.sync_sessions()
    assert not second.session_signalled()
    assert second.dislikes("u5") == {"a1", "a9"}
    assert [e.item for e in second.session("u5") or ()] == ["a1", "a9", "a4"]
    first.close()
    second.close()


def test_requests_waiting_on_one_signal_read_the_store_once(tmp_path: Path, url: str) -> None:
    clock = Clock()
    first, second = _synced_pair(tmp_path, url, clock)
    reads: list[int] = []
    store = second.store()
    read = store.dislikes_since
    store.dislikes_since = lambda cursor=0: reads.append(cursor) or read(cursor)  # type: ignore[method-assign]
    first.add([_event("u8", "a6")])
    for _ in range(5):  # five requests that arrived after the signal, served one after another
        second.sync_signalled()
    assert len(reads) == 1 and second.dislikes("u8") == {"a1", "a6"}
    first.close()
    second.close()


def test_dislikes_stored_on_another_machine_arrive_with_the_periodic_sync(tmp_path: Path, url: str) -> None:
    clock = Clock()
    here, elsewhere = _worker(tmp_path, url, clock), _worker(tmp_path, url, clock, machine="m2")
    here.sync()
    assert not here.due()
    elsewhere.add([_event("u3", "a8")])
    assert not here.signalled() and not here.due()  # no shared signals folder
    clock.now += SYNC_S
    assert here.due()
    here.sync()
    assert here.dislikes("u3") == {"a1", "a8"} and not here.due()
    here.close()
    elsewhere.close()


def test_an_erasure_empties_every_index_by_the_next_sync_without_rereading_the_table(
    tmp_path: Path, url: str
) -> None:
    clock = Clock()
    first, second = _synced_pair(tmp_path, url, clock)
    remote = _worker(tmp_path, url, clock, machine="m2")
    remote.sync()
    full_reads: list[FeedbackFollower] = []
    for worker in (second, remote):
        load_all = worker._load_all
        worker._load_all = lambda store, w=worker, f=load_all: full_reads.append(w) or f(store)  # type: ignore[method-assign]

    assert first.delete_user("u1", "erasure request") == 1

    assert first.dislikes("u1") == frozenset()
    assert second.signalled()
    second.sync()
    assert second.dislikes("u1") == frozenset() and second.dislikes("u2") == {"a1"}
    assert remote.dislikes("u1") == {"a1"}  # another machine: no signal
    clock.now += SYNC_S
    remote.sync()  # the periodic incremental sync reads the erasure job
    assert remote.dislikes("u1") == frozenset() and remote.dislikes("u2") == {"a1"}
    assert full_reads == []  # nobody reread the whole dislike table
    pseudonym = first.store().pseudonym("u1")
    assert all(pseudonym in worker.erased for worker in (first, second, remote))
    for worker in (first, second, remote):
        worker.close()


@pytest.mark.parametrize("late_commit_ids", [FeedbackFollower.LATE_COMMIT_IDS, 0])
def test_an_erased_listener_who_comes_back_has_their_new_dislikes_honoured_at_once(
    tmp_path: Path, url: str, late_commit_ids: int
) -> None:
    """Only the rows up to the erasure's watermark are the erased ones: what the listener does afterwards is
    followed like anyone's, by the worker that erased, its neighbours and another machine, before any full
    sync (a late re-read of the window below the cursor included)."""
    clock = Clock()
    first, second = _synced_pair(tmp_path, url, clock)
    remote = _worker(tmp_path, url, clock, machine="m2")
    for worker in (first, second, remote):
        worker.LATE_COMMIT_IDS = late_commit_ids
    remote.sync()
    assert first.delete_user("u1", "erasure request") == 1
    second.sync()
    clock.now += SYNC_S
    remote.sync()
    assert {worker.dislikes("u1") for worker in (first, second, remote)} == {frozenset()}

    first.add([_event("u1", "a9")])  # the listener comes back
    second.sync()
    clock.now += SYNC_S
    remote.sync()
    for worker in (first, second, remote):
        assert worker.dislikes("u1") == {"a9"}
        assert worker.store().pseudonym("u1") in worker.erased  # still answered as unknown by old models
    fresh = _worker(tmp_path, url, clock, machine="m3")  # a worker started after the erasure
    fresh.sync()
    assert fresh.dislikes("u1") == {"a9"}

    assert first.delete_user("u1", "erased again") == 1  # ... and erased again: gone everywhere
    second.sync()
    clock.now += SYNC_S
    for worker in (remote, fresh):
        worker.sync()
    assert {worker.dislikes("u1") for worker in (first, second, remote, fresh)} == {frozenset()}
    clock.now += SYNC_S  # the jobs read again (the late-commit window) change nothing
    for worker in (second, remote, fresh):
        worker.sync()
        assert worker.dislikes("u1") == frozenset()
    for worker in (first, second, remote, fresh):
        worker.close()


def test_a_dislike_read_in_the_sync_that_learns_of_the_erasure_before_it_is_kept(
    tmp_path: Path, url: str
) -> None:
    """Another machine learns of an erasure and of the listener's first dislike after it in one sync: the
    erased rows go, the new one stays (erasures are followed before dislikes are read)."""
    clock = Clock()
    here, elsewhere = _worker(tmp_path, url, clock), _worker(tmp_path, url, clock, machine="m2")
    for worker in (here, elsewhere):
        worker.LATE_COMMIT_IDS = 0  # SQLite's: a row the cursor passed is never read again
        worker.sync()
    assert here.delete_user("u2", "erasure request") == 1
    here.add([_event("u2", "a5")])
    assert here.dislikes("u2") == {"a5"}
    clock.now += SYNC_S
    elsewhere.sync()
    assert elsewhere.dislikes("u2") == {"a5"}
    clock.now += SYNC_S
    elsewhere.sync()
    assert elsewhere.dislikes("u2") == {"a5"}
    here.close()
    elsewhere.close()


def test_revoked_models_reach_every_worker_with_the_next_sync(tmp_path: Path, url: str) -> None:
    clock = Clock()
    here, elsewhere = _worker(tmp_path, url, clock), _worker(tmp_path, url, clock, machine="m2")
    here.sync()
    elsewhere.sync()
    assert here.revoked == frozenset()
    with FeedbackStore(url) as store:
        store.revoke_models(["music_recommender:old"], "holds erased feedback")
    clock.now += SYNC_S
    for worker in (here, elsewhere):
        assert worker.due()
        worker.sync()
        assert worker.revoked == {"music_recommender:old"}
        worker.close()


@pytest.mark.parametrize("late_commit_ids", [FeedbackFollower.LATE_COMMIT_IDS, 0])
def test_a_dislike_committed_below_the_cursor_is_read_by_the_next_sync(
    tmp_path: Path, url: str, late_commit_ids: int
) -> None:
    """PostgreSQL may commit id 5 after id 6 is visible: the sync re-reads ids below its cursor."""
    worker = _worker(tmp_path, url, Clock())
    worker.LATE_COMMIT_IDS = late_commit_ids
    worker.sync()
    store = FeedbackStore(url)
    late = _event("u4", "a7")
    with store.engine.begin() as conn:
        low = conn.execute(sa.select(sa.func.min(EVENTS.c.id))).scalar_one()
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.id == low))  # free an id below the cursor
        row = {"id": low, **late.model_dump()}
        conn.execute(sa.insert(EVENTS).values(**row))
    store.close()
    worker.sync()
    assert ("a7" in worker.dislikes("u4")) is (late_commit_ids > 0)
    worker.close()


def test_an_outage_keeps_the_index_answers_at_once_and_backs_off(tmp_path: Path, url: str) -> None:
    clock = Clock()
    first, second = _synced_pair(tmp_path, url, clock)
    first.add([_event("u6", "a5")])
    tries = _unreachable(second)
    assert second.signalled()
    second.sync()  # the store is down: no error, the index as it was
    assert tries == [1] and second.dislikes("u6") == {"a1"}
    assert not second.signalled() and not second.due()  # no request waits on a down store for RETRY_S
    clock.now += RETRY_S
    assert second.due()
    first.close()


def test_a_store_down_at_start_serves_without_dislikes_until_it_is_back(tmp_path: Path, url: str) -> None:
    clock = Clock()
    worker = _worker(tmp_path, url, clock)
    _unreachable(worker)
    worker.sync()
    assert not worker.loaded and worker.dislikes("u1") == frozenset() and not worker.due()
    del worker.store  # the store is back
    clock.now += RETRY_S
    assert worker.due()
    worker.sync()
    assert worker.loaded and worker.dislikes("u1") == {"a1"}
    worker.close()


def test_a_full_index_leaves_later_listeners_to_the_store(tmp_path: Path, url: str) -> None:
    worker = _worker(tmp_path, url, Clock())
    worker.MAX_INDEXED_LISTENERS = 50  # the store holds 200 listeners with a dislike
    worker.sync()
    held = [f"u{n}" for n in range(200) if worker.dislikes(f"u{n}") is not None]
    assert worker.overflow and len(held) == 50
    outside = next(f"u{n}" for n in range(200) if f"u{n}" not in held)
    assert worker.dislikes(outside) is None  # not in memory: the answer asks the store
    assert worker.read_dislikes(outside) == {"a1"}
    worker.add([_event("brand-new", "a2")])
    assert worker.dislikes("brand-new") is None and worker.read_dislikes("brand-new") == {"a2"}
    worker.close()


def test_a_full_disk_under_the_signals_folder_loses_no_stored_event(tmp_path: Path, url: str) -> None:
    worker = _worker(tmp_path, url, Clock())
    worker.sync()
    signal = worker.signals.folder / "dislike"
    signal.unlink(missing_ok=True)
    signal.symlink_to("/dev/full")  # every write there fails with "No space left on device"

    result = worker.add([_event("u7", "a4")])

    assert result.inserted == 1  # stored and acknowledged, not a 500
    assert worker.dislikes("u7") == {"a1", "a4"}  # this worker synced itself
    assert worker.delete_user("u7", "erasure request") == 2
    worker.close()
