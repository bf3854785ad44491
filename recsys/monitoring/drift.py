"""Data drift of listening (Evidently): the reference the model was trained on against the current window.

Both become one row per (user, item) listening event described by the listened item: its genre, its
popularity bucket, its number of listeners and its audio profile. Drift is measured on those columns
with distance tests (Wasserstein for numbers, Jensen-Shannon for categories) because their scores do
not depend on the sample sizes: a p-value test on ~100k reference rows flags differences too small to
matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import AUDIO_FEATURES, Col

POPULARITY_BUCKET = "popularity_bucket"
"""Derived column: ``tail``, ``mid`` or ``head`` by the item's number of listeners."""
LOG_LISTENERS = "log_listeners"
"""Derived column: ``log1p`` of the item's number of listeners."""
BUCKETS: tuple[str, ...] = ("tail", "mid", "head")
UNKNOWN_GENRE = "unknown"
LISTENING_EVENTS: tuple[str, ...] = ("play", "like")
"""Feedback events that count as listening (skips and dislikes are not)."""
CATEGORICAL_COLUMNS: tuple[str, ...] = (Col.GENRE, POPULARITY_BUCKET)
NUMERICAL_COLUMNS: tuple[str, ...] = (LOG_LISTENERS, *AUDIO_FEATURES)
NUM_METHOD = "wasserstein"
CAT_METHOD = "jensenshannon"


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift score, the method's threshold and whether the column drifted."""

    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """Evidently's dataset drift: the share of monitored columns that drifted, and each column."""

    share: float
    n_drifted: int
    n_columns: int
    columns: dict[str, ColumnDrift] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``drift.json``)."""
        return {
            "share": self.share,
            "n_drifted": self.n_drifted,
            "n_columns": self.n_columns,
            "columns": {name: vars(column) for name, column in self.columns.items()},
        }


def matrix_pairs(matrix: sp.spmatrix, user_ids: Sequence[str], item_ids: Sequence[str]) -> pd.DataFrame:
    """The stored cells of a user x item matrix as ``user_id, item_id, weight`` rows (weight > 0 only)."""
    coo = sp.coo_matrix(matrix)
    keep = coo.data > 0
    return pd.DataFrame(
        {
            Col.USER: np.asarray(user_ids, dtype=object)[coo.row[keep]],
            Col.ITEM: np.asarray(item_ids, dtype=object)[coo.col[keep]],
            Col.WEIGHT: coo.data[keep].astype(np.float64),
        }
    )


def recent_listening(events: pd.DataFrame, now: datetime, window_days: int) -> pd.DataFrame:
    """Feedback events of :data:`LISTENING_EVENTS` in ``(now - window_days, now]``."""
    start = pd.Timestamp(now - timedelta(days=window_days))
    stamps = pd.to_datetime(events[Col.TIMESTAMP], utc=True)
    keep = events[Col.EVENT].isin(LISTENING_EVENTS) & (stamps > start) & (stamps <= pd.Timestamp(now))
    return events.loc[keep].reset_index(drop=True)


def popularity_edges(reference: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    """Listener counts splitting the reference listening into three equal parts (tail, mid, head)."""
    listeners = _listeners(reference, items)
    return np.nanquantile(listeners, [1 / 3, 2 / 3]) if len(listeners) else np.array([0.0, 0.0])


def listening_frame(pairs: pd.DataFrame, items: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """One row per listening event, described by the listened item (the columns drift is measured on).

    Parameters
    ----------
    pairs : pandas.DataFrame
        Listening events with ``Col.USER`` and ``Col.ITEM``.
    items : pandas.DataFrame
        ``items.parquet``: ``Col.ITEM``, ``Col.N_LISTENERS``, ``Col.GENRE`` and the audio features.
    edges : numpy.ndarray
        Two listener counts from :func:`popularity_edges` of the reference (the same for both windows).

    Returns
    -------
    pandas.DataFrame
        ``Col.USER``, ``Col.ITEM``, :data:`CATEGORICAL_COLUMNS` and :data:`NUMERICAL_COLUMNS`. Items
        missing from ``items`` get genre ``unknown`` and no numbers.
    """
    audio = [c for c in AUDIO_FEATURES if c in items.columns]
    described = items[[Col.ITEM, Col.N_LISTENERS, Col.GENRE, *audio]].drop_duplicates(Col.ITEM)
    frame = pairs[[Col.USER, Col.ITEM]].astype(str).merge(described, on=Col.ITEM, how="left")
    listeners = frame.pop(Col.N_LISTENERS).astype(np.float64)
    frame[Col.GENRE] = frame[Col.GENRE].fillna(UNKNOWN_GENRE).astype(str)
    bucket = np.digitize(listeners.fillna(0.0).to_numpy(), edges, right=True)
    frame[POPULARITY_BUCKET] = np.asarray(BUCKETS, dtype=object)[bucket]
    frame[LOG_LISTENERS] = np.log1p(listeners)
    for column in AUDIO_FEATURES:
        frame[column] = frame[column].astype(np.float64) if column in frame else np.nan
    return frame[[Col.USER, Col.ITEM, *CATEGORICAL_COLUMNS, *NUMERICAL_COLUMNS]]


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows drawn without replacement (all rows when there are fewer)."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)


def drift_snapshot(
    reference: pd.DataFrame, current: pd.DataFrame, drift_share: float, timestamp: datetime | None = None
) -> Any:
    """Run Evidently's data drift preset on the monitored columns; returns the Evidently ``Snapshot``
    (stamped ``timestamp``, the end of the window, when given).

    Columns with no values in either window (e.g. audio features before any Spotify match) are left
    out, because no test can compare them.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    def usable(columns: Sequence[str]) -> list[str]:
        return [c for c in columns if reference[c].notna().any() and current[c].notna().any()]

    categorical, numerical = usable(CATEGORICAL_COLUMNS), usable(NUMERICAL_COLUMNS)
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=[*categorical, *numerical],
        drift_share=drift_share,
        num_method=NUM_METHOD,
        cat_method=CAT_METHOD,
    )
    columns = [*categorical, *numerical]
    with np.errstate(invalid="ignore", divide="ignore"):
        return Report([preset]).run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
            timestamp=timestamp,
        )


