"""Drift of listening: listening frames, popularity buckets, and Evidently drift on injected genre shifts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.columns import AUDIO_FEATURES, Col
from recsys.config import MonitoringParams
from recsys.monitoring.decisions import decide
from recsys.monitoring.drift import (
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
from tests.helpers import sample_listening, tiny_items

PARAMS = MonitoringParams(drift_share_threshold=0.5, min_events=50)


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
