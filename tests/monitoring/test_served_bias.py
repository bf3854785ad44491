"""Popularity bias of recommendation lists: the champion's own and the served ones, with later likes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.columns import Col
from recsys.feedback.tables import SERVED_COLUMNS, Served
from recsys.monitoring.served_bias import (
    UNKNOWN_USER,
    personalisation,
    recommendation_bias,
    served_bias,
    served_hit_rate,
    served_top_k,
)
from recsys.offline.popularity import PAD_ITEM

KNOWN = sp.csr_matrix(
    np.array([[1, 1, 0, 0, 1], [1, 1, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32)
)
USER_INDEX = {"u0": 0, "u1": 1, "u2": 2, "u3": 3}
ITEM_INDEX = {f"a{i}": i for i in range(5)}
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def served_frame(rows: list[tuple[str | None, list[str]]], start: datetime = T0) -> pd.DataFrame:
    """Served lists one minute apart, as :meth:`FeedbackStore.served_frame` returns them."""
    frame = pd.DataFrame(
        {
            Served.SERVED_AT: [start + timedelta(minutes=n) for n in range(len(rows))],
            Served.USER: [user for user, _ in rows],
            Served.ENDPOINT: "recommend",
            Served.MODEL_VERSION: "m:1",
            Served.COLD_START: False,
            Served.ITEMS: [items for _, items in rows],
            Served.BIAS_STRENGTH: 0.0,
            Served.ARM: None,
            Served.CREDITS: None,
            Served.CHALLENGER: None,
            Served.PROPENSITIES: None,
            Served.EXPLORED: None,
        }
    )
    frame[Served.SERVED_AT] = pd.to_datetime(frame[Served.SERVED_AT], utc=True)
    return frame[list(SERVED_COLUMNS)]


def test_personalisation_is_one_minus_mean_overlap() -> None:
    lists = np.array([[0, 1], [0, 2], [3, 4]])
    # Pairs share 1, 0 and 0 of 2 items.
    assert personalisation(lists) == pytest.approx(1 - (1 / 2) / 3)


def test_recommending_the_most_popular_items_shows_a_popularity_lift() -> None:
    known = sp.csr_matrix(
        np.array([[1, 1, 0, 0, 1], [1, 1, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32)
    )
    users = np.array([2, 3])

    popular = recommendation_bias(np.array([[0, 1], [0, 1]]), known, users, head_share=0.5)
    niche = recommendation_bias(np.array([[3, 4], [2, 3]]), known, users, head_share=0.5)

    assert popular["popularity_lift"] > 1.0 > niche["popularity_lift"]
    assert popular["arp"] > niche["arp"] and popular["long_tail_share"] < niche["long_tail_share"]
    assert popular["novelty"] < niche["novelty"] and popular["personalisation"] == 0.0


def test_served_top_k_maps_ids_pads_and_marks_unknown_listeners() -> None:
    served = served_frame([("u2", ["a3", "gone", "a4"]), (None, ["a0"]), ("stranger", ["a1", "a2", "a3"])])

    top_k, users = served_top_k(served, ITEM_INDEX, USER_INDEX, k=2)

    assert top_k.tolist() == [[3, PAD_ITEM], [0, PAD_ITEM], [1, 2]]
    assert users.tolist() == [2, UNKNOWN_USER, UNKNOWN_USER]


def test_served_bias_counts_every_list_and_lifts_only_known_listeners() -> None:
    popular = served_frame([("u2", ["a0", "a1"]), ("u3", ["a0", "a1"]), (None, ["a0", "a1"])])
    niche = served_frame([("u2", ["a3", "a4"]), ("u3", ["a2", "a3"]), (None, ["a2", "a4"])])

    high = served_bias(popular, KNOWN, ITEM_INDEX, USER_INDEX, k=2, head_share=0.5)
    low = served_bias(niche, KNOWN, ITEM_INDEX, USER_INDEX, k=2, head_share=0.5)

    expected = recommendation_bias(np.array([[0, 1], [0, 1]]), KNOWN, np.array([2, 3]), head_share=0.5)
    assert high["popularity_lift"] == pytest.approx(expected["popularity_lift"])
    assert high["popularity_lift"] > 1.0 > low["popularity_lift"]
    assert high["arp"] > low["arp"] and high["long_tail_share"] < low["long_tail_share"]
    assert (high["n_lists"], high["n_known_lists"], high["n_listeners"]) == (3.0, 2.0, 2.0)
    assert high["personalisation"] == 0.0 and high["unknown_item_share"] == 0.0


def test_served_personalisation_compares_each_listeners_last_list() -> None:
    repeated = served_frame([("u2", ["a0", "a1"]), ("u2", ["a0", "a1"]), ("u3", ["a2", "a3"])])
    anonymous = served_frame([(None, ["a0", "a1"]), (None, ["a0", "a1"]), ("u3", ["a2", "a3"])])

    one_each = served_bias(repeated, KNOWN, ITEM_INDEX, USER_INDEX, k=2, head_share=0.5)
    strangers = served_bias(anonymous, KNOWN, ITEM_INDEX, USER_INDEX, k=2, head_share=0.5)

    assert one_each["personalisation"] == 1.0
    assert strangers["personalisation"] == pytest.approx(personalisation(np.array([[0, 1], [0, 1], [2, 3]])))
    assert np.isfinite(strangers["popularity_lift"]) and strangers["n_known_lists"] == 1.0


def test_served_hit_rate_counts_later_likes_by_the_same_listener() -> None:
    served = served_frame([("u1", ["a1", "a2"]), ("u2", ["a3", "a4"]), ("u3", ["a0", "a1"]), (None, ["a1"])])
    at = served[Served.SERVED_AT]
    events = pd.DataFrame(
        {
            Col.USER: ["u1", "u1", "u2", "u9", "u3"],
            Col.ITEM: ["a2", "a1", "a3", "a0", "a0"],
            Col.EVENT: ["like", "like", "like", "like", "play"],
            Col.TIMESTAMP: [
                at[0] + timedelta(seconds=5),  # hit
                at[0] + timedelta(seconds=9),  # second hit of the same list
                at[1] - timedelta(seconds=5),  # liked before it was served: not caused by it
                at[2] + timedelta(seconds=5),  # another listener
                at[2] + timedelta(seconds=5),  # a play is not a like
            ],
            Col.EVENT_ID: list("12345"),
        }
    )

    quality = served_hit_rate(served, events, k=2)

    assert quality["n_lists_with_user"] == 3.0
    assert quality["hit_rate"] == pytest.approx(1 / 3)
    assert quality["precision"] == pytest.approx((2 / 2) / 3)
    assert served_hit_rate(served.iloc[3:], events, k=2)["n_lists_with_user"] == 0.0
