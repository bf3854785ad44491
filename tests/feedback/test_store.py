"""The feedback store: the same tests on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from recsys.columns import FEEDBACK_EVENTS, Col
from recsys.errors import ConfigError, RecsysError
from recsys.feedback.events import (
    FEEDBACK_COLUMNS,
    MAX_ID_LENGTH,
    FeedbackEvent,
    InvalidFeedbackError,
    parse_events,
)
from recsys.feedback.pseudonyms import DEFAULT_PSEUDONYM_SALT, PSEUDONYM_SALT_ENV, pseudonymise
from recsys.feedback.store import EXPORT_CURSOR_ATTR, FeedbackStore, FeedbackUnavailableError
from recsys.feedback.tables import AUDIT, EVENTS, SERVED, SERVED_COLUMNS, Served, ServedRecommendation
from tests.helpers import PROJECT_ROOT


def _event(
    event_id: str, user: str = "u1", item: str = "a1", kind: str = "play", **extra: Any
) -> FeedbackEvent:
    return FeedbackEvent(user_id=user, item_id=item, event=kind, event_id=event_id, **extra)


def _ids(events: list[FeedbackEvent]) -> list[str]:
    return [e.event_id for e in events]


def _all_events(store: FeedbackStore) -> list[FeedbackEvent]:
    events, _ = store.events_since(None, limit=100_000)
    return events


def test_a_store_draws_its_own_secret_salt_once(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PSEUDONYM_SALT_ENV, raising=False)
    with FeedbackStore(store_url) as first:
        salt = first.pseudonym_salt()
        first.create_schema()  # another worker creating the schema keeps the first salt
    assert len(salt) == 64 and salt != DEFAULT_PSEUDONYM_SALT
    with FeedbackStore(store_url, create=False) as again:
        assert again.pseudonym_salt() == salt
        assert (
            again.pseudonym("listener-42") == pseudonymise("listener-42", salt) != pseudonymise("listener-42")
        )
    with FeedbackStore(f"sqlite:///{tmp_path / 'other.db'}") as other:
        assert other.pseudonym_salt() != salt
    monkeypatch.setenv(PSEUDONYM_SALT_ENV, "override")
    with FeedbackStore(store_url, create=False) as overridden:
        assert overridden.pseudonym("listener-42") == pseudonymise("listener-42", "override")


def test_a_store_older_than_stored_salts_falls_back_to_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PSEUDONYM_SALT_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with FeedbackStore(url) as created, created.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE store_settings"))
    with FeedbackStore(url, create=False) as old:
        assert old.pseudonym_salt() == DEFAULT_PSEUDONYM_SALT


# --- the event contract -----------------------------------------------------------------------------


def test_event_fields_are_the_column_contract() -> None:
    assert set(FeedbackEvent.model_fields) == set(FEEDBACK_COLUMNS)
    assert set(FEEDBACK_COLUMNS) == {Col.USER, Col.ITEM, Col.EVENT, Col.TIMESTAMP, Col.EVENT_ID, Col.ARM}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (Col.EVENT, "love"),
        (Col.USER, ""),
        (Col.USER, "   "),
        (Col.ITEM, "x" * (MAX_ID_LENGTH + 1)),
        (Col.EVENT_ID, ""),
        (Col.EVENT_ID, "e" * (MAX_ID_LENGTH + 1)),
        (Col.TIMESTAMP, datetime(2024, 1, 1, 12, 0)),  # no timezone
    ],
)
def test_invalid_event_names_the_field(field: str, value: object) -> None:
    record: dict[str, object] = {Col.USER: "u1", Col.ITEM: "a1", Col.EVENT: "like", Col.EVENT_ID: "e1"}
    record[field] = value
    with pytest.raises(ValidationError) as caught:
        FeedbackEvent.model_validate(record)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_bounds_are_inclusive_and_timestamp_defaults_to_utc_now() -> None:
    before = datetime.now(UTC)
    event = _event("e" * MAX_ID_LENGTH, user="u" * MAX_ID_LENGTH, item="i")
    assert event.timestamp.tzinfo == UTC
    assert before <= event.timestamp <= datetime.now(UTC)
    assert {_event(f"e{kind}", kind=kind).event for kind in FEEDBACK_EVENTS} == set(FEEDBACK_EVENTS)


def test_parse_events_names_record_and_field() -> None:
    good = {
        Col.USER: "u1",
        Col.ITEM: "a1",
        Col.EVENT: "like",
        Col.EVENT_ID: "e1",
        Col.TIMESTAMP: "2024-05-01T10:00Z",
    }
    with pytest.raises(InvalidFeedbackError, match=r"event 1, field 'event': .*must be one of") as caught:
        parse_events([good, {**good, Col.EVENT: "love", Col.EVENT_ID: "e2"}])
    assert isinstance(caught.value, RecsysError)
    assert parse_events([good]) == [FeedbackEvent.model_validate(good)]


def test_pseudonymise_is_keyed_and_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PSEUDONYM_SALT_ENV, raising=False)
    default = pseudonymise("listener-42")
    monkeypatch.setenv(PSEUDONYM_SALT_ENV, "secret")
    assert pseudonymise("listener-42") == pseudonymise("listener-42", salt="secret") != default
    assert pseudonymise("listener-43") != pseudonymise("listener-42")
    assert len(default) == 64 and "listener" not in default


# --- the store on both backends ---------------------------------------------------------------------


def test_insert_count_and_round_trip(store: FeedbackStore) -> None:
    local = timezone(timedelta(hours=2))
    events = [
        _event("e1", kind="like"),
        _event("e2", item="a2", timestamp=datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=local)),
    ]
    result = store.add_events(events)
    assert (result.inserted, result.duplicates) == (2, 0)
    assert store.count() == 2
    assert _all_events(store) == events
    assert _all_events(store)[1].timestamp == datetime(2024, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
    assert store.ping()


def test_retries_are_idempotent_within_and_across_batches(store: FeedbackStore) -> None:
    first = store.add_events([_event("e1"), _event("e2"), _event("e1", item="other")])
    assert (first.inserted, first.duplicates) == (2, 1)
    retry = store.add_events([_event("e2"), _event("e3"), _event("e1")])
    assert (retry.inserted, retry.duplicates) == (1, 2)
    assert store.count() == 3
    assert [e.item_id for e in _all_events(store)] == ["a1", "a1", "a1"]  # the first version is kept
    assert store.add_events([]).inserted == 0


def test_schema_creation_is_idempotent(store: FeedbackStore, store_url: str) -> None:
    store.add_events([_event("e1")])
    store.create_schema()
    with FeedbackStore(store_url) as reopened:
        reopened.create_schema()
        assert reopened.count() == 1
    indexes = sa.inspect(store.engine).get_indexes(EVENTS.name)
    assert [Col.USER, Col.EVENT] in [index["column_names"] for index in indexes]


def test_disliked_items(store: FeedbackStore) -> None:
    store.add_events(
        [
            _event("e1", item="a1", kind="dislike"),
            _event("e2", item="a2", kind="dislike"),
            _event("e3", item="a2", kind="dislike"),
            _event("e4", item="a3", kind="like"),
            _event("e5", user="u2", item="a4", kind="dislike"),
        ]
    )
    assert store.disliked_items("u1") == {"a1", "a2"}
    assert store.disliked_items("nobody") == set()


def test_cursor_paging_never_repeats_or_skips(store: FeedbackStore) -> None:
    store.add_events([_event(f"a{i}") for i in range(7)])
    seen: list[str] = []
    page, cursor = store.events_since(None, limit=3)
    seen += _ids(page)
    store.add_events([_event(f"b{i}") for i in range(4)])  # arrives between pages
    while page:
        page, cursor = store.events_since(cursor, limit=3)
        seen += _ids(page)
    assert seen == [f"a{i}" for i in range(7)] + [f"b{i}" for i in range(4)]
    assert store.events_since(cursor, limit=3) == ([], cursor)


def test_cursor_sees_events_added_after_the_newest_were_deleted(store: FeedbackStore) -> None:
    store.add_events([_event("e1"), _event("e2", user="leaver")])
    _, cursor = store.events_since(None)
    store.delete_user("leaver", reason="erasure request")
    store.add_events([_event("e3")])
    assert _ids(store.events_since(cursor)[0]) == ["e3"]


def test_cursor_never_passes_an_uncommitted_write(store: FeedbackStore) -> None:
    seen: list[tuple[list[FeedbackEvent], int]] = []
    with store.engine.connect() as slow_writer:
        # An insert that has taken its id but not committed yet.
        slow_writer.execute(sa.insert(EVENTS).values(_event("early").model_dump()))
        late_writer = threading.Thread(target=store.add_events, args=([_event("late")],))
        late_writer.start()
        late_writer.join(timeout=0.5)  # PostgreSQL commits "late" now; SQLite makes it wait for the lock
        reader = threading.Thread(target=lambda: seen.append(store.events_since(None)))
        reader.start()
        reader.join(timeout=0.5)
        slow_writer.commit()
    late_writer.join()
    reader.join()
    first, cursor = seen[0]
    rest, _ = store.events_since(cursor)
    assert sorted(_ids(first) + _ids(rest)) == ["early", "late"]


def test_delete_user_removes_everything_and_audits_a_pseudonym(
    store: FeedbackStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PSEUDONYM_SALT_ENV, "test-salt")
    user = "listener-42"
    store.add_events([_event(f"e{i}", user=user, kind="dislike", item=f"a{i}") for i in range(3)])
    store.add_events([_event("other", user="listener-7")])
    assert store.delete_user(user, reason="erasure request") == 3
    assert store.count() == 1 and store.disliked_items(user) == set()
    assert {e.user_id for e in _all_events(store)} == {"listener-7"}
    assert store.delete_user(user, reason="erasure request") == 0
    records = store.audit_log()
    assert [(r.action, r.count, r.reason) for r in records] == [
        ("delete_user", 3, "erasure request"),
        ("delete_user", 0, "erasure request"),
    ]
    assert records[0].user_pseudonym == pseudonymise(user, salt="test-salt")
    with store.engine.connect() as conn:
        raw_audit = repr(conn.execute(sa.select(AUDIT)).all())
    assert user not in raw_audit
    with pytest.raises(InvalidFeedbackError, match="reason"):
        store.delete_user(user, reason=" ")


def _served(
    served_at: datetime, user: str | None = "u1", items: tuple[str, ...] = ("a1", "a2"), **extra: Any
) -> ServedRecommendation:
    fields: dict[str, Any] = {
        "endpoint": "recommend",
        "model_version": "recsys:v1",
        "cold_start": False,
        "bias_strength": 0.0,
    } | extra
    return ServedRecommendation(served_at=served_at, user_id=user, items=items, **fields)


def test_served_lists_round_trip(store: FeedbackStore) -> None:
    local = timezone(timedelta(hours=-5))
    records = [
        _served(
            datetime(2026, 3, 1, 7, 0, 0, 250, tzinfo=local), items=("a9", "a,1", "ä2"), bias_strength=0.2
        ),
        _served(datetime(2026, 3, 1, 12, 30, tzinfo=UTC), user=None, endpoint="new-listener"),
        _served(datetime(2026, 3, 1, 13, tzinfo=UTC), user="u2", cold_start=True, items=()),
    ]
    assert store.add_served(records) == 3 and store.add_served([]) == 0
    frame = store.served_frame()
    assert list(frame.columns) == list(SERVED_COLUMNS) and store.count_served() == 3
    assert str(frame[Served.SERVED_AT].dt.tz) == "UTC"
    assert frame[Served.SERVED_AT].iloc[0] == pd.Timestamp("2026-03-01 12:00:00.000250", tz="UTC")
    assert frame[Served.ITEMS].tolist() == [["a9", "a,1", "ä2"], ["a1", "a2"], []]
    assert frame[Served.USER].tolist() == ["u1", None, "u2"]
    assert frame[Served.ENDPOINT].tolist() == ["recommend", "new-listener", "recommend"]
    assert frame[Served.COLD_START].tolist() == [False, False, True]
    assert frame[Served.BIAS_STRENGTH].tolist() == [0.2, 0.0, 0.0]
    assert set(frame[Served.MODEL_VERSION]) == {"recsys:v1"}


def test_served_lists_keep_their_experiment_arm_and_slot_credits(store: FeedbackStore) -> None:
    when = datetime(2026, 3, 1, tzinfo=UTC)
    store.add_served(
        [
            _served(when, user="u1", arm="challenger"),
            _served(when, user="u2", arm="interleave", credits=("champion", "challenger"), challenger="m:2"),
            _served(when, user="u3"),
        ]
    )
    frame = store.served_frame()
    assert frame[Served.ARM].tolist() == ["challenger", "interleave", None]
    assert frame[Served.CREDITS].tolist() == [None, ["champion", "challenger"], None]
    assert frame[Served.CHALLENGER].tolist() == [None, "m:2", None]


def test_events_keep_their_arm_and_an_unknown_arm_is_refused(store: FeedbackStore) -> None:
    store.add_events([_event("e1", arm="challenger"), _event("e2")])
    assert [e.arm for e in _all_events(store)] == ["challenger", None]
    assert store.export_frame()[Col.ARM].tolist() == ["challenger", None]
    with pytest.raises(InvalidFeedbackError, match="arm"):
        parse_events([{"user_id": "u", "item_id": "i", "event": "like", "event_id": "e3", "arm": "b"}])


def test_a_store_made_before_experiments_gets_the_arm_columns_when_opened(
    store: FeedbackStore, store_url: str
) -> None:
    """Rows stored before keep working (no arm); new rows record theirs."""
    store.add_events([_event("old")])
    with store.engine.begin() as conn:
        for table, columns in ((EVENTS.name, ["arm"]), (SERVED.name, ["arm", "credits", "challenger"])):
            for column in columns:
                conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    with FeedbackStore(store_url) as reopened:
        reopened.add_events([_event("new", arm="champion")])
        reopened.add_served([_served(datetime(2026, 3, 1, tzinfo=UTC), arm="champion")])
        assert [e.arm for e in _all_events(reopened)] == [None, "champion"]
        assert reopened.served_frame()[Served.ARM].tolist() == ["champion"]


def test_a_store_made_before_exploration_gets_the_propensity_columns_when_opened(
    store: FeedbackStore, store_url: str
) -> None:
    """Lists logged before exploration read as unexplorable (None); new ones keep each item's propensity."""
    store.add_served([_served(datetime(2026, 3, 1, tzinfo=UTC))])
    with store.engine.begin() as conn:
        for column in ("propensities", "explored"):
            conn.execute(sa.text(f"ALTER TABLE {SERVED.name} DROP COLUMN {column}"))
    with FeedbackStore(store_url, create=False) as reader:  # the monitoring flow, before any writer
        old = reader.served_frame()
    assert list(old.columns) == list(SERVED_COLUMNS) and old[Served.PROPENSITIES].tolist() == [None]
    assert old[Served.ITEMS].tolist() == [["a1", "a2"]]
    with FeedbackStore(store_url) as reopened:
        explored = _served(datetime(2026, 3, 2, tzinfo=UTC), propensities=(1.0, 0.004), explored=(1,))
        reopened.add_served([explored])
        frame = reopened.served_frame()
    assert frame[Served.PROPENSITIES].tolist() == [None, [1.0, 0.004]]
    assert frame[Served.EXPLORED].tolist() == [None, [1]]


