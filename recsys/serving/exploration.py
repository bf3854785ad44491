"""Exploration with logged propensities: a share of lists shows a long-tail artist the model would not.

Every list shows what the model already believes, so the served log alone cannot say how another model
would have done. With probability ``share`` a known listener's list explores: its last ``slots`` places
are filled with artists drawn uniformly from the listener's *pool* (the long-tail artists, outside the head
that holds ``evaluate.head_share`` of the training listens, among the model's best ``pool_depth`` for them
that the list does not show and they have not listened to; an artist nobody listened to yet, a new
release, is long tail too). Each shown artist carries its *propensity*, the probability that this policy
shows it to this listener now:

- the first ``k - slots`` artists: 1 (always shown);
- the model's last ``slots`` artists: ``1 - share`` (shown unless the list explores);
- an explored artist of a pool of ``P``: ``share * slots / P``.

The served log keeps them beside the arm; :mod:`recsys.experiments.replay` weighs the logged likes by them
to estimate how a challenger would have done (inverse propensity scoring). An empty pool never explores
(every propensity 1), nor does a list of one. Cold-start and interleaved lists never explore (their slots
are a popularity list or credited to a model). Settings: ``params.yaml`` ``explore``, packaged with the model;
``RECSYS_EXPLORE_SHARE`` overrides the share on a service (0 turns exploration off).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> pool = np.array([7, 8])
>>> kept = explore(np.arange(4), np.ones(4), pool, np.zeros(2), share=0.5, slots=1, draw=0.9, rng=rng)
>>> kept.indices.tolist(), kept.propensities, kept.explored
([0, 1, 2, 3], (1.0, 1.0, 1.0, 0.5), ())
>>> moved = explore(np.arange(4), np.ones(4), pool, np.zeros(2), share=0.5, slots=1, draw=0.1, rng=rng)
>>> moved.indices.tolist()[:3], moved.indices[3] in (7, 8), moved.propensities, moved.explored
([0, 1, 2], True, (1.0, 1.0, 1.0, 0.25), (3,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.config import ExploreParams

EXPLORE_SHARE_ENV = "RECSYS_EXPLORE_SHARE"
EXPLORE_REASON = "something new for you: a less-known artist near your taste"


@dataclass(frozen=True)
class Explored:
    """A list after exploration: its items and scores, the explored places (0-based) and every item's
    propensity (the probability the policy shows it to this listener in this request)."""

    indices: np.ndarray
    scores: np.ndarray
    explored: tuple[int, ...]
    propensities: tuple[float, ...]


def explore(
    indices: np.ndarray,
    scores: np.ndarray,
    pool: np.ndarray,
    pool_scores: np.ndarray,
    *,
    share: float,
    slots: int,
    draw: float,
    rng: np.random.Generator,
) -> Explored:
    """The list ``indices`` with its last ``slots`` places explored when ``draw < share`` (see the module).

    ``pool`` holds the artists an explored place may show (none of ``indices``); ``draw`` is uniform in
    ``[0, 1)``, ``rng`` draws the explored artists.
    """
    k = len(indices)
    n = min(slots, len(pool), k - 1)  # a list keeps at least one of the model's own
    if share <= 0.0 or n == 0:
        return Explored(indices, scores, (), (1.0,) * k)
    fixed = (1.0,) * (k - n)
    if draw >= share:
        return Explored(indices, scores, (), fixed + (1.0 - share,) * n)
    picked = np.sort(rng.choice(len(pool), size=n, replace=False))
    return Explored(
        np.concatenate([indices[: k - n], pool[picked]]),
        np.concatenate([scores[: k - n], pool_scores[picked]]),
        tuple(range(k - n, k)),
        fixed + (share * n / len(pool),) * n,
    )


def params_of(metadata: dict[str, Any]) -> ExploreParams:
    """The exploration a model was packaged with (the defaults for a model packaged before it existed)."""
    return ExploreParams.model_validate((metadata.get("params") or {}).get("explore") or {})


class Explorer:
    """One worker's exploration: the share (the model's, or the service's override) and its random draws.

    Used on the event loop only (numpy generators are not thread-safe).
    """

    def __init__(self, share: float | None = None, rng: np.random.Generator | None = None) -> None:
        self.override = share
        self.rng = rng if rng is not None else np.random.default_rng()

    def settings(self, params: ExploreParams) -> ExploreParams:
        """The model's exploration with this service's share."""
        return params if self.override is None else params.model_copy(update={"share": self.override})

    def explore(
        self,
        params: ExploreParams,
        indices: np.ndarray,
        scores: np.ndarray,
        pool: np.ndarray,
        pool_scores: np.ndarray,
    ) -> Explored:
        """:func:`explore` with this worker's draws."""
        return explore(
            indices,
            scores,
            pool,
            pool_scores,
            share=params.share,
            slots=params.slots,
            draw=float(self.rng.random()),
            rng=self.rng,
        )


def mark(items: list[dict[str, Any]], explored: Explored) -> list[dict[str, Any]]:
    """Response entries with their ``propensity``; explored ones also say so (``explored``, its reason)."""
    places = set(explored.explored)
    out = []
    for place, (item, propensity) in enumerate(zip(items, explored.propensities, strict=True)):
        entry = item | {"propensity": float(propensity)}  # never rounded: a tiny one must not become 0
        if place in places:
            entry |= {"explored": True, "reason": EXPLORE_REASON}
        out.append(entry)
    return out
