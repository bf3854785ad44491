"""The feedback export cursor: it persists, round-trips, never moves back, and records erasures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.errors import DataError
from recsys.loop.exports import FeedbackCursor


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


def test_an_old_cursor_without_erasures_loads_and_erasures_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    path.write_text('{"position": 4, "updated_at": "", "history": []}', encoding="utf-8")

    cursor = FeedbackCursor.load(path)
    assert (cursor.position, cursor.erasures_applied) == (4, 0)

    advanced = cursor.advanced(4, 0, "", erasures_applied=2, erased_users=1, purged_rows=5)
    advanced.save(path)
    saved = FeedbackCursor.load(path)
    assert saved == advanced and saved.erasures_applied == 2
    assert saved.history[-1] | {"at": ""} == {
        "from": 4,
        "to": 4,
        "events": 0,
        "file": "",
        "at": "",
        "erasures": 2,
        "erased_users": 1,
        "purged_rows": 5,
    }
    assert "erasures" not in saved.advanced(9, 5, "f").history[-1]
    assert saved.advanced(9, 5, "f").erasures_applied == 2
    with pytest.raises(ValueError, match="back"):
        saved.advanced(9, 5, "f", erasures_applied=1)
