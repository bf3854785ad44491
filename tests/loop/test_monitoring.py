"""Monitoring: listening frames, Evidently drift on injected genre shifts, popularity bias and triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.columns import AUDIO_FEATURES, Col
from recsys.config import MonitoringParams
from recsys.loop.drift import (
    LOG_LISTENERS,
    POPULARITY_BUCKET,
    UNKNOWN_GENRE,
    drift_snapshot,
    drift_summary,
    listening_frame,
    matrix_pairs,
    popularity_edges,
    recent_listening,
)
from recsys.loop.feedback_db import SERVED_COLUMNS, Served
from recsys.loop.monitoring import decide
from recsys.loop.served_bias import (
    UNKNOWN_USER,
    personalisation,
    recommendation_bias,
    served_bias,
    served_hit_rate,
    served_top_k,
)
from recsys.offline.popularity import PAD_ITEM

GENRES = ("rock", "pop", "rap", "jazz")
PARAMS = MonitoringParams(drift_share_threshold=0.5, min_events=50)


def tiny_items(n_items: int = 40, seed: int = 0) -> pd.DataFrame:
    """Items whose audio profile depends on the genre, as real genres' profiles do."""
    rng = np.random.default_rng(seed)
    genre_of = np.array([GENRES[i % len(GENRES)] for i in range(n_items)])
    centre = pd.Series(np.arange(len(GENRES), dtype=float), index=GENRES)[genre_of].to_numpy()
    items = pd.DataFrame(
        {
            Col.ITEM: [f"a{i}" for i in range(n_items)],
            Col.N_LISTENERS: rng.integers(1, 200, n_items),
            Col.GENRE: genre_of,
        }
    )
    for column in AUDIO_FEATURES:
        items[column] = centre + rng.normal(0, 0.3, n_items)
    return items


def sample_listening(items: pd.DataFrame, n: int, seed: int, rock_share: float | None = None) -> pd.DataFrame:
    """``n`` listening events on uniformly drawn items, or with ``rock_share`` of them on rock artists."""
    rng = np.random.default_rng(seed)
    ids = items[Col.ITEM].to_numpy()
    chosen = rng.choice(ids, n)
    if rock_share is not None:
        rock = items.loc[items[Col.GENRE] == "rock", Col.ITEM].to_numpy()
        n_rock = round(rock_share * n)
        chosen = np.concatenate([rng.choice(rock, n_rock), rng.choice(ids, n - n_rock)])
    return pd.DataFrame({Col.USER: [f"u{i % 30}" for i in range(n)], Col.ITEM: chosen})


def drift_of(reference_pairs: pd.DataFrame, current_pairs: pd.DataFrame, items: pd.DataFrame) -> float:
    edges = popularity_edges(reference_pairs, items)
    reference = listening_frame(reference_pairs, items, edges)
    current = listening_frame(current_pairs, items, edges)
    return drift_summary(drift_snapshot(reference, current, PARAMS.drift_share_threshold).dict()).share


def test_listening_shifted_to_rock_drifts_and_triggers() -> None:
    items = tiny_items()
    reference = sample_listening(items, 1500, seed=0)

    shifted = drift_of(reference, sample_listening(items, 400, seed=1, rock_share=0.9), items)
    fresh = drift_of(reference, sample_listening(items, 400, seed=2), items)

    assert shifted >= PARAMS.drift_share_threshold > fresh
    assert decide(shifted, None, 400, PARAMS).triggered
    assert not decide(fresh, None, 400, PARAMS).triggered


def test_drift_summary_reads_each_column_and_the_share() -> None:
    items = tiny_items()
    edges = popularity_edges(sample_listening(items, 300, seed=0), items)
    reference = listening_frame(sample_listening(items, 300, seed=0), items, edges)
    current = listening_frame(sample_listening(items, 300, seed=1, rock_share=1.0), items, edges)

    summary = drift_summary(drift_snapshot(reference, current, 0.5).dict())

    assert summary.columns[Col.GENRE].drifted
    assert summary.n_columns == len(summary.columns) == 3 + len(AUDIO_FEATURES)
    assert summary.n_drifted == sum(c.drifted for c in summary.columns.values())
    assert summary.share == pytest.approx(summary.n_drifted / summary.n_columns)


