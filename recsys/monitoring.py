"""Monitoring: data drift of listening (Evidently) and popularity bias of recommendations, and triggers.

Pure functions: callers pass DataFrames, matrices and settings; :mod:`flows.monitoring` does the I/O.

The reference is what the model was trained on and the current window is what listeners played since;
both become one row per (user, item) listening event described by the listened item: its genre, its
popularity bucket, its number of listeners and its audio profile. Drift is measured on those columns
with distance tests (Wasserstein for numbers, Jensen-Shannon for categories) because their scores do
not depend on the sample sizes: a p-value test on ~100k reference rows flags differences too small to
matter.

Examples
--------
>>> decide(0.6, None, n_events=80, params=MonitoringParams()).triggered
True
>>> decide(0.6, None, n_events=10, params=MonitoringParams()).triggered
False
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
from recsys.config import MonitoringParams
from recsys.evaluation import (
    average_recommendation_popularity,
    catalogue_coverage,
    long_tail_share,
    novelty,
)
from recsys.fairness import PAD_ITEM, item_popularity, popularity_lift

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


@dataclass(frozen=True)
class TriggerDecision:
    """What the thresholds say: drift, bias, whether the window had enough events, and why."""

    drift: bool
    bias: bool
    enough_events: bool
    reasons: tuple[str, ...]

    @property
    def triggered(self) -> bool:
        """A threshold was crossed on a window with at least ``min_events`` events."""
        return self.enough_events and (self.drift or self.bias)


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


def drift_snapshot(reference: pd.DataFrame, current: pd.DataFrame, drift_share: float) -> Any:
    """Run Evidently's data drift preset on the monitored columns; returns the Evidently ``Snapshot``.

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


def personalisation(top_k_items: np.ndarray) -> float:
    """1 - the mean share of items two users' lists have in common (1: no two lists overlap).

    Examples
    --------
    >>> personalisation(np.array([[0, 1], [0, 1]]))
    0.0
    >>> personalisation(np.array([[0, 1], [2, 3]]))
    1.0
    """
    n_users, k = top_k_items.shape
    if n_users < 2 or k == 0:
        return float("nan")
    counts = np.bincount(top_k_items[top_k_items != PAD_ITEM]).astype(np.float64)
    # Over ordered pairs of distinct users, sum |L_u & L_v| = sum over items of c * (c - 1).
    shared = float((counts * (counts - 1.0)).sum())
    return 1.0 - shared / (n_users * (n_users - 1.0) * k)


def recommendation_bias(
    top_k_items: np.ndarray, known: sp.csr_matrix, users: np.ndarray, head_share: float
) -> dict[str, float]:
    """Popularity bias of recommendation lists against the listeners' own history.

    Parameters
    ----------
    top_k_items : numpy.ndarray
        ``(len(users), k)`` recommended item indices, padded with ``PAD_ITEM``.
    known : scipy.sparse.csr_matrix
        ``(n_users, n_items)`` interactions that define popularity and each listener's own history.
    users : numpy.ndarray
        Row of ``known`` for each row of ``top_k_items``.
    head_share : float
        Share of interactions held by the head (``params.evaluate.head_share``).

    Returns
    -------
    dict
        ``arp``, ``own_arp`` (mean popularity of the listeners' own items), ``popularity_lift`` (mean
        per-listener ratio), ``long_tail_share``, ``novelty``, ``coverage``, ``personalisation``,
        ``n_users``, ``k``.
    """
    popularity = item_popularity(known)
    own = (sp.csr_matrix(known)[users] > 0).astype(np.float64)
    counts = np.asarray(own.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        own_arp = np.where(counts > 0, (own @ popularity) / counts, np.nan)
    lift = popularity_lift(top_k_items, known, users)
    return {
        "arp": average_recommendation_popularity(top_k_items, popularity),
        "own_arp": _nanmean(own_arp),
        "popularity_lift": _nanmean(lift),
        "long_tail_share": long_tail_share(top_k_items, popularity, head_share),
        "novelty": novelty(top_k_items, popularity, known.shape[0]),
        "coverage": catalogue_coverage(top_k_items, known.shape[1]),
        "personalisation": personalisation(top_k_items),
        "n_users": float(len(users)),
        "k": float(top_k_items.shape[1]),
    }


def decide(
    drift_share: float | None, popularity_lift_value: float | None, n_events: int, params: MonitoringParams
) -> TriggerDecision:
    """Compare the drift share and the popularity lift with their thresholds.

    ``None`` means the value could not be measured (no events, no champion) and crosses nothing. A
    window with fewer than ``params.min_events`` listening events never triggers: its numbers are noise.
    """
    drift = drift_share is not None and drift_share >= params.drift_share_threshold
    lift = popularity_lift_value
    bias = lift is not None and bool(np.isfinite(lift)) and lift >= params.popularity_lift_threshold
    enough = n_events >= params.min_events
    reasons = []
    if drift:
        reasons.append(f"drift share {drift_share:.2f} >= {params.drift_share_threshold}")
    if bias:
        reasons.append(f"popularity lift {lift:.2f} >= {params.popularity_lift_threshold}")
    if (drift or bias) and not enough:
        reasons.append(f"only {n_events} events (< min_events {params.min_events}): not acted on")
    return TriggerDecision(drift=drift, bias=bias, enough_events=enough, reasons=tuple(reasons))


def _listeners(pairs: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    lookup = items.drop_duplicates(Col.ITEM).set_index(Col.ITEM)[Col.N_LISTENERS]
    values = pairs[Col.ITEM].astype(str).map(lookup).astype(np.float64).to_numpy()
    return values[~np.isnan(values)]


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
