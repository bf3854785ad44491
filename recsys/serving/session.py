"""Within the session: a listener's events since their model was packaged change their next list.

Each worker holds every listener's newest events in a :class:`SessionIndex` (filled and kept up to date by
:class:`recsys.serving.feedback_follower.FeedbackFollower`, on every replica, the way the dislikes are), and a
request turns them into a :class:`Session` against the served model (:func:`session_of`): the events of items
the model knows, stored after the model was packaged (older ones are the retraining's to learn from). The
listener's vector then moves (:func:`adapt`): each event adds its weight (``params.yaml`` ``session``: likes
and plays toward the item, skips and dislikes away) times the item's unit embedding to the listener's unit
vector, an event weighing like ``step`` of the items the vector stands for (a known listener's listened
items, a new listener's favourites), and the result keeps the vector's length, so the balance the model learnt
between taste (the dot product) and item popularity (the item bias) stays. Items with an event leave the
list (``exclude_shown``).

Examples
--------
>>> import numpy as np
>>> unit = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
>>> moved = adapt(np.array([2.0, 0.0, 0.3, 1.0]), unit, np.array([1]), np.array([1.0]), step=1.0)
>>> [round(float(x), 3) for x in moved]  # toward item 1, the same length, the biases untouched
[1.414, 1.414, 0.3, 1.0]
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from recsys.config import SessionParams

SessionRow = tuple[int, str, str, str, float]
"""``(id, user, item, event, time)``, as :meth:`recsys.feedback.store.FeedbackStore.session_events_since`
reads them."""


class SessionEvent(NamedTuple):
    """One event of a listener's session: the store's id, the item, the kind, when (seconds since epoch)."""

    id: int
    item: str
    event: str
    at: float


NO_EVENTS: tuple[SessionEvent, ...] = ()


class SessionIndex:
    """Every listener's newest ``max_events`` events, in memory; idempotent (an id read twice counts once).

    At most ``max_listeners`` listeners are held (``overflow`` then says some are not: their sessions are
    read from the store when they ask). Memory: ~200 bytes an event, so the defaults (50 events, 100,000
    listeners) bound a worker's index by ~1 GB in the worst case; a listener rarely has more than a
    handful of events between two retrainings.
    """

    def __init__(self, max_events: int = 50, max_listeners: int = 100_000) -> None:
        self.max_events, self.max_listeners = max_events, max_listeners
        self._events: dict[str, tuple[SessionEvent, ...]] = {}
        self.overflow = False
        self._lock = threading.Lock()

    def replace(self, rows: Iterable[SessionRow]) -> None:
        """Hold exactly ``rows`` (a full read); when they hold more listeners than the index, the most
        recently active are kept."""
        latest: dict[str, int] = {}
        listed = list(rows)
        for row in listed:
            latest[row[1]] = max(latest.get(row[1], row[0]), row[0])
        active = set(sorted(latest, key=lambda user: -latest[user])[: self.max_listeners])
        fresh = SessionIndex(self.max_events, self.max_listeners)
        fresh.extend(row for row in listed if row[1] in active)
        fresh.overflow = len(latest) > self.max_listeners
        with self._lock:
            self._events, self.overflow = fresh._events, fresh.overflow

    def extend(self, rows: Iterable[SessionRow]) -> None:
        """Add ``rows`` (an incremental read; rows already held are ignored)."""
        grouped: dict[str, list[SessionEvent]] = {}
        for id_, user, item, event, at in rows:
            grouped.setdefault(user, []).append(SessionEvent(id_, item, event, at))
        with self._lock:
            for user, new in grouped.items():
                held = self._events.get(user)
                if held is None and len(self._events) >= self.max_listeners:
                    self.overflow = True
                    continue
                merged = {e.id: e for e in (held or NO_EVENTS)} | {e.id: e for e in new}
                newest = sorted(merged.values())[-self.max_events :]
                self._events[user] = tuple(newest)

    def drop(self, user: str) -> None:
        """Forget a listener's events (an erasure)."""
        with self._lock:
            self._events.pop(user, None)

    def get(self, user: str) -> tuple[SessionEvent, ...] | None:
        """A listener's events, oldest first (never blocks); None when the index is full and does not
        hold the listener (ask the store)."""
        found = self._events.get(user)
        if found is None:
            return None if self.overflow else NO_EVENTS
        return found

    def __len__(self) -> int:
        return len(self._events)


