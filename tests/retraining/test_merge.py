"""Merging feedback into the training matrix (the cursor keeps an export from counting twice) and warm
starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.columns import Col
from recsys.config import LightFMParams, RetrainParams
from recsys.errors import DataError
from recsys.feedback.events import FeedbackEvent
from recsys.feedback.exports import FeedbackCursor
from recsys.feedback.store import FeedbackStore
from recsys.models import LightFMRecommender
from recsys.retraining.merge import MergeReport, merge_feedback, retrain
from tests.helpers import events_frame

PARAMS = RetrainParams(play_weight=1.0, like_weight=2.0, skip_weight=0.5, warm_start_epochs=2)
USERS = {"u0": 0, "u1": 1}
ITEMS = {"a": 0, "b": 1, "c": 2}


def _train() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0]], dtype=np.float32))


def _merge(*rows: tuple[str, str, str]) -> tuple[np.ndarray, MergeReport]:
    merged, report = merge_feedback(_train(), events_frame(*rows), USERS, ITEMS, PARAMS)
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
        _train(), events_frame(("u0", "a", "skip"), ("u0", "a", "skip")), USERS, ITEMS, PARAMS
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
        merge_feedback(_train(), events_frame(("u0", "a", "love")), USERS, ITEMS, PARAMS)
    with pytest.raises(DataError, match="item_id"):
        merge_feedback(
            _train(), events_frame(("u0", "a", "play")).drop(columns=Col.ITEM), USERS, ITEMS, PARAMS
        )


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
    events = events_frame(("u0", "i1", "like"), ("u3", "i2", "play"))
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
