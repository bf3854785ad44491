"""Off-policy replay: how a challenger would have done, estimated from the served log and its propensities.

The service explores (:mod:`recsys.serving.exploration`) and logs, beside every shown artist, the
probability ``p`` that it was shown. A challenger's like rate (likes per shown artist of its list of ``k``)
is then estimated from the lists the *champion* served, without showing the challenger to anybody: an artist
the challenger would show that the logged list showed counts its like with weight ``1 / p``
(item-level inverse propensity scoring, under two assumptions: a listener likes an artist or not whatever
else the list holds and wherever it stands, and each showing is a new chance of a like: a listener who
likes an artist once and ignores it when shown again makes an artist the log shows rarely look better):

- **IPS**: ``sum(w * like) / sum(k)`` over the logged lists; unbiased for the challenger's artists the
  logging policy can show (``p > 0``); the others count as not liked, so IPS is low when support is short.
- **SNIPS** (self-normalised): ``sum(w * like) / sum(w)``; the like rate of the challenger's artists that the
  logging policy can show: less variance, and right when the unsupported artists are liked as often.
- **support**: ``sum(w) / sum(k)``, an unbiased estimate of the share of the challenger's slots the logging
  policy can show. When its interval reaches below ``MIN_SUPPORT`` the report says the estimates describe
  only part of the list.

The challenger is compared list by list at the logged list's length; the log does not keep a request's
genre or tag filter, so a filtered list is replayed as if unfiltered.

Intervals: the listener is the unit (their lists are not independent), each estimate a ratio of per-listener
sums with its delta-method interval (:func:`recsys.experiments.report.ratio_estimate`). A like counts for
the latest list that showed its artist to its listener within the horizon
(:func:`recsys.experiments.report.attribute`), among every shown list (a like of an artist a later,
interleaved or cold-start list showed again is that list's, never an earlier replayable one's).

:func:`exploration_outcome` is what the report and the dashboard show: the share of lists and slots that
explored and the like rate of explored slots beside the model's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Col
from recsys.experiments.design import INTERLEAVE, SHADOW
from recsys.experiments.report import attribute, ratio_estimate
from recsys.feedback.tables import Served

LIKE = "like"
MIN_SUPPORT = 0.8
"""Below this estimated share of the challenger's slots the logging policy could show, the replay warns."""


def _usable(shown: pd.DataFrame) -> pd.Series:
    """Which shown lists a replay can use: to a named listener by ``/recommend``, not interleaved, with one
    propensity per item."""
    if Served.PROPENSITIES not in shown:
        return pd.Series(False, index=shown.index)
    return (
        shown[Served.PROPENSITIES].notna()
        & (shown[Served.ARM] != INTERLEAVE)
        & shown[Served.USER].map(lambda user: isinstance(user, str) and bool(user))
        & (shown[Served.ENDPOINT] == "recommend")
        & pd.Series(
            [
                isinstance(p, list) and len(p) == len(items)
                for items, p in zip(shown[Served.ITEMS], shown[Served.PROPENSITIES], strict=True)
            ],
            index=shown.index,
        )
    )


def _shown(served: pd.DataFrame) -> pd.DataFrame:
    return served[served[Served.ARM] != SHADOW].reset_index(drop=True)


def replayable(served: pd.DataFrame) -> pd.DataFrame:
    """The logged lists a replay can use: shown (not shadow or interleaved) to a named listener by
    ``/recommend``, with a propensity for each item."""
    shown = _shown(served)
    return shown[_usable(shown)].reset_index(drop=True)


def _usable_lists(
    served: pd.DataFrame, events: pd.DataFrame, horizon: pd.Timedelta
) -> tuple[pd.DataFrame, set[tuple[int, str]]]:
    """The replayable lists and the ``(row, item)`` pairs of them a like was attributed to.

    Likes are attributed among *every* shown list first (a like of an artist that a later, unusable list
    showed again belongs to that list, not to an earlier usable one), then kept for the usable lists.
    """
    shown = _shown(served)
    usable = _usable(shown).to_numpy(dtype=bool)
    lists = shown[usable].reset_index(drop=True)
    likes = events[events[Col.EVENT] == LIKE]
    if lists.empty or likes.empty:
        return lists, set()
    row_of = np.full(len(shown), -1, dtype=np.int64)
    row_of[usable] = np.arange(int(usable.sum()))
    joined = attribute(shown.assign(**{Served.CREDITS: None}), likes, horizon)
    rows = row_of[joined["list_id"].to_numpy(dtype=np.int64)]
    return lists, {(int(r), item) for r, item in zip(rows, joined[Col.ITEM], strict=True) if r >= 0}


