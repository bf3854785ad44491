"""Merging feedback into the training matrix, the recent-feedback holdout, the cursor and warm starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.columns import Col
from recsys.config import LightFMParams, RetrainParams
from recsys.errors import DataError
from recsys.loop.challenger import (
    align_split,
    champion_training,
    extend_split,
    liked_hit_rate,
    split_feedback_holdout,
    without_evaluation_pairs,
)
from recsys.loop.events import FeedbackEvent
from recsys.loop.exports import FeedbackCursor
from recsys.loop.feedback import FeedbackStore
from recsys.loop.retrain import MergeReport, merge_feedback, retrain
from recsys.models import LightFMRecommender
from recsys.offline.split import Split, validate_split

PARAMS = RetrainParams(play_weight=1.0, like_weight=2.0, skip_weight=0.5, warm_start_epochs=2)
USERS = {"u0": 0, "u1": 1}
ITEMS = {"a": 0, "b": 1, "c": 2}


def _train() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0]], dtype=np.float32))


def _events(*rows: tuple[str, str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[Col.USER, Col.ITEM, Col.EVENT])
    frame[Col.TIMESTAMP] = pd.date_range("2026-01-01", periods=len(rows), freq="min", tz="UTC")
    return frame


def _merge(*rows: tuple[str, str, str]) -> tuple[np.ndarray, MergeReport]:
    merged, report = merge_feedback(_train(), _events(*rows), USERS, ITEMS, PARAMS)
    assert merged.dtype == np.float32
    return merged.toarray(), report


@pytest.mark.parametrize(
    ("event", "pair", "expected"),
    [
        ("play", (0, 0), 2.0),  # existing pair + play_weight
        ("play", (0, 1), 1.0),  # new pair
        ("like", (0, 2), 5.0),
        ("like", (1, 0), 2.0),
        ("skip", (0, 2), 2.5),
    ],
)
def test_each_event_type_changes_its_pair_by_its_weight(
    event: str, pair: tuple[int, int], expected: float
) -> None:
    user, item = f"u{pair[0]}", list(ITEMS)[pair[1]]
    merged, _ = _merge((user, item, event))
    assert merged[pair] == pytest.approx(expected)
    untouched = _train().toarray()
    untouched[pair] = merged[pair]
    np.testing.assert_allclose(merged, untouched)


def test_skips_floor_at_zero_and_remove_the_pair() -> None:
    merged, report = _merge(
        ("u0", "a", "skip"), ("u0", "a", "skip"), ("u0", "a", "skip"), ("u1", "a", "skip")
    )
    sparse, _ = merge_feedback(
        _train(), _events(("u0", "a", "skip"), ("u0", "a", "skip")), USERS, ITEMS, PARAMS
    )
    assert merged[0, 0] == 0.0 and merged[1, 0] == 0.0
    assert sparse.nnz == _train().nnz - 1  # the pair is gone, not stored as an explicit zero
    assert report.pairs_removed == 1
    assert report.pairs_added == 0


def test_dislike_removes_the_pair_even_with_plays_and_likes() -> None:
    merged, report = _merge(
        ("u0", "c", "like"), ("u0", "c", "dislike"), ("u0", "c", "play"), ("u1", "a", "dislike")
    )
    assert merged[0, 2] == 0.0
    assert merged[1, 0] == 0.0  # a dislike of an unknown pair does not create it
    assert report.pairs_removed == 1
    assert report.events_by_type["dislike"] == 2


def test_unknown_items_are_dropped_and_unknown_users_become_new_rows() -> None:
    merged, report = _merge(
        ("u0", "zz", "play"), ("new2", "a", "like"), ("new1", "b", "play"), ("new1", "zz", "like")
    )
    assert report.n_unknown_item_events == 2
    assert report.new_users == ["new1", "new2"]
    assert report.n_new_user_events == 2
    assert report.needs_full_retrain
    assert merged.shape == (4, 3)
    np.testing.assert_allclose(merged[:2], _train().toarray())
    assert merged[2].tolist() == [0.0, 1.0, 0.0] and merged[3].tolist() == [2.0, 0.0, 0.0]


def test_known_users_only_keep_the_shape_and_allow_a_warm_start() -> None:
    merged, report = _merge(("u1", "c", "play"))
    assert merged.shape == (2, 3) and not report.needs_full_retrain
    assert report.pairs_added == 1 and report.pairs_changed == 0


def test_bad_events_name_the_column() -> None:
    with pytest.raises(DataError, match="event"):
        merge_feedback(_train(), _events(("u0", "a", "love")), USERS, ITEMS, PARAMS)
    with pytest.raises(DataError, match="item_id"):
        merge_feedback(_train(), _events(("u0", "a", "play")).drop(columns=Col.ITEM), USERS, ITEMS, PARAMS)


def test_the_cursor_keeps_the_same_export_from_being_merged_twice(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    store.add_events(
        [FeedbackEvent(user_id="u0", item_id="b", event="play", event_id=f"e{i}") for i in range(3)]
    )
    cursor_file = tmp_path / "cursor.json"
    train = _train()
    for _ in range(2):  # a second run must find nothing new
        cursor = FeedbackCursor.load(cursor_file)
        frame = store.export_frame(cursor.position)
        train, _ = merge_feedback(train, frame, USERS, ITEMS, PARAMS)
        cursor.advanced(frame.attrs["cursor"], len(frame), "events.parquet").save(cursor_file)
    assert train[0, 1] == pytest.approx(3 * PARAMS.play_weight)
    saved = FeedbackCursor.load(cursor_file)
    assert saved.position == 3
    assert [entry["events"] for entry in saved.history] == [3, 0]


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


def test_holdout_takes_each_users_latest_events() -> None:
    events = _events(*[("u0", item, "play") for item in "abcde"], ("u1", "a", "like"), ("u1", "b", "like"))
    events = events.sample(frac=1.0, random_state=1)  # the row order must not matter
    rest, held = split_feedback_holdout(events, 0.4, seed=0)
    assert len(rest) + len(held) == len(events)
    latest_u0 = events[events[Col.USER] == "u0"].nlargest(2, Col.TIMESTAMP)
    assert set(held[held[Col.USER] == "u0"].index) == set(latest_u0.index)
    assert held[Col.USER].tolist().count("u1") == 1  # round(0.8) = 1
    assert held[held[Col.USER] == "u1"][Col.ITEM].tolist() == ["b"]
    _, none = split_feedback_holdout(events, 0.0, seed=0)
    assert none.empty


def test_liked_hit_rate_counts_users_whose_liked_item_is_in_the_top_k() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.9, 0.8]])
    exclude = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    holdout = _events(("u0", "c", "like"), ("u1", "a", "like"), ("u1", "b", "like"), ("u0", "b", "play"))
    result = liked_hit_rate(lambda users: scores[users], exclude, holdout, USERS, ITEMS, k=1)
    # u0's top-1 (a excluded) is c: a hit; u1's "b" is a training item, "a" is ranked below c: a miss.
    assert result == {"feedback_hit_rate@1": 0.5, "feedback_users": 2}
    plays_only = holdout[holdout[Col.EVENT] == "play"]
    assert liked_hit_rate(lambda users: scores[users], exclude, plays_only, USERS, ITEMS, k=1) == {
        "feedback_users": 0
    }


@pytest.fixture(scope="module")
def fitted() -> tuple[LightFMRecommender, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((12, 9)) < 0.4).astype(np.float32))
    return LightFMRecommender(LightFMParams(no_components=4, epochs=3), seed=0).fit(matrix), matrix


def test_warm_start_keeps_shapes_changes_scores_and_leaves_the_champion(
    fitted: tuple[LightFMRecommender, sp.csr_matrix],
) -> None:
    model, matrix = fitted
    before = model.score(np.arange(12)).copy()
    events = _events(("u0", "i1", "like"), ("u3", "i2", "play"))
    merged, report = merge_feedback(
        matrix, events, {f"u{i}": i for i in range(12)}, {f"i{i}": i for i in range(9)}, PARAMS
    )
    challenger = retrain(model, merged, report.needs_full_retrain, PARAMS)
    assert challenger is not model
    assert (challenger.n_users, challenger.n_items) == (12, 9)
    assert challenger.epochs_trained == model.epochs_trained + PARAMS.warm_start_epochs
    assert not np.allclose(challenger.score(np.arange(12)), before)
    np.testing.assert_array_equal(model.score(np.arange(12)), before)


def test_new_users_force_a_full_fit_with_the_champions_settings(
    fitted: tuple[LightFMRecommender, sp.csr_matrix],
) -> None:
    model, matrix = fitted
    grown = sp.csr_matrix(sp.vstack([matrix, sp.csr_matrix(np.ones((1, 9), dtype=np.float32))]))
    with pytest.raises(ValueError, match="changed_shape"):
        retrain(model, grown, False, PARAMS)
    challenger = retrain(model, grown, True, PARAMS)
    assert challenger.n_users == 13 and challenger.epochs_trained == model.params.epochs
    assert challenger.seed == model.seed


def _split() -> Split:
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 3, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 4, 0], [1, 0, 0, 0]], dtype=np.float32))
    cold = sp.csr_matrix(np.array([[0, 0, 0, 5], [0, 0, 0, 0]], dtype=np.float32))
    return Split(["u0", "u1"], list("abcd"), train, valid, test, cold, np.array([3]))


def test_champion_training_recovers_train_full_and_the_merged_matrix_after_packaging() -> None:
    split = _split()
    known = split.train + split.valid + split.test + split.cold
    np.testing.assert_array_equal(champion_training(known, split).toarray(), split.train_full.toarray())
    merged, report = merge_feedback(
        split.train_full,
        _events(("new", "c", "like")),
        {"u0": 0, "u1": 1},
        dict(zip("abcd", range(4), strict=True)),
        PARAMS,
    )
    extended = extend_split(split, merged, report.new_users)
    validate_split(extended)
    repackaged = sum(extended.part(name) for name in ("train", "valid", "test", "cold"))
    aligned = align_split(split, extended.user_ids)
    np.testing.assert_array_equal(champion_training(repackaged, aligned).toarray(), merged.toarray())
    with pytest.raises(ValueError, match="first users"):
        align_split(split, ["u1", "u0"])


def test_feedback_on_test_pairs_and_cold_items_is_held_back() -> None:
    events = _events(
        ("u0", "c", "play"), ("u1", "a", "like"), ("u1", "d", "play"), ("u1", "b", "play"), ("x", "a", "play")
    )
    kept, dropped = without_evaluation_pairs(events, _split())
    assert dropped == 3
    assert list(zip(kept[Col.USER], kept[Col.ITEM], strict=True)) == [("u1", "b"), ("x", "a")]
