"""Erasure on the retraining path: matching pseudonyms, purging exported files, resetting training rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from recsys.columns import Col
from recsys.errors import DataError
from recsys.io import write_parquet
from recsys.loop.erasure import (
    ERASED_PREFIX,
    anonymise_ids,
    erased_users,
    honour_erasure,
    pending_erasures,
    purge_event_files,
    without_erased_events,
)
from recsys.loop.events import FeedbackEvent
from recsys.loop.feedback import FeedbackStore
from recsys.loop.feedback_db import AuditRecord
from recsys.loop.pseudonyms import pseudonymise
from recsys.offline.gate import GateDecision

SALT = "test-salt"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _record(user: str, action: str = "delete_user") -> AuditRecord:
    return AuditRecord(action, pseudonymise(user, SALT), 3, T0, "erasure request")


def _events(*rows: tuple[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[Col.USER, Col.ITEM])
    frame[Col.EVENT] = "like"
    frame[Col.EVENT_ID] = [f"e{i}" for i in range(len(rows))]
    return frame


def test_pending_erasures_skip_the_honoured_records_and_other_actions() -> None:
    records = [_record("x"), _record("y", action="export"), _record("z"), _record("x")]

    pending = pending_erasures(records, applied=1)

    assert pending.pseudonyms == {pseudonymise("z", SALT), pseudonymise("x", SALT)}
    assert (pending.applied, pending.total, pending.n_records) == (1, 3, 2)
    assert pending
    assert not pending_erasures(records, applied=3)
    assert not pending_erasures([], applied=0)


def test_a_pruned_audit_log_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(DataError, match="erasures_applied"):
        pending_erasures([_record("x")], applied=2)


def test_erased_users_match_pseudonyms_and_need_the_same_salt() -> None:
    pseudonyms = {pseudonymise("u2", SALT), pseudonymise("new", SALT)}

    assert erased_users(["u3", "u1", "new", "u2", "u2"], pseudonyms, SALT) == ["new", "u2"]
    assert erased_users(["u1", "u2", "new"], pseudonyms, "another-salt") == []
    assert erased_users(["u1"], set(), SALT) == []


def test_without_erased_events_drops_only_the_erased_users_rows() -> None:
    events = _events(("x", "a"), ("y", "a"), ("x", "b"), ("z", "c"))

    kept, dropped = without_erased_events(events, {pseudonymise("x", SALT)}, SALT)

    assert dropped == 2
    assert kept[Col.USER].tolist() == ["y", "z"]
    assert kept[Col.EVENT_ID].tolist() == ["e1", "e3"]


def test_purge_rewrites_only_the_files_that_hold_erased_rows(tmp_path: Path) -> None:
    write_parquet(tmp_path / "events-3.parquet", _events(("x", "a"), ("y", "a"), ("x", "b")))
    write_parquet(tmp_path / "events-5.parquet", _events(("y", "b"), ("z", "c")))
    write_parquet(tmp_path / "events-8.parquet", _events(("x", "c")))
    (tmp_path / "cursor.json").write_text("{}", encoding="utf-8")
    untouched = (tmp_path / "events-5.parquet").stat().st_mtime_ns

    removed = purge_event_files(tmp_path, {pseudonymise("x", SALT)}, SALT)

    assert removed == {"events-3.parquet": 2, "events-5.parquet": 0, "events-8.parquet": 1}
    assert pd.read_parquet(tmp_path / "events-3.parquet")[Col.USER].tolist() == ["y"]
    assert pd.read_parquet(tmp_path / "events-5.parquet")[Col.USER].tolist() == ["y", "z"]
    emptied = pd.read_parquet(tmp_path / "events-8.parquet")
    assert emptied.empty and list(emptied.columns) == [Col.USER, Col.ITEM, Col.EVENT, Col.EVENT_ID]
    assert (tmp_path / "events-5.parquet").stat().st_mtime_ns == untouched
    assert not list(tmp_path.glob("*.tmp"))
    assert set(purge_event_files(tmp_path, {pseudonymise("x", SALT)}, SALT).values()) == {0}


def test_anonymise_ids_replaces_only_erased_feedback_only_listeners() -> None:
    ids = ["u1", "u2", "new-a", "new-b"]

    renamed = anonymise_ids(ids, {"u2", "new-b"}, n_fixed=2, salt=SALT)

    assert renamed == ["u1", "u2", "new-a", f"{ERASED_PREFIX}{pseudonymise('new-b', SALT)}"]
    assert anonymise_ids(ids, set(), n_fixed=2, salt=SALT) == ids


def test_an_erasure_overrides_a_refusing_gate_and_says_why() -> None:
    refused = GateDecision(False, ["ndcg@10 does not improve"], {"ndcg@10": {"ok": False}})

    forced = honour_erasure(refused, erased=2)

    assert forced.promote
    assert "erasure of 2 user(s)" in forced.reasons[0] and "legal obligation" in forced.reasons[0]
    assert forced.reasons[1].endswith("ndcg@10 does not improve")
    assert forced.comparison == refused.comparison
    assert honour_erasure(refused, erased=0) == refused
    won = honour_erasure(GateDecision(True, ["ndcg@10 improves"]), erased=1)
    assert won.promote and won.reasons[0] == "ndcg@10 improves" and "erasure" in won.reasons[1]


def test_a_deleted_users_audit_row_is_found_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_PSEUDONYM_SALT", SALT)
    with FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}") as store:
        store.add_events([FeedbackEvent(user_id="x", item_id="a", event="like", event_id="e1")])
        store.delete_user("x", "erasure request")
        records = store.audit_log()

    pending = pending_erasures(records, applied=0)
    assert [(record.action, record.count) for record in records] == [("delete_user", 1)]
    assert erased_users(["x", "y"], pending.pseudonyms) == ["x"]  # the salt comes from the environment