def replay(
    served: pd.DataFrame,
    events: pd.DataFrame,
    challenger_lists: Mapping[tuple[str, int], Sequence[str]],
    horizon: pd.Timedelta,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """IPS and SNIPS estimates of the like rate of ``challenger_lists`` (``(user, k) -> item ids``: the ``k``
    items the challenger would show the listener) from the logged lists of ``k`` items and their likes (see
    the module).

    Lists of listeners the challenger has no list for are left out (counted in ``skipped``). The support
    warning reads its interval's lower bound, and ``effective_items`` (``(sum w)^2 / sum w^2``) says how
    many logged items the estimate effectively rests on: a few large weights make the interval unreliable.
    """
    lists, liked = _usable_lists(served, events, horizon)
    users, numerators, weights, slots, likes, shown = [], [], [], [], [], []
    unknown = 0
    squares = 0.0
    max_weight = 0.0
    for row, (user, items, propensities) in enumerate(
        zip(lists[Served.USER], lists[Served.ITEMS], lists[Served.PROPENSITIES], strict=True)
    ):
        wanted = challenger_lists.get((user, len(items)))
        if not wanted:
            unknown += 1
            continue
        chosen = set(wanted)
        weight = numerator = 0.0
        for item, propensity in zip(items, propensities, strict=True):
            if item in chosen and propensity > 0:
                w = 1.0 / propensity
                weight += w
                squares += w * w
                numerator += w * ((row, item) in liked)
                max_weight = max(max_weight, w)
        users.append(user)
        numerators.append(numerator)
        weights.append(weight)
        slots.append(len(chosen))
        likes.append(sum((row, item) in liked for item in items))
        shown.append(len(items))
    frame = pd.DataFrame(
        {"user": users, "x": numerators, "w": weights, "k": slots, "likes": likes, "shown": shown}
    )
    per = frame.groupby("user", sort=True)[["x", "w", "k", "likes", "shown"]].sum()
    support = ratio_estimate(per["w"].to_numpy(), per["k"].to_numpy(), alpha)
    total = float(per["w"].sum())
    out = {
        "ips": asdict(ratio_estimate(per["x"].to_numpy(), per["k"].to_numpy(), alpha)),
        "snips": asdict(ratio_estimate(per["x"].to_numpy(), per["w"].to_numpy(), alpha)),
        "support": support.value,
        "support_interval": [support.low, support.high],
        "effective_items": total * total / squares if squares else 0.0,
        "served_like_rate": asdict(ratio_estimate(per["likes"].to_numpy(), per["shown"].to_numpy(), alpha)),
        "lists": len(frame),
        "listeners": len(per),
        "max_weight": max_weight,
        "skipped": {
            "not_replayable": int(len(served) - len(lists)),
            "challenger_has_no_list": unknown,
        },
        "alpha": alpha,
    }
    low = support.low if support.low == support.low else support.value  # one listener: no interval
    if not low >= MIN_SUPPORT:
        out["warning"] = (
            f"the logging policy could show about {support.value:.0%} of the challenger's slots (at least "
            f"{low:.0%} at {1 - alpha:.0%}): IPS counts the rest as not liked and SNIPS assumes they are "
            "liked as often; more exploration (explore.share, slots, pool_depth) widens it"
        )
    return out


def exploration_outcome(
    served: pd.DataFrame, events: pd.DataFrame, horizon: pd.Timedelta, alpha: float = 0.05
) -> dict[str, Any]:
    """The share of logged lists (and of their slots) that explored, and the like rate of explored slots
    beside the model's own slots in the same lists, per listener with intervals (``{"lists": 0}`` without
    propensities)."""
    lists, liked = _usable_lists(served, events, horizon)
    if lists.empty:
        return {"lists": 0}
    rows = []
    for row, (user, items, explored) in enumerate(
        zip(lists[Served.USER], lists[Served.ITEMS], lists[Served.EXPLORED], strict=True)
    ):
        places = set(explored or ())
        for place, item in enumerate(items):
            rows.append((user, place in places, (row, item) in liked))
    slots = pd.DataFrame(rows, columns=["user", "explored", "liked"])
    out: dict[str, Any] = {
        "lists": len(lists),
        "list_share": float(lists[Served.EXPLORED].map(lambda e: bool(e)).mean()),
        "slot_share": float(slots["explored"].mean()),
    }
    for name, part in (("explored", slots[slots["explored"]]), ("model", slots[~slots["explored"]])):
        per = part.groupby("user")["liked"].agg(["sum", "size"])
        out[f"{name}_like_rate"] = asdict(
            ratio_estimate(per["sum"].to_numpy(float), per["size"].to_numpy(float), alpha)
        )
    return out
