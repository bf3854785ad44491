"""Popularity bias of recommendation lists: the ones the service served, and the champion's own.

Lists are model indices. :func:`served_bias` measures the served and logged lists (with
:func:`served_hit_rate` where later likes give relevance); :func:`recommendation_bias` the champion's
top-k for given users; :func:`champion_bias` both, for the monitoring flow, and says which one the
trigger reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import Col
from recsys.feedback.tables import Served
from recsys.offline.metrics import (
    average_recommendation_popularity,
    catalogue_coverage,
    long_tail_share,
    novelty,
)
from recsys.offline.popularity import PAD_ITEM, item_popularity, popularity_lift

UNKNOWN_USER = -1
"""Row of a served list whose listener the model does not know (or an anonymous request)."""
_LIST = "list_no"  # position of a served list, while its items are joined with likes


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
    """Served lists (:meth:`recsys.feedback.store.FeedbackStore.served_frame`) as model indices.

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


def champion_bias(
    artifact: Any,
    served: pd.DataFrame,
    events: pd.DataFrame,
    test_users: Sequence[str],
    k: int,
    head_share: float,
    min_lists: int,
) -> dict[str, Any]:
    """Popularity bias of the window's served lists and of the champion's top-``k`` for ``test_users``.

    ``artifact`` is the champion (a :class:`recsys.registry.ServingArtifact`). ``popularity_lift`` and
    ``source`` at the top say which of the two the trigger reads: the served lists when there are at
    least ``min_lists`` of them, else the test set.
    """
    blocks = {
        "served": _served_block(artifact, served, events, k, head_share, min_lists),
        "test_set": _test_set_block(artifact, test_users, k, head_share),
    }
    source = next((name for name, block in blocks.items() if block["status"] == "ok"), None)
    chosen = blocks[source] if source else {}
    return {
        "status": "ok" if source else "no list to measure",
        "champion": artifact.tag,
        "source": source,
        "popularity_lift": chosen.get("popularity_lift"),
        "n_served": len(served),
        **blocks,
    }


def _served_block(
    artifact: Any, served: pd.DataFrame, events: pd.DataFrame, k: int, head_share: float, min_lists: int
) -> dict[str, Any]:
    if len(served) < min_lists:
        return {
            "status": f"only {len(served)} served lists (< min_events {min_lists})",
            "n_lists": len(served),
        }
    metrics = served_bias(served, artifact.known, artifact.item_index, artifact.user_index, k, head_share)
    versions = served[Served.MODEL_VERSION].value_counts().to_dict()
    return {
        "status": "ok",
        **metrics,
        **served_hit_rate(served, events, k),
        "n_lists": len(served),
        "model_versions": {str(v): int(n) for v, n in versions.items()},
    }


def _test_set_block(artifact: Any, test_users: Sequence[str], k: int, head_share: float) -> dict[str, Any]:
    rows = sorted({artifact.user_index[u] for u in test_users if u in artifact.user_index})
    if not rows:
        return {"status": "no test-set user known to the champion"}
    users = np.asarray(rows, dtype=np.int64)
    top_k, _ = artifact.scoring.recommend(users, k, exclude=artifact.known)
    return {"status": "ok", **recommendation_bias(top_k, artifact.known, users, head_share)}


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