def test_served_frame_selects_a_window_and_the_latest_lists(store: FeedbackStore) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    store.add_served([_served(start + timedelta(hours=h), user=f"u{h}") for h in range(6)])
    window = store.served_frame(since=start + timedelta(hours=1), until=start + timedelta(hours=4))
    assert window[Served.USER].tolist() == ["u2", "u3", "u4"]
    assert store.served_frame(limit=2)[Served.USER].tolist() == ["u4", "u5"]
    assert store.served_frame(since=start + timedelta(days=1)).empty
    assert store.delete_served_before(start + timedelta(hours=2)) == 3
    assert store.served_frame()[Served.USER].tolist() == ["u3", "u4", "u5"]


def test_a_store_older_than_the_served_log_reads_no_served_lists(
    store: FeedbackStore, store_url: str
) -> None:
    store.add_served([_served(datetime(2026, 3, 1, tzinfo=UTC))])
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {SERVED.name}"))
    with FeedbackStore(store_url, create=False) as old:
        frame = old.served_frame()
    assert frame.empty and list(frame.columns) == list(SERVED_COLUMNS)


def test_served_lists_refuse_an_unknown_endpoint(store: FeedbackStore) -> None:
    when = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(InvalidFeedbackError, match="endpoint"):
        store.add_served([_served(when), _served(when, endpoint="similar")])
    assert store.count_served() == 0