def test_listening_frame_describes_items_and_marks_unknown_ones() -> None:
    items = tiny_items(8)
    pairs = pd.DataFrame({Col.USER: ["u1", "u1", "u2"], Col.ITEM: ["a0", "a1", "missing"]})
    edges = np.array([50.0, 100.0])

    frame = listening_frame(pairs, items, edges)

    assert frame[Col.GENRE].tolist() == ["rock", "pop", UNKNOWN_GENRE]
    listeners = items.set_index(Col.ITEM)[Col.N_LISTENERS]
    expected = ["tail" if n <= 50 else "mid" if n <= 100 else "head" for n in listeners[["a0", "a1"]]]
    assert frame[POPULARITY_BUCKET].tolist()[:2] == expected
    assert np.isnan(frame.loc[2, LOG_LISTENERS]) and np.isnan(frame.loc[2, "energy"])


def test_popularity_edges_split_reference_listening_in_thirds() -> None:
    items = tiny_items()
    pairs = sample_listening(items, 900, seed=3)

    buckets = listening_frame(pairs, items, popularity_edges(pairs, items))[POPULARITY_BUCKET]

    assert buckets.value_counts(normalize=True).min() > 0.2


def test_matrix_pairs_keeps_positive_cells_with_external_ids() -> None:
    matrix = sp.csr_matrix(np.array([[0.0, 2.0], [1.5, 0.0]]))

    pairs = matrix_pairs(matrix, ["u1", "u2"], ["a", "b"])

    assert sorted(zip(pairs[Col.USER], pairs[Col.ITEM], pairs[Col.WEIGHT], strict=True)) == [
        ("u1", "b", 2.0),
        ("u2", "a", 1.5),
    ]


def test_recent_listening_keeps_plays_and_likes_inside_the_window() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    events = pd.DataFrame(
        {
            Col.USER: ["u"] * 5,
            Col.ITEM: ["a", "b", "c", "d", "e"],
            Col.EVENT: ["play", "like", "skip", "play", "play"],
            Col.TIMESTAMP: [now - timedelta(days=d) for d in (1, 2, 1, 8, -1)],
            Col.EVENT_ID: list("12345"),
        }
    )

    assert recent_listening(events, now, window_days=7)[Col.ITEM].tolist() == ["a", "b"]


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


def test_decide_needs_enough_events_and_reports_its_reasons() -> None:
    assert decide(0.2, 2.5, 100, PARAMS).bias and decide(0.2, 2.5, 100, PARAMS).triggered
    few = decide(0.9, None, 10, PARAMS)
    assert few.drift and not few.triggered and any("min_events" in r for r in few.reasons)
    assert not decide(None, float("nan"), 100, PARAMS).triggered


def test_decide_reads_a_served_lift_against_the_number_of_served_lists() -> None:
    served = decide(None, 2.5, n_events=0, params=PARAMS, n_lists=80)
    assert served.bias and served.triggered and not served.enough_events
    few = decide(None, 2.5, n_events=500, params=PARAMS, n_lists=10)
    assert few.bias and not few.triggered and any("served lists" in r for r in few.reasons)
    assert not decide(0.9, 2.5, n_events=10, params=PARAMS, n_lists=10).triggered
    assert decide(0.9, None, n_events=100, params=PARAMS, n_lists=10).triggered


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
        }
    )
    frame[Served.SERVED_AT] = pd.to_datetime(frame[Served.SERVED_AT], utc=True)
    return frame[list(SERVED_COLUMNS)]


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


@pytest.mark.slow
@pytest.mark.realdata
def test_real_listening_shifted_to_rock_drifts(prepared_real: Path) -> None:
    interactions = pd.read_parquet(prepared_real / "interactions.parquet")
    items = pd.read_parquet(prepared_real / "items.parquet")
    shuffled = interactions.sample(frac=1.0, random_state=0)
    reference, rest = shuffled.iloc[:30_000], shuffled.iloc[30_000:]
    rock = set(items.loc[items[Col.GENRE] == "rock", Col.ITEM])
    on_rock = rest[rest[Col.ITEM].isin(rock)]
    shifted = pd.concat([on_rock.iloc[:2700], rest[~rest[Col.ITEM].isin(rock)].iloc[:300]])

    shifted_share = drift_of(reference, shifted, items)
    fresh_share = drift_of(reference, rest.iloc[:3000], items)

    assert decide(shifted_share, None, len(shifted), PARAMS).triggered
    assert not decide(fresh_share, None, 3000, PARAMS).triggered