def drift_summary(snapshot_dict: dict[str, Any]) -> DriftSummary:
    """Read the drifted-columns count and each column's score out of ``Snapshot.dict()``."""
    columns: dict[str, ColumnDrift] = {}
    count: dict[str, float] = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            count = metric["value"]
        elif kind.endswith("ValueDrift"):
            score, threshold = float(metric["value"]), float(config["threshold"])
            # Both methods are distances: a column drifts when its distance reaches the threshold.
            columns[str(config["column"])] = ColumnDrift(
                str(config["method"]), threshold, score, score >= threshold
            )
    n_drifted = int(count.get("count", sum(c.drifted for c in columns.values())))
    share = float(count.get("share", n_drifted / len(columns) if columns else 0.0))
    return DriftSummary(share=share, n_drifted=n_drifted, n_columns=len(columns), columns=columns)


def reference_listening(
    matrix: sp.spmatrix, user_ids: Sequence[str], item_ids: Sequence[str], items: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """The training listening as :func:`listening_frame` rows, and the popularity edges it defines."""
    pairs = matrix_pairs(matrix, user_ids, item_ids)
    edges = popularity_edges(pairs, items)
    return listening_frame(pairs, items, edges), edges


def _listeners(pairs: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    lookup = items.drop_duplicates(Col.ITEM).set_index(Col.ITEM)[Col.N_LISTENERS]
    values = pairs[Col.ITEM].astype(str).map(lookup).astype(np.float64).to_numpy()
    return values[~np.isnan(values)]


@dataclass(frozen=True)
class Reference:
    """What the current window is compared with: the training listening (sampled), the items, the
    popularity edges it defines, and the test split's listeners (the champion's own lists are theirs)."""

    frame: pd.DataFrame
    items: pd.DataFrame
    edges: np.ndarray
    test_users: list[str]


def project_reference(split: Any, items: pd.DataFrame, max_rows: int, seed: int) -> Reference:
    """The :class:`Reference` of a project's split (:class:`recsys.offline.split.Split`) and items table,
    at most ``max_rows`` rows of listening (sampled with ``seed``)."""
    frame, edges = reference_listening(split.train_full, split.user_ids, split.item_ids, items)
    test_users = [split.user_ids[row] for row in np.flatnonzero(split.test.getnnz(axis=1))]
    return Reference(sample_rows(frame, max_rows, seed), items, edges, test_users)