def test_delete_user_also_deletes_their_served_lists(store: FeedbackStore) -> None:
    when = datetime(2026, 3, 1, tzinfo=UTC)
    store.add_events([_event("e1", user="leaver"), _event("e2", user="stays")])
    store.add_served([_served(when, user="leaver"), _served(when, user="stays"), _served(when, user=None)])
    assert store.delete_user("leaver", reason="erasure request") == 1
    assert store.served_frame()[Served.USER].tolist() == ["stays", None]
    with store.engine.connect() as conn:
        assert "leaver" not in repr(conn.execute(sa.select(SERVED)).all())
    assert [r.count for r in store.audit_log()] == [1]


def test_concurrent_writers_store_each_event_once(store: FeedbackStore) -> None:
    n_threads, per_thread, shared = 8, 50, 10
    start = threading.Barrier(n_threads)
    results = []

    def write(thread: int) -> None:
        ids = [f"shared-{i}" if i < shared else f"t{thread}-{i}" for i in range(per_thread)]
        start.wait()
        for batch in range(0, per_thread, 10):
            results.append(store.add_events([_event(event_id) for event_id in ids[batch : batch + 10]]))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = shared + n_threads * (per_thread - shared)
    assert store.count() == expected
    assert sum(r.inserted for r in results) == expected
    assert sum(r.duplicates for r in results) == n_threads * per_thread - expected


