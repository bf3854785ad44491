"""The feedback export cursor (persists, round-trips, never moves back, records erasure jobs) and the
history of exports (each event once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.columns import Col
from recsys.errors import DataError
from recsys.feedback.exports import FeedbackCursor, export_position, load_history
from recsys.io import write_parquet
from tests.helpers import events_frame


def test_cursor_persists_round_trips_and_refuses_to_move_back(tmp_path: Path) -> None:
    path = tmp_path / "feedback" / "cursor.json"
    assert FeedbackCursor.load(path) == FeedbackCursor()
    cursor = FeedbackCursor().advanced(7, 7, "data/feedback/events-7.parquet")
    cursor.save(path)
    assert FeedbackCursor.load(path) == cursor
    assert json.loads(path.read_text())["position"] == 7
    assert not list(path.parent.glob("*.tmp"))
    with pytest.raises(ValueError, match="back"):
        cursor.advanced(3, 0, "x")
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="cursor"):
        FeedbackCursor.load(path)


def test_an_old_cursor_with_an_erasure_count_loads_and_erasure_jobs_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    # Cursors once counted honoured erasures; erasures are jobs in the store now, and the count is ignored.
    path.write_text(
        '{"position": 4, "updated_at": "", "history": [], "erasures_applied": 3}', encoding="utf-8"
    )

    cursor = FeedbackCursor.load(path)
    assert cursor.position == 4

    advanced = cursor.advanced(4, 0, "", erasure_jobs=2, erasures_done=1)
    advanced.save(path)
    saved = FeedbackCursor.load(path)
    assert saved == advanced
    assert saved.history[-1] | {"at": ""} == {
        "from": 4,
        "to": 4,
        "events": 0,
        "file": "",
        "at": "",
        "erasure_jobs": 2,
        "erasures_done": 1,
    }
    assert "erasure_jobs" not in saved.advanced(9, 5, "f").history[-1]


def test_history_holds_each_event_once_oldest_export_first(tmp_path: Path) -> None:
    first = events_frame(("u1", "a1", "like"), ("u2", "a2", "play"))
    first[Col.EVENT_ID] = ["e1", "e2"]
    second = events_frame(("u1", "a1", "like"), ("u3", "a3", "skip"))
    second[Col.EVENT_ID] = ["e1", "e3"]  # e1 again: a run that failed after writing its export
    write_parquet(tmp_path / "events-10.parquet", second)
    write_parquet(tmp_path / "events-9.parquet", first)

    history = load_history(tmp_path)

    assert history[Col.EVENT_ID].tolist() == ["e1", "e2", "e3"]
    assert export_position(tmp_path / "events-10.parquet") == 10
