"""Erasure on the retraining path: jobs and their salt, matching pseudonyms, purging exported files, finding
cached copies and models holding a listener, resetting training rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from recsys.columns import Col
from recsys.errors import ConfigError
from recsys.feedback.erasure_jobs import ErasureJob
from recsys.feedback.erasure_steps import (
    ERASED_PREFIX,
    anonymise_ids,
    erased_users,
    erasure_batch,
    events_holding,
    feedback_file_holding,
    feedback_record,
    held_by_model,
    honour_erasure,
    objects_holding,
    purge_event_files,
    without_erased_events,
)
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.pseudonyms import pseudonymise, salt_check
from recsys.feedback.store import FeedbackStore
from recsys.io import write_parquet
from recsys.offline.gate import GateDecision

SALT = "test-salt"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _events(*rows: tuple[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[Col.USER, Col.ITEM])
    frame[Col.EVENT] = "like"
    frame[Col.EVENT_ID] = [f"e{i}" for i in range(len(rows))]
    return frame


def _job(user: str, job_id: int = 1, salt: str | None = SALT) -> ErasureJob:
    check = salt_check(salt) if salt is not None else None
    return ErasureJob(job_id, pseudonymise(user, salt or SALT), T0, 10, check)


def test_a_batch_holds_each_listener_once_and_refuses_jobs_of_another_salt() -> None:
    batch = erasure_batch([_job("x", 1), _job("z", 2), _job("x", 3), _job("old", 4, salt=None)], SALT)

    assert batch.pseudonyms == {pseudonymise(user, SALT) for user in ("x", "z", "old")}
    assert batch and not erasure_batch([], SALT)
    assert "salt" not in repr(batch) or SALT not in repr(batch)
    with pytest.raises(
        ConfigError, match=r"erasure jobs \[2\].*another pseudonym salt.*RECSYS_PSEUDONYM_SALT"
    ):
        erasure_batch([_job("x", 1), _job("z", 2, salt="the-service-s-salt")], SALT)


def test_a_model_holds_a_listener_by_its_record_or_for_an_older_model_by_its_users() -> None:
    erased = {pseudonymise("u2", SALT)}

    assert held_by_model(frozenset({"u2", "u9"}), [], False, erased, SALT) == erased
    assert held_by_model(frozenset({"u9"}), ["u2"], True, erased, SALT) == set()  # the record decides
    assert held_by_model(None, ["u1", "u2"], True, erased, SALT) == erased  # older retrained: every user
    assert held_by_model(None, ["u1", "u2"], False, erased, SALT) == set()  # older pipeline model: none
    assert feedback_record(["u2", "u2", "x", "u1"], ["u1", "u2", "u3"]) == ["u1", "u2"]


def test_cached_copies_of_exports_are_found_by_content_and_other_files_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "files" / "md5"
    write_parquet(cache / "ab" / "c1", _events(("x", "a"), ("y", "b")))
    write_parquet(cache / "ab" / "c2", _events(("y", "a")))
    write_parquet(cache / "cd" / "e3", pd.DataFrame({Col.USER: ["x"], Col.ITEM: ["a"]}))  # not an export
    (cache / "ef").mkdir(parents=True)
    (cache / "ef" / "g4").write_bytes(b"x,a,like")
    (cache / "ef" / "g5.dir").write_text("[]")
    erased = {pseudonymise("x", SALT)}

    found = objects_holding(tmp_path / "cache", erased, SALT)

    assert found == {str(cache / "ab" / "c1"): erased}
    assert feedback_file_holding(cache / "ab" / "c2", erased, SALT) == set()
    assert feedback_file_holding(cache / "cd" / "e3", erased, SALT) is None
    assert objects_holding(tmp_path / "nowhere", erased, SALT) == {}
    write_parquet(tmp_path / "exports" / "events-3.parquet", _events(("x", "a")))
    write_parquet(tmp_path / "exports" / "events-5.parquet", _events(("y", "a")))
    assert events_holding(tmp_path / "exports", erased, SALT) == {"events-3.parquet": erased}


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


def test_a_deletion_records_a_pending_job_found_by_its_pseudonym(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_PSEUDONYM_SALT", SALT)
    with FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}") as store:
        store.add_events([FeedbackEvent(user_id="x", item_id="a", event="like", event_id="e1")])
        store.delete_user("x", "erasure request")
        jobs = store.erasure_jobs()

    batch = erasure_batch(jobs, SALT)
    assert [(job.status, job.event_watermark, job.salt_check) for job in jobs] == [
        ("pending", 1, salt_check(SALT))
    ]
    assert erased_users(["x", "y"], batch.pseudonyms) == ["x"]  # the salt comes from the environment