_CHILD_WRITER = """
import os
from recsys.feedback.store import FeedbackEvent, FeedbackStore

store = FeedbackStore(os.environ["FEEDBACK_URL"])
batch = 0
while True:
    ids = [f"b{batch}-{i}" for i in range(50)]
    store.add_events([FeedbackEvent(user_id="u1", item_id="a1", event="play", event_id=e) for e in ids])
    print(batch, flush=True)  # acknowledged only after add_events has returned
    batch += 1
"""


def test_acknowledged_events_survive_sigkill(store_url: str) -> None:
    env = {**os.environ, "FEEDBACK_URL": store_url, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_WRITER], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    acknowledged = [int(child.stdout.readline()) for _ in range(3)]
    child.send_signal(signal.SIGKILL)  # most likely in the middle of the next batch
    child.wait()
    with FeedbackStore(store_url) as reopened:
        stored = _ids(_all_events(reopened))
    batches = {event_id.split("-")[0] for event_id in stored}
    assert {f"b{b}" for b in acknowledged} <= batches
    assert len(stored) == 50 * len(batches)  # every batch is whole or absent


def test_export_frame_pages_by_cursor(store: FeedbackStore) -> None:
    store.add_events([_event(f"e{i}", kind=FEEDBACK_EVENTS[i % 4]) for i in range(5)])
    frame = store.export_frame(page_size=2)
    assert list(frame.columns) == list(FEEDBACK_COLUMNS)
    assert list(frame[Col.EVENT_ID]) == [f"e{i}" for i in range(5)]
    assert str(frame[Col.TIMESTAMP].dt.tz) == "UTC"
    cursor = frame.attrs[EXPORT_CURSOR_ATTR]
    empty = store.export_frame(cursor)
    assert empty.empty and list(empty.columns) == list(FEEDBACK_COLUMNS)
    assert empty.attrs[EXPORT_CURSOR_ATTR] == cursor
    store.add_events([_event("late")])
    assert list(store.export_frame(cursor)[Col.EVENT_ID]) == ["late"]


