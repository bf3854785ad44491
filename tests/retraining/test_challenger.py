"""A challenger from feedback: the recent-feedback holdout, the liked hit rate, the champion's training
matrix recovered, and feedback on test pairs or cold items held back."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.columns import Col
from recsys.config import RetrainParams
from recsys.offline.split import Split, validate_split
from recsys.retraining.challenger import (
    align_split,
    champion_training,
    extend_split,
    liked_hit_rate,
    split_feedback_holdout,
    without_evaluation_pairs,
)
from recsys.retraining.merge import merge_feedback
from tests.helpers import events_frame

PARAMS = RetrainParams(play_weight=1.0, like_weight=2.0, skip_weight=0.5, warm_start_epochs=2)
USERS = {"u0": 0, "u1": 1}
ITEMS = {"a": 0, "b": 1, "c": 2}


def _split() -> Split:
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 3, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 4, 0], [1, 0, 0, 0]], dtype=np.float32))
    cold = sp.csr_matrix(np.array([[0, 0, 0, 5], [0, 0, 0, 0]], dtype=np.float32))
    return Split(["u0", "u1"], list("abcd"), train, valid, test, cold, np.array([3]))


def test_holdout_takes_each_users_latest_events() -> None:
    events = events_frame(
        *[("u0", item, "play") for item in "abcde"], ("u1", "a", "like"), ("u1", "b", "like")
    )
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
    holdout = events_frame(("u0", "c", "like"), ("u1", "a", "like"), ("u1", "b", "like"), ("u0", "b", "play"))
    result = liked_hit_rate(lambda users: scores[users], exclude, holdout, USERS, ITEMS, k=1)
    # u0's top-1 (a excluded) is c: a hit; u1's "b" is a training item, "a" is ranked below c: a miss.
    assert result == {"feedback_hit_rate@1": 0.5, "feedback_users": 2}
    plays_only = holdout[holdout[Col.EVENT] == "play"]
    assert liked_hit_rate(lambda users: scores[users], exclude, plays_only, USERS, ITEMS, k=1) == {
        "feedback_users": 0
    }


def test_champion_training_recovers_train_full_and_the_merged_matrix_after_packaging() -> None:
    split = _split()
    known = split.train + split.valid + split.test + split.cold
    np.testing.assert_array_equal(champion_training(known, split).toarray(), split.train_full.toarray())
    merged, report = merge_feedback(
        split.train_full,
        events_frame(("new", "c", "like")),
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
    events = events_frame(
        ("u0", "c", "play"), ("u1", "a", "like"), ("u1", "d", "play"), ("u1", "b", "play"), ("x", "a", "play")
    )
    kept, dropped = without_evaluation_pairs(events, _split())
    assert dropped == 3
    assert list(zip(kept[Col.USER], kept[Col.ITEM], strict=True)) == [("u1", "b"), ("x", "a")]
