"""Erasure jobs and model revocations in the feedback store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys.feedback.events import FeedbackEvent
from recsys.feedback.pseudonyms import PSEUDONYM_SALT_ENV, salt_check
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import ERASURES, EVENTS, ServedRecommendation

RAW = "listener-Rz7QvW-erased"


def _events(user: str, n: int, prefix: str) -> list[FeedbackEvent]:
    return [
        FeedbackEvent(user_id=user, item_id=f"a{i}", event="like", event_id=f"{prefix}{i}") for i in range(n)
    ]


def _served(user: str, at: datetime) -> ServedRecommendation:
    return ServedRecommendation(at, user, "recommend", "m:1", False, ("a1", "a2"), 0.0)


def test_a_deletion_records_a_pending_job_under_the_pseudonym_and_the_salt_check(
    store: FeedbackStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PSEUDONYM_SALT_ENV, "salt-a")
    store.add_events(_events("other", 2, "o") + _events(RAW, 3, "r"))
    store.add_rating(RAW, 5, "m:1")

    assert store.delete_user(RAW, "erasure request") == 3

    [job] = store.erasure_jobs()
    assert (job.pseudonym, job.salt_check, job.status) == (
        store.pseudonym(RAW),
        salt_check("salt-a"),
        "pending",
    )
    assert job.event_watermark == 5  # the highest event id when the rows went
    assert store.user_ratings(RAW) == [] and store.held_rows([job]) == {}
    store.record_erasure_step([job], "store", {"rows_deleted": 0})
    assert store.erasure_jobs()[0].steps == {"store": {"rows_deleted": 0}}
    assert store.complete_erasures([job]) == 1 and store.complete_erasures([job]) == 0
    assert store.erasure_jobs() == [] and store.erasure_jobs(pending_only=False)[0].status == "done"
    assert store.erasure_watermarks(0) == ({job.pseudonym: job.event_watermark}, job.id)
    assert store.erasure_watermarks(job.id) == ({}, job.id)
    assert store.erasure_watermarks(pending_only=True) == ({}, job.id)  # done: no longer pending
    with store.engine.connect() as conn:
        assert RAW not in repr(conn.execute(sa.select(ERASURES)).all())


def test_served_lists_queued_before_an_erasure_are_dropped_when_they_reach_the_store(
    store: FeedbackStore,
) -> None:
    before = datetime.now(UTC)
    store.delete_user(RAW, "erasure request")
    after = datetime.now(UTC) + timedelta(seconds=1)

    stored = store.add_served([_served(RAW, before), _served("other", before), _served(RAW, after)])

    assert stored == 2
    frame = store.served_frame()
    # The one served after the erasure is new data.
    assert set(zip(frame["user_id"], frame["served_at"] > before, strict=True)) == {
        ("other", False),
        (RAW, True),
    }


def test_rows_left_from_before_an_erasure_are_found_and_swept_but_newer_ones_kept(
    store: FeedbackStore,
) -> None:
    store.add_events(_events(RAW, 2, "r"))
    store.delete_user(RAW, "erasure request")
    [job] = store.erasure_jobs()
    # A row from before the erasure that slipped past it (written around the delete), and new feedback.
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(EVENTS).values(id=job.event_watermark, **_events(RAW, 1, "late")[0].model_dump())
        )
    store.add_events(_events(RAW, 1, "new"))

    assert store.held_rows([job]) == {job.pseudonym: {"feedback_events": 1}}
    assert store.held_rows([job], delete=True) == {job.pseudonym: {"feedback_events": 1}}
    assert store.held_rows([job]) == {}
    assert [event.event_id for event in store.events_since(None)[0]] == ["new0"]


def test_a_sqlite_store_keeps_no_byte_of_an_erased_listener(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    with FeedbackStore(f"sqlite:///{path}") as store:
        store.add_events(_events(RAW, 200, "r") + _events("other", 5, "o"))
        store.add_served([_served(RAW, datetime.now(UTC))])
        store.add_rating(RAW, 3, "m:1")
        data = b"".join(p.read_bytes() for p in tmp_path.glob("feedback.db*"))
        assert RAW.encode() in data

        store.delete_user(RAW, "erasure request")

        data = b"".join(p.read_bytes() for p in tmp_path.glob("feedback.db*"))
        assert RAW.encode() not in data  # not in free pages, not in the write-ahead log
        assert store.count() == 5
        assert store.compact() == {"truncated": True}


def test_a_late_committing_erasure_is_never_skipped(store_url: str) -> None:
    """PostgreSQL hands out ids before commit: a job with a lower id can commit after one with a higher id.
    Jobs are found by status, not by position, so it is found on the next read."""
    with FeedbackStore(store_url) as store, store.engine.connect() as slow:
        slow.execute(sa.insert(ERASURES).values(**_job_row(store.pseudonym("slow"))))  # not committed yet
        other = threading.Thread(target=store.delete_user, args=("quick", "erasure request"))
        other.start()
        other.join(timeout=1.0)
        first = store.erasure_jobs() if not other.is_alive() else []
        store.complete_erasures(first)
        slow.commit()
        other.join()
        pending = store.erasure_jobs()
        store.complete_erasures(pending)
        done = {job.pseudonym for job in store.erasure_jobs(pending_only=False) if job.status == "done"}
    assert done == {store.pseudonym("slow"), store.pseudonym("quick")}


def _job_row(pseudonym: str) -> dict[str, object]:
    return {
        "user_pseudonym": pseudonym,
        "salt_check": None,
        "requested_at": datetime.now(UTC),
        "event_watermark": 0,
        "audit_id": None,
        "status": "pending",
        "steps": "{}",
    }


def test_an_older_stores_erasures_get_jobs(store: FeedbackStore) -> None:
    from recsys.feedback.tables import AUDIT

    with store.engine.begin() as conn:  # an audit row written before jobs existed
        conn.execute(
            sa.insert(AUDIT).values(
                action="delete_user",
                user_pseudonym="p" * 64,
                count=2,
                timestamp=datetime.now(UTC),
                reason="r",
            )
        )

    jobs = store.erasure_jobs()

    assert [(job.pseudonym, job.salt_check, job.event_watermark) for job in jobs] == [("p" * 64, None, 0)]
    assert len(store.erasure_jobs()) == 1  # made once


def test_revocations_are_recorded_once_and_read_incrementally(store: FeedbackStore) -> None:
    assert store.revoke_models(["m:1", "m:2"], "holds erased feedback") == 2
    assert store.revoke_models(["m:2", "m:3"], "again") == 1
    tags, cursor = store.revocations_since(0)
    assert tags == ["m:1", "m:2", "m:3"]
    assert store.revocations_since(cursor) == ([], cursor)
    assert store.is_revoked("m:2") and not store.is_revoked("m:4")