def test_sqlite_connections_are_durable(tmp_path: Path) -> None:
    with (
        FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", timeout_s=3) as store,
        store.engine.connect() as conn,
    ):
        pragmas = [
            conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ("journal_mode", "synchronous")
        ]
        assert pragmas == ["wal", 2]  # 2 = FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 3000


# --- failures ---------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_postgres_is_reported_as_unavailable() -> None:
    url = f"postgresql+psycopg://user:secret@127.0.0.1:{_closed_port()}/feedback?connect_timeout=2"
    with pytest.raises(FeedbackUnavailableError, match="unavailable") as caught:
        FeedbackStore(url)
    assert "secret" not in str(caught.value)
    store = FeedbackStore(url, create=False)
    assert not store.ping()
    with pytest.raises(FeedbackUnavailableError):
        store.add_events([_event("e1")])
    with pytest.raises(FeedbackUnavailableError):
        store.count()


def test_unusable_sqlite_path_is_reported_as_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(FeedbackUnavailableError):
        FeedbackStore(f"sqlite:///{blocker / 'feedback.db'}")


@pytest.mark.parametrize("url", ["not a url", "mysql+pymysql://u:p@localhost/db"])
def test_unsupported_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="feedback store"):
        FeedbackStore(url)


def test_ratings_are_stored_read_back_without_user_ids_and_erased_with_the_listener(
    store: FeedbackStore,
) -> None:
    first, later = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, 12, tzinfo=UTC)
    store.add_rating("leaver", 4, "music_recommender:a", at=first)
    store.add_rating("stays", 2, None, at=later)
    store.add_rating("leaver", 5, "music_recommender:b", at=later)
    frame = store.ratings_frame()
    assert list(frame.columns) == ["timestamp", "rating", "model_version"]  # no user ids in the report's data
    assert frame["rating"].tolist() == [4, 2, 5] and frame["timestamp"].iloc[0] == pd.Timestamp(first)
    assert [r["rating"] for r in store.user_ratings("leaver")] == [5, 4]  # newest first
    for rating in (1, 2, 3):  # a listener has one rating per model version: the last one counts
        store.add_rating("stays", rating, None, at=later)
    assert store.ratings_frame()["rating"].tolist() == [4, 5, 3]
    for bad in (0, 6):
        with pytest.raises(InvalidFeedbackError, match="rating must be 1-5"):
            store.add_rating("leaver", bad, None)
    store.delete_user("leaver", "erasure request")
    assert store.user_ratings("leaver") == [] and store.ratings_frame()["rating"].tolist() == [3]


