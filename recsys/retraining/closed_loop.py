"""Closed-loop simulation: simulated listeners use the running service, give feedback, and the loop retrains.

A simulated listener is a real Last.fm user some of whose listens were held out before training (their
*future* listens, :func:`hold_out_future`): the model never saw them, neither in training nor in the
fixed test split that the retraining flow protects from training. In a session the listener asks the
service for ``k`` recommendations and reacts like the data says they would (:func:`react`): an artist of
their held-out set is liked, any other is skipped.

The hit rate of a session (:func:`hit_rate`) is the share of listeners whose list holds an artist of
their held-out set that they have not liked yet, so a list that only repeats earlier hits does not
count. Comparing the session after the retraining flow with the same session served without it gives
the loop's gain.

Examples
--------
>>> react(["a", "b", "c"], {"b", "z"})
[('a', 'skip'), ('b', 'like'), ('c', 'skip')]
>>> hit_rate({"u1": ["a", "b"], "u2": ["c"]}, {"u1": {"b"}, "u2": {"x"}})
0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd

from recsys.columns import Col

LIKE, SKIP = "like", "skip"


def hold_out_future(
    interactions: pd.DataFrame, n_listeners: int, fraction: float, min_listens: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pick ``n_listeners`` users and hold out a random ``fraction`` of each one's listens.

    Parameters
    ----------
    interactions : pandas.DataFrame
        Prepared interactions (``Col.USER``, ``Col.ITEM``, ...).
    n_listeners : int
        Users to draw (fewer when fewer have ``min_listens``).
    fraction : float
        Share of each drawn user's listens held out, in (0, 1); at least one listen stays and one goes.
    min_listens : int
        Only users with at least this many listens are drawn, so every listener keeps a profile.
    seed : int
        Seeds the draw.

    Returns
    -------
    tuple
        ``(present, future)``: the interactions to train on and the held-out listens; together they are
        ``interactions`` (each row in exactly one).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    sizes = interactions.groupby(Col.USER).size()
    eligible = np.sort(sizes[sizes >= max(min_listens, 2)].index.to_numpy())
    listeners = rng.choice(eligible, size=min(n_listeners, len(eligible)), replace=False)
    drawn = interactions[Col.USER].isin(listeners).to_numpy()
    keys = rng.random(len(interactions))
    ranks = pd.Series(keys).where(drawn).groupby(interactions[Col.USER].to_numpy()).rank(method="first")
    n_held = np.clip(np.floor(fraction * sizes + 0.5), 1, sizes - 1)
    limit = interactions[Col.USER].map(n_held).to_numpy()
    future = drawn & (ranks.to_numpy() <= limit)
    return interactions[~future], interactions[future]


def react(recommended: Sequence[str], held_out: set[str]) -> list[tuple[str, str]]:
    """The listener's reaction to a list: ``like`` the artists of their held-out set, ``skip`` the rest."""
    return [(item, LIKE if item in held_out else SKIP) for item in recommended]


def hit_rate(lists: Mapping[str, Sequence[str]], targets: Mapping[str, set[str]]) -> float:
    """Share of users in ``lists`` with at least one recommended artist in their ``targets``."""
    if not lists:
        raise ValueError("no lists to measure")
    return float(np.mean([bool(targets.get(user, set()) & set(items)) for user, items in lists.items()]))


def precision(lists: Mapping[str, Sequence[str]], targets: Mapping[str, set[str]], k: int) -> float:
    """Mean share of each list's ``k`` slots holding an artist of the user's ``targets``."""
    if not lists:
        raise ValueError("no lists to measure")
    return float(np.mean([len(targets.get(u, set()) & set(items[:k])) / k for u, items in lists.items()]))


@dataclass
class Session:
    """One session of every listener against the service.

    Attributes
    ----------
    lists : dict
        ``user -> recommended artist ids`` in rank order.
    model_versions : set of str
        The ``model_version`` of every answer (one, unless a reload happened mid-session).
    events : list of dict
        The feedback events posted (empty when the session gave none).
    acknowledged : int
        Events the service acknowledged as stored (``inserted + duplicates``).
    """

    lists: dict[str, list[str]] = field(default_factory=dict)
    model_versions: set[str] = field(default_factory=set)
    events: list[dict[str, str]] = field(default_factory=list)
    acknowledged: int = 0


def run_session(
    client: httpx.Client,
    future: Mapping[str, set[str]],
    k: int,
    *,
    feedback: bool,
    session_id: str,
    hide: Mapping[str, set[str]] | None = None,
    adapt: bool = True,
) -> Session:
    """Every listener of ``future`` asks ``POST /recommend`` for ``k`` artists and, when ``feedback``
    is true, posts its reactions to ``POST /feedback`` with event ids ``<session_id>:<user>:<item>``.

    ``adapt`` false asks for the model's lists as trained (``"session": false``): the listener's earlier
    reactions then change nothing until a retraining learns them.

    ``hide`` (``user -> artists``) is filtered out on the client: the listener asks for ``k`` more than
    that and keeps the first ``k`` others, as if the service left out what it showed them before.

    Raises
    ------
    RuntimeError
        An answer was not 200 or a feedback batch was not fully acknowledged.
    """
    session = Session()
    for user in sorted(future):
        hidden = hide.get(user, set()) if hide else set()
        answer = client.post("/recommend", json={"user_id": user, "k": k + len(hidden), "session": adapt})
        if answer.status_code != 200:
            raise RuntimeError(f"/recommend for {user} answered {answer.status_code}: {answer.text[:200]}")
        body = answer.json()
        session.model_versions.add(body["model_version"])
        session.lists[user] = [item["item_id"] for item in body["items"] if item["item_id"] not in hidden][:k]
        if not feedback:
            continue
        events = _events(user, react(session.lists[user], future[user]), session_id)
        stored = client.post("/feedback", json={"events": events})
        counts = stored.json() if stored.status_code == 200 else {}
        acknowledged = int(counts.get("inserted", 0)) + int(counts.get("duplicates", 0))
        if acknowledged != len(events):
            raise RuntimeError(f"/feedback for {user} answered {stored.status_code}: {stored.text[:200]}")
        session.events += events
        session.acknowledged += acknowledged
    return session


def _events(user: str, reactions: list[tuple[str, str]], session_id: str) -> list[dict[str, str]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"{session_id}:{user}:{item}",
            "user_id": user,
            "item_id": item,
            "event": event,
            "timestamp": now,
        }
        for item, event in reactions
    ]


def shown(session: Session) -> dict[str, set[str]]:
    """``user -> artists`` recommended in the session."""
    return {user: set(items) for user, items in session.lists.items()}


def repeated_share(lists: Mapping[str, Sequence[str]], before: Mapping[str, set[str]]) -> float:
    """Share of all slots of ``lists`` holding an artist the same user was already shown ``before``."""
    slots = sum(len(items) for items in lists.values())
    repeats = sum(len(before.get(user, set()) & set(items)) for user, items in lists.items())
    return repeats / slots if slots else 0.0


def liked(session: Session) -> dict[str, set[str]]:
    """``user -> artists liked`` in the session."""
    out: dict[str, set[str]] = {}
    for event in session.events:
        if event["event"] == LIKE:
            out.setdefault(event["user_id"], set()).add(event["item_id"])
    return out


def unrevealed(future: Mapping[str, set[str]], session: Session) -> dict[str, set[str]]:
    """Each listener's held-out artists minus those they liked in ``session``."""
    likes = liked(session)
    return {user: items - likes.get(user, set()) for user, items in future.items()}
