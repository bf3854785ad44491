"""Monitoring: data drift of listening (Evidently) and popularity bias of recommendations, and triggers.

Pure functions: callers pass DataFrames, matrices and settings; :mod:`flows.monitoring` does the I/O.
Bias is measured on recommendation lists as model indices: the lists the service served and logged
(:func:`served_bias`, with :func:`served_hit_rate` where likes give relevance) and the champion's own
lists (:func:`recommendation_bias`).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import AUDIO_FEATURES, Col
from recsys.config import MonitoringParams
from recsys.loop.feedback import Served
from recsys.offline.evaluation import (
    average_recommendation_popularity,
    catalogue_coverage,
    long_tail_share,
    novelty,
)
from recsys.offline.popularity import PAD_ITEM, item_popularity, popularity_lift

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
UNKNOWN_USER = -1
"""Row of a served list whose listener the model does not know (or an anonymous request)."""
_LIST = "list_no"  # position of a served list, while its items are joined with likes


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

    enough_bias_events: bool | None = None
    """Whether the lift was measured on at least ``min_events`` served lists (None: ``enough_events``)."""

    @property
    def triggered(self) -> bool:
        """A threshold was crossed on a window with at least ``min_events`` events (or served lists)."""
        enough_bias = self.enough_events if self.enough_bias_events is None else self.enough_bias_events
        return (self.enough_events and self.drift) or (enough_bias and self.bias)


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
    return {
        **list_bias(top_k_items, known, head_share),
        **own_listening_lift(top_k_items, known, users),
        "n_users": float(len(users)),
    }


def list_bias(top_k_items: np.ndarray, known: sp.csr_matrix, head_share: float) -> dict[str, float]:
    """The listener-independent part of :func:`recommendation_bias`.

    Returns ``arp``, ``long_tail_share``, ``novelty``, ``coverage``, ``personalisation`` (over all rows)
    and ``k``; popularity is each item's number of listeners in ``known``.
    """
    popularity = item_popularity(known)
    return {
        "arp": average_recommendation_popularity(top_k_items, popularity),
        "long_tail_share": long_tail_share(top_k_items, popularity, head_share),
        "novelty": novelty(top_k_items, popularity, known.shape[0]),
        "coverage": catalogue_coverage(top_k_items, known.shape[1]),
        "personalisation": personalisation(top_k_items),
        "k": float(top_k_items.shape[1]),
    }


def own_listening_lift(top_k_items: np.ndarray, known: sp.csr_matrix, users: np.ndarray) -> dict[str, float]:
    """``own_arp`` (mean popularity of the listeners' own items) and the mean ``popularity_lift``."""
    popularity = item_popularity(known)
    own = (sp.csr_matrix(known)[users] > 0).astype(np.float64)
    counts = np.asarray(own.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        own_arp = np.where(counts > 0, (own @ popularity) / counts, np.nan)
    lift = popularity_lift(top_k_items, known, users)
    return {"own_arp": _nanmean(own_arp), "popularity_lift": _nanmean(lift)}


def served_top_k(
    served: pd.DataFrame, item_index: Mapping[str, int], user_index: Mapping[str, int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Served lists (:meth:`recsys.loop.feedback.FeedbackStore.served_frame`) as model indices.

    Returns
    -------
    top_k : numpy.ndarray
        ``(len(served), k)`` item indices of each list's first ``k`` items; items the model does not
        know and the end of shorter lists are ``PAD_ITEM``.
    users : numpy.ndarray
        Each list's listener row, or :data:`UNKNOWN_USER` (anonymous or unknown to the model).
    """
    top_k = np.full((len(served), k), PAD_ITEM, dtype=np.int64)
    for row, items in enumerate(served[Served.ITEMS]):
        mapped = [item_index.get(item, PAD_ITEM) for item in list(items)[:k]]
        top_k[row, : len(mapped)] = mapped
    users = np.fromiter(
        (
            user_index.get(u, UNKNOWN_USER) if isinstance(u, str) else UNKNOWN_USER
            for u in served[Served.USER]
        ),
        dtype=np.int64,
        count=len(served),
    )
    return top_k, users


def served_bias(
    served: pd.DataFrame,
    known: sp.csr_matrix,
    item_index: Mapping[str, int],
    user_index: Mapping[str, int],
    k: int,
    head_share: float,
) -> dict[str, float]:
    """Popularity bias of served lists, truncated to their first ``k`` items.

    Every list counts for ARP, long-tail share, novelty and coverage (each answer is an exposure);
    personalisation compares the last list of each listener (anonymous lists each count once), so a
    listener asking twice does not look like two listeners getting the same list; ``own_arp`` and
    ``popularity_lift`` use the lists of listeners ``known`` describes.

    Returns
    -------
    dict
        :func:`list_bias` and :func:`own_listening_lift` metrics plus ``n_lists``, ``n_known_lists``,
        ``n_listeners`` (distinct known ids) and ``unknown_item_share`` (served items the model lacks).
    """
    top_k, users = served_top_k(served, item_index, user_index, k)
    metrics = list_bias(top_k, known, head_share)
    metrics["personalisation"] = personalisation(top_k[_last_list_per_listener(served)])
    mine = users != UNKNOWN_USER
    lift = own_listening_lift(top_k[mine], known, users[mine]) if mine.any() else {}
    n_served_items = sum(min(len(items), k) for items in served[Served.ITEMS])
    return {
        **metrics,
        "own_arp": lift.get("own_arp", float("nan")),
        "popularity_lift": lift.get("popularity_lift", float("nan")),
        "n_lists": float(len(served)),
        "n_known_lists": float(mine.sum()),
        "n_listeners": float(len(np.unique(users[mine]))),
        "unknown_item_share": 1.0 - float((top_k != PAD_ITEM).sum()) / n_served_items
        if n_served_items
        else float("nan"),
    }


def served_hit_rate(served: pd.DataFrame, events: pd.DataFrame, k: int) -> dict[str, float]:
    """How often a listener later liked an item of a list served to them (relevance from feedback).

    Only lists with a listener id count. A list is a hit when the same listener liked one of its first
    ``k`` items at or after it was served; its precision is the share of those items liked.

    Returns
    -------
    dict
        ``hit_rate`` (share of lists with a hit), ``precision`` (mean per list) and ``n_lists_with_user``.
    """
    named = served[Served.USER].map(lambda user: isinstance(user, str) and bool(user))
    lists = served.loc[named, [Served.SERVED_AT, Served.USER, Served.ITEMS]].reset_index(drop=True)
    if lists.empty:
        return {"hit_rate": float("nan"), "precision": float("nan"), "n_lists_with_user": 0.0}
    lists[Served.ITEMS] = [list(items)[:k] for items in lists[Served.ITEMS]]
    lists[_LIST] = np.arange(len(lists))
    shown = lists.explode(Served.ITEMS).dropna(subset=[Served.ITEMS])
    likes = events.loc[events[Col.EVENT] == "like", [Col.USER, Col.ITEM, Col.TIMESTAMP]]
    joined = shown.merge(likes, left_on=[Served.USER, Served.ITEMS], right_on=[Col.USER, Col.ITEM])
    later = joined[pd.to_datetime(joined[Col.TIMESTAMP], utc=True) >= joined[Served.SERVED_AT]]
    hits = later.drop_duplicates([_LIST, Col.ITEM]).groupby(_LIST).size()
    hits = hits.reindex(np.arange(len(lists)), fill_value=0).to_numpy(dtype=np.float64)
    lengths = np.maximum(lists[Served.ITEMS].map(len).to_numpy(dtype=np.float64), 1.0)
    return {
        "hit_rate": float((hits > 0).mean()),
        "precision": float((hits / lengths).mean()),
        "n_lists_with_user": float(len(lists)),
    }


def _last_list_per_listener(served: pd.DataFrame) -> np.ndarray:
    """Row positions keeping each listener's last list and every anonymous list."""
    users = served[Served.USER].reset_index(drop=True)
    named = users.map(lambda user: isinstance(user, str) and bool(user)).to_numpy(dtype=bool)
    last = ~users.duplicated(keep="last").to_numpy(dtype=bool)
    return np.flatnonzero(~named | last)


def decide(
    drift_share: float | None,
    popularity_lift_value: float | None,
    n_events: int,
    params: MonitoringParams,
    n_lists: int | None = None,
) -> TriggerDecision:
    """Compare the drift share and the popularity lift with their thresholds.

    ``None`` means the value could not be measured (no events, no champion) and crosses nothing. A
    window with fewer than ``params.min_events`` listening events never triggers: its numbers are noise.
    When the lift was measured on the window's served lists, pass their number as ``n_lists``: the lift
    then needs ``min_events`` lists instead of listening events.
    """
    drift = drift_share is not None and drift_share >= params.drift_share_threshold
    lift = popularity_lift_value
    bias = lift is not None and bool(np.isfinite(lift)) and lift >= params.popularity_lift_threshold
    enough = n_events >= params.min_events
    enough_bias = None if n_lists is None else n_lists >= params.min_events
    reasons = []
    if drift:
        reasons.append(f"drift share {drift_share:.2f} >= {params.drift_share_threshold}")
    if bias:
        reasons.append(f"popularity lift {lift:.2f} >= {params.popularity_lift_threshold}")
    if (drift and not enough) or (bias and not enough and enough_bias is None):
        reasons.append(f"only {n_events} events (< min_events {params.min_events}): not acted on")
    if bias and enough_bias is False:
        reasons.append(f"only {n_lists} served lists (< min_events {params.min_events}): not acted on")
    return TriggerDecision(
        drift=drift, bias=bias, enough_events=enough, reasons=tuple(reasons), enough_bias_events=enough_bias
    )


def _listeners(pairs: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    lookup = items.drop_duplicates(Col.ITEM).set_index(Col.ITEM)[Col.N_LISTENERS]
    values = pairs[Col.ITEM].astype(str).map(lookup).astype(np.float64).to_numpy()
    return values[~np.isnan(values)]


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