def test_event_ids_are_idempotent_per_listener_not_across_listeners(store: FeedbackStore) -> None:
    first = store.add_events([_event("e-1", user="client-a"), _event("e-1", user="client-b")])
    again = store.add_events([_event("e-1", user="client-a", item="a9")])
    assert (first.inserted, first.duplicates) == (2, 0)
    assert (again.inserted, again.duplicates) == (0, 1)
    assert sorted(e.user_id for e in _all_events(store)) == ["client-a", "client-b"]


def test_an_older_store_with_global_event_ids_is_migrated_keeping_rows_and_ids(
    store: FeedbackStore, store_url: str
) -> None:
    from recsys.feedback.tables import EVENT_KEY

    store.add_events([_event("e-1", user="a"), _event("e-2", user="a"), _event("e-3", user="gone")])
    store.delete_user("gone", "erasure request")  # the newest id is gone: the sequence must stay past it
    with store.engine.begin() as conn:  # back to the old shape: event ids unique across listeners
        if store_url.startswith("sqlite"):
            rows = conn.execute(sa.select(EVENTS)).mappings().all()
            conn.execute(sa.text(f"DROP TABLE {EVENTS.name}"))
            ddl = str(sa.schema.CreateTable(EVENTS).compile(conn))
            ddl = ddl.replace(
                f"CONSTRAINT {EVENT_KEY} UNIQUE (user_id, event_id)",
                "CONSTRAINT uq_feedback_events_event_id UNIQUE (event_id)",
            )
            conn.execute(sa.text(ddl))
            conn.execute(sa.insert(EVENTS), [dict(row) for row in rows])
            conn.execute(sa.text("UPDATE sqlite_sequence SET seq = 3 WHERE name = 'feedback_events'"))
        else:
            conn.execute(sa.text(f"ALTER TABLE feedback_events DROP CONSTRAINT {EVENT_KEY}"))
            conn.execute(
                sa.text(
                    "ALTER TABLE feedback_events ADD CONSTRAINT uq_feedback_events_event_id UNIQUE (event_id)"
                )
            )
    before = [(e.user_id, e.event_id) for e in _all_events(store)]

    with FeedbackStore(store_url) as migrated:
        assert [(e.user_id, e.event_id) for e in _all_events(migrated)] == before
        _, cursor = migrated.events_since(None)
        assert migrated.add_events([_event("e-1", user="b")]).inserted == 1  # the same id, another listener
        newest, _ = migrated.events_since(cursor)
        assert [(e.user_id, e.event_id) for e in newest] == [("b", "e-1")]
        with migrated.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.max(EVENTS.c.id))).scalar_one() > 3  # no id reused
        migrated.create_schema()  # a second opener finds nothing to do