def events_from_store(rows: Sequence[dict[str, str]]) -> tuple[SessionEvent, ...]:
    """A listener's session from :meth:`recsys.feedback.store.FeedbackStore.user_events` (newest first)."""
    events = [
        SessionEvent(-n, row["item_id"], row["event"], datetime.fromisoformat(row["timestamp"]).timestamp())
        for n, row in enumerate(rows)
    ]
    return tuple(reversed(events))


@dataclass(frozen=True)
class Session:
    """A listener's session against one model: the items (model indices) of the counted events, each
    event's weight, and the items to leave out of the next lists."""

    items: np.ndarray
    weights: np.ndarray
    exclude: np.ndarray
    key: int = 0
    """Tells two sessions of a listener apart (a hash of the counted events): the key of their cached list."""

    @property
    def events(self) -> int:
        """Events that count (of items the model knows)."""
        return len(self.items)

    @property
    def liked(self) -> np.ndarray:
        """Items with a positive weight (likes and plays), each once."""
        return np.unique(self.items[self.weights > 0])

    def negative(self) -> Session:
        """The same session with only its skips and dislikes (a new listener's likes are favourites)."""
        keep = self.weights < 0
        return Session(self.items[keep], self.weights[keep], self.exclude, self.key)


EMPTY = Session(np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64))


def session_of(
    events: Sequence[SessionEvent],
    item_index: dict[str, int],
    params: SessionParams,
    packaged_at: float,
) -> Session:
    """The events of ``events`` that count for a model packaged at ``packaged_at``: stored after it, of
    items it knows, the newest ``params.max_events``; :data:`EMPTY` when none does or adaptation is off."""
    if not params.enabled or not events:
        return EMPTY
    counted = [e for e in events if e.at > packaged_at and e.item in item_index][-params.max_events :]
    if not counted:
        return EMPTY
    items = np.fromiter((item_index[e.item] for e in counted), dtype=np.int64, count=len(counted))
    weights = np.fromiter((params.weight(e.event) for e in counted), dtype=np.float32, count=len(counted))
    shown = items if params.exclude_shown else items[[e.event == "dislike" for e in counted]]
    return Session(items, weights, np.unique(shown), hash(tuple(counted)))


def adapt(
    vector: np.ndarray, unit_embeddings: np.ndarray, items: np.ndarray, weights: np.ndarray, step: float
) -> np.ndarray:
    """A scoring row ``[u, b_u, 1]`` moved by a session: ``u/|u| + step * sum(w_e * v_e/|v_e|)``, rescaled
    to ``|u|`` (float32). Unchanged without events or when the move cancels the vector out."""
    if len(items) == 0:
        return vector
    embedding = np.asarray(vector[:-2], dtype=np.float64)
    norm = float(np.linalg.norm(embedding))
    pull = (np.asarray(weights, dtype=np.float64)[:, np.newaxis] * unit_embeddings[items]).sum(axis=0)
    moved = (embedding / norm if norm > 0 else 0.0) + step * pull
    length = float(np.linalg.norm(moved))
    if length < 1e-9:
        return vector
    target = norm if norm > 0 else 1.0
    return np.concatenate([moved * (target / length), vector[-2:]]).astype(np.float32)


def params_of(metadata: dict[str, Any]) -> SessionParams:
    """The session settings a model was packaged with (the defaults for a model packaged before them)."""
    return SessionParams.model_validate((metadata.get("params") or {}).get("session") or {})
