"""The numbers of the exploratory analysis: long tail, concentration (Gini, top share), mainstreaminess,
tags, audio correlations and join coverage. Pure functions of the prepared tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import AUDIO_FEATURES, Col
from recsys.offline.popularity import item_popularity, mainstreaminess

TOP_FRACTION = 0.01
"""The head whose share of listens is reported: the top 1 % of artists."""
MAINSTREAM_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def user_item_matrix(interactions: pd.DataFrame) -> sp.csr_matrix:
    """Binary user x item CSR matrix; rows and columns follow the sorted external ids."""
    users, _ = pd.factorize(interactions[Col.USER], sort=True)
    items, _ = pd.factorize(interactions[Col.ITEM], sort=True)
    shape = (int(users.max()) + 1 if len(users) else 0, int(items.max()) + 1 if len(items) else 0)
    ones = np.ones(len(users), dtype=np.float64)
    return sp.csr_matrix((ones, (users, items)), shape=shape)


def rank_frequency(interactions: pd.DataFrame, by: str) -> pd.DataFrame:
    """Interactions per ``by`` (``Col.ITEM`` or ``Col.USER``) sorted descending, with ``rank`` from 1."""
    counts = interactions.groupby(by, sort=True).size().sort_values(ascending=False, kind="stable")
    return pd.DataFrame({"rank": np.arange(1, len(counts) + 1), "count": counts.to_numpy(np.int64)})


def lorenz_curve(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve: cumulative share of items (least to most) vs cumulative share of ``values``."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    total = ordered.sum()
    x = np.arange(len(ordered) + 1, dtype=np.float64) / max(len(ordered), 1)
    y = np.concatenate([[0.0], np.cumsum(ordered) / total]) if total > 0 else x.copy()
    return x, y


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values``: 0 = all equal, towards 1 = one item holds everything.

    Examples
    --------
    >>> gini(np.array([1, 1, 1, 1]))
    0.0
    >>> round(gini(np.array([0, 0, 0, 4])), 2)
    0.75
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(ordered), ordered.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2.0 * (ranks @ ordered) / (n * total) - (n + 1) / n)


def top_share(values: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the total held by the ``ceil(fraction * n)`` largest values (at least one)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    total = ordered.sum()
    if total <= 0:
        return 0.0
    k = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[:k].sum() / total)


def user_mainstreaminess(interactions: pd.DataFrame) -> np.ndarray:
    """Per user (sorted ids): mean popularity percentile of their artists (see recsys.offline.popularity)."""
    return mainstreaminess(user_item_matrix(interactions))


def bias_signals(interactions: pd.DataFrame, fraction: float = TOP_FRACTION) -> dict[str, float | int]:
    """Popularity-bias numbers of the interactions, as JSON-able scalars.

    Each share ranks artists by its own measure: plays for the play share, distinct listeners for the
    interaction share. The Gini coefficients are over artists.

    Parameters
    ----------
    interactions
        Prepared interactions with ``Col.USER``, ``Col.ITEM`` and ``Col.PLAYS``.
    fraction
        Size of the head as a fraction of all artists (rounded up to whole artists).

    Returns
    -------
    dict
        ``top1pct_play_share``, ``top1pct_interaction_share``, ``gini_item_popularity``,
        ``gini_item_plays``, ``mainstreaminess_mean`` and ``mainstreaminess_pXX`` quantiles, and counts.
    """
    matrix = user_item_matrix(interactions)
    popularity = item_popularity(matrix)
    plays = interactions.groupby(Col.ITEM, sort=True)[Col.PLAYS].sum().to_numpy(np.float64)
    scores = mainstreaminess(matrix)
    scores = scores[~np.isnan(scores)]
    signals: dict[str, float | int] = {
        "n_users": int(matrix.shape[0]),
        "n_items": int(matrix.shape[1]),
        "n_interactions": len(interactions),
        "total_plays": int(plays.sum()),
        "top1pct_n_items": max(1, math.ceil(fraction * matrix.shape[1])) if matrix.shape[1] else 0,
        "top1pct_play_share": top_share(plays, fraction),
        "top1pct_interaction_share": top_share(popularity, fraction),
        "gini_item_popularity": gini(popularity),
        "gini_item_plays": gini(plays),
        "mainstreaminess_mean": float(scores.mean()) if len(scores) else float("nan"),
    }
    for q in MAINSTREAM_QUANTILES:
        value = float(np.quantile(scores, q)) if len(scores) else float("nan")
        signals[f"mainstreaminess_p{round(q * 100):02d}"] = value
    return signals


def top_tags(item_tags: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` tags applied to the most artists: columns ``tag``, ``n_artists``, ``n_users``."""
    grouped = item_tags.groupby(Col.TAG, sort=True).agg(
        n_artists=(Col.ITEM, "nunique"), n_users=(Col.COUNT, "sum")
    )
    ordered = grouped.sort_values(["n_artists", "n_users"], ascending=False, kind="stable")
    return ordered.head(n).reset_index()


def audio_correlations(items: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlations between the audio features present in ``items`` (pairwise complete)."""
    present = [name for name in AUDIO_FEATURES if name in items.columns]
    return items[present].astype(np.float64).corr(min_periods=2)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def join_coverage(joins: Mapping[str, Any]) -> pd.DataFrame:
    """Match counts of ``quality.json["joins"]`` paired with their totals.

    A key ``X_matched`` or ``X_with_Y`` is a match count whose total is the key ``X`` (missing totals
    give NaN shares). Returns columns ``join``, ``matched``, ``total``, ``share``.
    """
    rows = []
    for key, value in joins.items():
        matched = _number(value)
        if matched is None:
            continue
        if key.endswith("_matched"):
            base = key.removesuffix("_matched")
        elif "_with_" in key:
            base = key.split("_with_", 1)[0]
        else:
            continue
        total = _number(joins.get(base))
        total = total if total is not None and total > 0 else np.nan
        rows.append(
            {"join": key.replace("_", " "), "matched": matched, "total": total, "share": matched / total}
        )
    return pd.DataFrame(rows, columns=["join", "matched", "total", "share"])


def mainstreaminess_histogram(scores: np.ndarray, bins: int = 20) -> pd.DataFrame:
    """Users per mainstreaminess bin on [0, 1]: columns ``mainstreaminess`` (bin centre) and ``users``."""
    counts, edges = np.histogram(scores[~np.isnan(scores)], bins=bins, range=(0.0, 1.0))
    return pd.DataFrame({"mainstreaminess": (edges[:-1] + edges[1:]) / 2, "users": counts})


def lorenz_table(interactions: pd.DataFrame, points: int = 1001) -> pd.DataFrame:
    """Lorenz curves of plays and interactions per artist, thinned to about ``points`` rows for plotting."""
    x, by_interactions = lorenz_curve(interactions.groupby(Col.ITEM).size().to_numpy(np.float64))
    _, by_plays = lorenz_curve(interactions.groupby(Col.ITEM)[Col.PLAYS].sum().to_numpy(np.float64))
    keep = np.unique(np.linspace(0, len(x) - 1, min(points, len(x))).round().astype(int))
    return pd.DataFrame(
        {"artist_share": x[keep], "interaction_share": by_interactions[keep], "play_share": by_plays[keep]}
    )
