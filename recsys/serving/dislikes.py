"""Each worker's view of the feedback store: events written through, every listener's dislikes in memory.

A recommendation never waits for the database: the dislikes are read in full at start, then only what was
stored since (after a local dislike, when another worker signals one, and every
:attr:`recsys.serving.settings.ServingSettings.dislike_sync_s` for workers on other machines), and in
full after an erasure.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from recsys.loop.events import FeedbackEvent
from recsys.loop.feedback import AddResult, FeedbackStore, FeedbackUnavailableError
from recsys.loop.feedback_db import ServedRecommendation
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import DISLIKE_SIGNAL, ERASE_SIGNAL, Signals

_LOG = logging.getLogger(__name__)
_NOTHING: frozenset[str] = frozenset()


class Feedback:
    """The feedback store plus every listener's disliked items, held in memory by each worker.

    A recommendation never waits for the database: :meth:`dislikes` is a dictionary lookup. The index is
    loaded in full when the worker starts and brought up to date by :meth:`sync`, which reads only the
    dislikes stored since the last one (a query on the primary key) and runs in a thread:

    - after a dislike is stored through this worker (before the POST returns), and when another worker
      of the service signals one (before this worker's next answer uses the index), so a listener never
      gets back an artist they just disliked;
    - every :attr:`ServingSettings.dislike_sync_s` seconds, for dislikes stored by services on other
      machines, which share the store but not the signals folder;
    - in full after an erasure signalled by any worker, and every
      :attr:`ServingSettings.dislike_full_sync_s` seconds for erasures made elsewhere.

    Before, each worker cached a listener's dislikes for 30 s and asked the store on a miss: a worker
    that had not yet seen the listeners (a restart, new connections) then ran a query per request and
    stalled for a second under load (measured by the soak benchmark). Memory per worker, measured with
    tracemalloc: 100,000 dislikes of 20,000 listeners take 9.9 MB of dict and sets (~100 bytes a pair),
    plus the id strings.

    A database outage never fails a recommendation: the index keeps what it has, and the store is not
    asked again for ``retry_s`` seconds.
    """

    LATE_COMMIT_IDS = 1_000
    """Each incremental sync re-reads this many ids below its cursor: PostgreSQL hands out ids before
    commit, so a dislike may become visible after one with a higher id (re-reading is idempotent)."""

    def __init__(
        self,
        settings: ServingSettings,
        signals: Signals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = settings.feedback_url
        self.signals, self.clock = signals, clock
        self.sync_s, self.full_sync_s = settings.dislike_sync_s, settings.dislike_full_sync_s
        self.retry_s = settings.feedback_retry_s
        self._store: FeedbackStore | None = None
        self._index: dict[str, frozenset[str]] = {}
        self._cursor = 0
        self._loaded = False
        self._synced_at = self._full_at = -math.inf
        self._seen = self._erased_seen = (-1, -1, -1)
        self._down_until = -math.inf
        self._lock = threading.Lock()
        self._sync_lock = threading.RLock()

    def store(self) -> FeedbackStore:
        """The store, created (with its schema) on first successful use."""
        with self._lock:
            if self._store is None:
                store = FeedbackStore(self.url, create=False, timeout_s=2.0)
                try:
                    store.create_schema()
                except FeedbackUnavailableError:
                    store.close()
                    raise
                self._store = store
            return self._store

    def add(self, events: list[FeedbackEvent]) -> AddResult:
        """Store events durably (raises :class:`FeedbackUnavailableError`); index and announce dislikes."""
        result = self.store().add_events(events)
        if any(event.event == "dislike" for event in events):
            self.signals.bump(DISLIKE_SIGNAL)
            self.sync()
        return result

    def delete_user(self, user_id: str, reason: str) -> int:
        """Erase ``user_id``'s events (audited under a pseudonym), then make every worker forget them.

        The events are gone from the store, so the next retraining export cannot see them either.
        """
        deleted = self.store().delete_user(user_id, reason)
        # The erase signal says "read in full"; the dislike signal, the only one answers check, says "sync".
        self.signals.bump(ERASE_SIGNAL)
        self.signals.bump(DISLIKE_SIGNAL)
        self.sync()
        return deleted

    def dislikes(self, user_id: str) -> frozenset[str]:
        """The items ``user_id`` disliked, as of the last sync (never blocks)."""
        return self._index.get(user_id, _NOTHING)

    @property
    def loaded(self) -> bool:
        """Whether the index has been read in full at least once."""
        return self._loaded

    def signalled(self) -> bool:
        """Whether a worker announced a dislike or an erasure since the last sync (one ``stat``).

        False while the store is known to be down: the answer then goes out with the index as it is.
        """
        return self.clock() >= self._down_until and self.signals.version(DISLIKE_SIGNAL) != self._seen

    def sync_signalled(self) -> None:
        """:meth:`sync` if still :meth:`signalled` once this thread's turn comes (blocking: run in a thread).

        The requests that arrive together after a signal each ask; the first syncs, the others find
        nothing left to do instead of each reading the store again.
        """
        with self._sync_lock:
            if self.signalled():
                self.sync()

    def due(self) -> bool:
        """Whether the background poll should call :meth:`sync`: never loaded, signalled, or time is up."""
        now = self.clock()
        if now < self._down_until:
            return False
        return not self._loaded or now - self._synced_at >= self.sync_s or self.signalled()

    def sync(self) -> None:
        """Bring the index up to date from the store (blocking: run in a thread).

        Reads the whole index when it was never loaded, after an erasure or every ``full_sync_s``; else
        only the dislikes stored since the last sync. On an outage the index stays as it is.
        """
        with self._sync_lock:
            # Versions are read before the store: a signal raised during the read triggers another sync.
            seen, erased = self.signals.version(DISLIKE_SIGNAL), self.signals.version(ERASE_SIGNAL)
            now = self.clock()
            full = not self._loaded or erased != self._erased_seen or now - self._full_at >= self.full_sync_s
            try:
                if full:
                    self._load_all(self.store())
                    self._full_at = now
                else:
                    self._load_since(self.store())
            except FeedbackUnavailableError as err:
                self._down_until = self.clock() + self.retry_s
                _LOG.warning("recommending with the dislikes known so far: %s", err)
                return
            self._seen, self._erased_seen, self._synced_at = seen, erased, now

    def _load_all(self, store: FeedbackStore) -> None:
        started = time.perf_counter()
        pairs, cursor = store.dislikes_since(0)
        # One reference swap: the event loop reads the old index or the new one, never a mix.
        self._index = {user: frozenset(items) for user, items in _by_user(pairs).items()}
        self._cursor, self._loaded = cursor, True
        _LOG.info(
            "dislike index: %d dislikes of %d listeners read in %.0f ms",
            len(pairs),
            len(self._index),
            (time.perf_counter() - started) * 1e3,
        )

    def _load_since(self, store: FeedbackStore) -> None:
        pairs, cursor = store.dislikes_since(max(0, self._cursor - self.LATE_COMMIT_IDS))
        for user, items in _by_user(pairs).items():
            self._index[user] = self._index.get(user, _NOTHING) | items
        self._cursor = max(self._cursor, cursor)

    def add_served(self, records: Sequence[ServedRecommendation]) -> int:
        """Log served lists in the store (raises :class:`FeedbackUnavailableError` when it is down)."""
        return self.store().add_served(records)

    def close(self) -> None:
        """Close the store's connections."""
        if self._store is not None:
            self._store.close()


def _by_user(pairs: Sequence[tuple[str, str]]) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = collections.defaultdict(set)
    for user, item in pairs:
        grouped[user].add(item)
    return grouped
