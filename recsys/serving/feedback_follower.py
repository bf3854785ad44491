"""Each worker's view of the feedback store: events written through, every listener's dislikes and newest
events in memory, and the erasures and model revocations it must honour.

A recommendation never waits for the database: the dislikes and sessions (:mod:`recsys.serving.session`) are
read in full at start, then only what was stored since: after a local event or erasure, when another worker
signals one (a dislike or erasure: before that worker's next answer; a like, play or skip: before its next
answer unless it read the sessions in the last :attr:`FeedbackFollower.SESSION_SYNC_MIN_S`, else by its
1-second poll), and every :attr:`recsys.serving.settings.ServingSettings.dislike_sync_s` for workers on other
machines. The same incremental sync reads the erasure jobs and model revocations recorded since
(:mod:`recsys.feedback.erasure_jobs`): an erasure drops the listener from both indexes (found by pseudonym, no
reread of the table), and the runtime hides the listener from any loaded model that trained on their feedback,
drops their adapted lists and stops serving revoked models.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import AddResult, FeedbackStore, FeedbackUnavailableError
from recsys.feedback.tables import ServedRecommendation
from recsys.serving.session import SessionEvent, SessionIndex, SessionRow, events_from_store
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import DISLIKE_SIGNAL, SESSION_SIGNAL, Signals

_LOG = logging.getLogger(__name__)
_NOTHING: frozenset[str] = frozenset()


class FeedbackFollower:
    """The feedback store plus every listener's disliked items and newest events, held in memory by each
    worker (the events: :attr:`sessions`, up to 100,000 listeners; beyond, read from the store on request).

    A recommendation never waits for the database: :meth:`dislikes` is a dictionary lookup. The index is
    loaded in full when the worker starts and brought up to date by :meth:`sync`, which reads only the
    dislikes, erasures and revocations stored since the last one (queries on primary keys) and runs in a
    thread:

    - after a dislike or an erasure through this worker (before the call returns), and when another worker
      of the service signals one (before this worker's next answer uses the index), so a listener never
      gets back an artist they just disliked;
    - every :attr:`ServingSettings.dislike_sync_s` seconds, for changes made by services on other
      machines, which share the store but not the signals folder (and by the retraining flow: revocations);
    - in full every :attr:`ServingSettings.dislike_full_sync_s` seconds, a safety net.

    An erasure never rereads the table: the erased listener's entry is found by pseudonym (each indexed
    listener's pseudonym is computed once, when they enter the index) and removed, so a loop of anonymous
    erasures costs the workers no more than the erasures themselves. Memory per worker, measured with
    tracemalloc: 100,000 dislikes of 20,000 listeners take 9.9 MB of dict and sets (~100 bytes a pair), plus
    the id strings and a 64-character pseudonym per listener.

    A database outage never fails a recommendation: the index keeps what it has, and the store is not
    asked again for ``retry_s`` seconds.
    """

    LATE_COMMIT_IDS = 1_000
    """Each incremental sync of a PostgreSQL store re-reads this many ids below its cursor: PostgreSQL hands
    out ids before commit, so a dislike may become visible after one with a higher id (re-reading is
    idempotent). SQLite's writers are serialised, so its ids commit in order: none is re-read there, which
    keeps the sync a request may wait for (after a signal) to the rows that are new."""
    MAX_INDEXED_LISTENERS = 500_000
    """Listeners whose dislikes a worker holds in memory (~250 bytes each with their pseudonym: ~125 MB). A
    store with more (anonymous page ids cost nothing to make) is not read whole into every worker: the
    listeners beyond it get their dislikes from the store when they ask (:meth:`dislikes` returns None)."""
    SESSION_SYNC_MIN_S = 0.05
    """A request that finds a session signal (a like, play or skip stored by another worker) syncs the session
    index first, at most once per this many seconds per worker: under a stream of events the workers read
    the store 20 times a second at most, and an event reaches the others within that or the 1-second poll."""
    SIGNAL_WAIT_S = 0.25
    """How long a request that found a signal waits for a sync another thread is running before it answers
    with the index as it is (a slow database must not hold every request)."""

    def __init__(
        self,
        settings: ServingSettings,
        signals: Signals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = settings.feedback_url
        if not self.url.startswith("postgresql"):
            self.LATE_COMMIT_IDS = 0
        self.signals, self.clock = signals, clock
        self.sync_s, self.full_sync_s = settings.dislike_sync_s, settings.dislike_full_sync_s
        self.retry_s = settings.feedback_retry_s
        self.session_window_s = settings.session_window_h * 3600.0
        self.sessions = SessionIndex()
        """Every listener's newest events of the last ``session_window_h`` hours
        (:mod:`recsys.serving.session`), kept up to date like the dislikes: a listener's event reaches every
        worker's next answer."""
        self._session_cursor = 0
        self._store: FeedbackStore | None = None
        self._index: dict[str, frozenset[str]] = {}
        self._pseudonyms: dict[str, str] = {}  # pseudonym -> indexed listener
        self._named: set[str] = set()  # the listeners of _pseudonyms
        self._cursor = self._erasure_cursor = self._revocation_cursor = 0
        self.erased: frozenset[str] = frozenset()
        """Pseudonyms of the listeners erased while jobs were pending or since this worker started."""
        self._erased_up_to: dict[str, float] = {}
        """pseudonym -> the erasure's event watermark: that listener's dislikes up to it are erased ones (a
        late re-read); later ones are new and honoured. Infinite until the job's watermark is read."""
        self.revoked: frozenset[str] = frozenset()
        """Model tags that must never be served (they hold an erased listener's feedback)."""
        self._loaded = False
        self.overflow = False
        """Whether some listeners' dislikes are not in memory (more than :attr:`MAX_INDEXED_LISTENERS`)."""
        self._synced_at = self._full_at = self._sessions_at = -math.inf
        self._seen: tuple[int, ...] = (-1, -1, -1, -1)
        self._session_seen: tuple[int, ...] = (-1, -1, -1, -1)
        self._down_until = -math.inf
        self._lock = threading.Lock()
        self._sync_lock = threading.RLock()

    def store(self) -> FeedbackStore:
        """The store, created (with its schema) on first successful use; every call bounded in time."""
        with self._lock:
            if self._store is None:
                store = FeedbackStore(self.url, create=False, timeout_s=2.0, query_timeout_s=5.0)
                try:
                    store.create_schema()
                except FeedbackUnavailableError:
                    store.close()
                    raise
                self._store = store
            return self._store

    def add(self, events: list[FeedbackEvent]) -> AddResult:
        """Store events durably (raises :class:`FeedbackUnavailableError`); index and announce them (dislikes
        and the listener's session), so the listener's next answer on any worker knows them."""
        result = self.store().add_events(events)
        if any(event.event == "dislike" for event in events):
            self.signals.bump(DISLIKE_SIGNAL)
            self.sync()
        elif events:
            self.signals.bump(SESSION_SIGNAL)
            self.sync_sessions()
        return result

    def delete_user(self, user_id: str, reason: str) -> int:
        """Erase ``user_id``'s events (audited under a pseudonym, a job recorded), forget them here at once
        and announce it to the other workers, which find the erasure by their next sync.

        The events are gone from the store, so the next retraining export cannot see them either.
        """
        store = self.store()
        deleted = store.delete_user(user_id, reason)
        self.sessions.drop(user_id)
        with self._sync_lock:
            self._forget({store.pseudonym(user_id): math.inf})
        self.signals.bump(DISLIKE_SIGNAL)
        self.sync()
        return deleted

    def dislikes(self, user_id: str) -> frozenset[str] | None:
        """The items ``user_id`` disliked, as of the last sync (never blocks); None when the index is full
        and does not hold the listener: ask the store (:meth:`read_dislikes`)."""
        found = self._index.get(user_id)
        if found is None:
            return None if self.overflow else _NOTHING
        return found

    def session(self, user_id: str) -> tuple[SessionEvent, ...] | None:
        """``user_id``'s newest events as of the last sync (never blocks); None when the session index is
        full and does not hold the listener: ask the store (:meth:`read_session`)."""
        return self.sessions.get(user_id)

    def read_session(self, user_id: str) -> tuple[SessionEvent, ...]:
        """A listener's newest events read from the store (blocking; none when the store is down)."""
        try:
            rows = self.store().user_events(user_id, limit=self.sessions.max_events)
        except FeedbackUnavailableError:
            return ()
        return events_from_store(rows)

    def read_dislikes(self, user_id: str) -> frozenset[str]:
        """A listener's dislikes read from the store (blocking; nothing when the store is down)."""
        try:
            return frozenset(self.store().disliked_items(user_id))
        except FeedbackUnavailableError:
            return _NOTHING

    @property
    def loaded(self) -> bool:
        """Whether the index has been read in full at least once."""
        return self._loaded

    @property
    def indexed_users(self) -> int:
        """Listeners in the dislike index."""
        return len(self._index)

    def signalled(self) -> bool:
        """Whether a worker announced a dislike or an erasure since the last sync (one ``stat``).

        False while the store is known to be down: the answer then goes out with the index as it is.
        """
        return self.clock() >= self._down_until and self.signals.version(DISLIKE_SIGNAL) != self._seen

    def sync_signalled(self) -> None:
        """:meth:`sync` if still :meth:`signalled` once this thread's turn comes (blocking: run in a thread).

        The requests that arrive together after a signal each ask; the first syncs, the others find
        nothing left to do instead of each reading the store again. A request waits at most
        :attr:`SIGNAL_WAIT_S` for another thread's sync.
        """
        if not self._sync_lock.acquire(timeout=self.SIGNAL_WAIT_S):
            return
        try:
            if self.signalled():
                self.sync()
        finally:
            self._sync_lock.release()

    def session_signalled(self) -> bool:
        """Whether a worker stored a like, play or skip since the session index was last read (one ``stat``)
        and the index was not read in the last :attr:`SESSION_SYNC_MIN_S`; False while the store is down."""
        now = self.clock()
        return (
            now >= self._down_until
            and now - self._sessions_at >= self.SESSION_SYNC_MIN_S
            and self.signals.version(SESSION_SIGNAL) != self._session_seen
        )

    def sync_sessions(self) -> None:
        """Read the events stored since the session index's cursor (one query on the primary key; blocking:
        run in a thread). Requests that arrive together after a signal wait at most
        :attr:`SIGNAL_WAIT_S` for the one reading."""
        if not self._sync_lock.acquire(timeout=self.SIGNAL_WAIT_S):
            return
        try:
            seen = self.signals.version(SESSION_SIGNAL)
            try:
                self._load_sessions_since(self.store())
            except FeedbackUnavailableError as err:
                self._down_until = self.clock() + self.retry_s
                _LOG.warning("recommending with the sessions known so far: %s", err)
                return
            self._session_seen, self._sessions_at = seen, self.clock()
        finally:
            self._sync_lock.release()

    def due(self) -> bool:
        """Whether the background poll should call :meth:`sync`: never loaded, signalled, or time is up."""
        now = self.clock()
        if now < self._down_until:
            return False
        stale = not self._loaded or now - self._synced_at >= self.sync_s
        return stale or self.signalled() or self.signals.version(SESSION_SIGNAL) != self._session_seen

    def sync(self) -> None:
        """Bring the index, the erasures and the revocations up to date from the store (blocking: run in a
        thread).

        Reads the whole index when it was never loaded or every ``full_sync_s``; else only what was stored
        since the last sync. On an outage everything stays as it is.
        """
        with self._sync_lock:
            # The version is read before the store: a signal raised during the read triggers another sync.
            seen = self.signals.version(DISLIKE_SIGNAL)
            session_seen = self.signals.version(SESSION_SIGNAL)
            now = self.clock()
            full = not self._loaded or now - self._full_at >= self.full_sync_s
            try:
                store = self.store()
                # Erasures first: a listener's rows above an erasure read in this very sync are then theirs
                # to keep (the first load reads the pending erasures itself).
                first = not self._loaded and not self._erasure_cursor
                if not first:
                    self._follow_erasures(store)
                if full:
                    self._load_all(store)
                    self._full_at = now
                else:
                    self._load_since(store)
                if first:
                    self._follow_erasures(store)
                self._follow_revocations(store)
            except FeedbackUnavailableError as err:
                self._down_until = self.clock() + self.retry_s
                _LOG.warning("recommending with the dislikes known so far: %s", err)
                return
            self._seen, self._synced_at = seen, now
            self._session_seen, self._sessions_at = session_seen, now

    def _load_all(self, store: FeedbackStore) -> None:
        started = time.perf_counter()
        if not self._erasure_cursor:
            pending, self._erasure_cursor = store.erasure_watermarks(pending_only=True)
            self._forget(pending)
        pairs, cursor = store.dislikes_since(0)
        grouped = _by_user(pairs, self._erased_up_to, self._pseudonym_of(store))
        self.overflow = len(grouped) > self.MAX_INDEXED_LISTENERS
        if self.overflow:
            _LOG.warning(
                "dislike index full: %d listeners, %d kept in memory",
                len(grouped),
                self.MAX_INDEXED_LISTENERS,
            )
        kept = list(grouped.items())[: self.MAX_INDEXED_LISTENERS]
        index = {user: frozenset(items) for user, items in kept}
        pseudonyms = {self._pseudonym(store, user): user for user in index}
        # One reference swap each: the event loop reads the old index or the new one, never a mix.
        self._index, self._pseudonyms = index, pseudonyms
        self._named = set(index)
        self._cursor, self._loaded = cursor, True
        rows, self._session_cursor = store.session_events_since(
            0, self._window_start(), per_user=self.sessions.max_events
        )
        rows = self._not_erased(rows, store)
        self.sessions.replace(rows)
        self._name(store, rows)
        _LOG.info(
            "dislike index: %d dislikes of %d listeners read in %.0f ms",
            len(pairs),
            len(self._index),
            (time.perf_counter() - started) * 1e3,
        )

    def _load_since(self, store: FeedbackStore) -> None:
        pairs, cursor = store.dislikes_since(max(0, self._cursor - self.LATE_COMMIT_IDS))
        for user, items in _by_user(pairs, self._erased_up_to, self._pseudonym_of(store)).items():
            pseudonym = self._pseudonym(store, user)
            if user not in self._index and len(self._index) >= self.MAX_INDEXED_LISTENERS:
                self.overflow = True
                continue
            self._index[user] = self._index.get(user, _NOTHING) | items
            self._pseudonyms[pseudonym] = user
            self._named.add(user)
        self._cursor = max(self._cursor, cursor)
        self._load_sessions_since(store)

    def _load_sessions_since(self, store: FeedbackStore) -> None:
        since = max(0, self._session_cursor - self.LATE_COMMIT_IDS)
        rows, session_cursor = store.session_events_since(since, self._window_start())
        rows = self._not_erased(rows, store)
        self.sessions.extend(rows)
        self._name(store, rows)
        self._session_cursor = max(self._session_cursor, session_cursor)

    def _window_start(self) -> datetime:
        return datetime.fromtimestamp(time.time() - self.session_window_s, UTC)

    def _name(self, store: FeedbackStore, rows: list[SessionRow]) -> None:
        """Know the pseudonym of each listener of ``rows``, so that an erasure finds their session."""
        for user in {row[1] for row in rows} - self._named:
            if self.sessions.get(user):  # held (a listener the full index refused costs nothing here)
                self._pseudonyms[self._pseudonym(store, user)] = user
                self._named.add(user)

    def _not_erased(self, rows: list[SessionRow], store: FeedbackStore) -> list[SessionRow]:
        """``rows`` without an erased listener's up to their erasure's watermark (as :func:`_by_user`)."""
        if not self._erased_up_to:
            return rows
        pseudonyms: dict[str, str] = {}
        kept = []
        for row in rows:
            user = row[1]
            if user not in pseudonyms:
                pseudonyms[user] = self._pseudonym(store, user)
            if row[0] > self._erased_up_to.get(pseudonyms[user], -1):
                kept.append(row)
        return kept

    def _follow_erasures(self, store: FeedbackStore) -> None:
        new, cursor = store.erasure_watermarks(max(0, self._erasure_cursor - self.LATE_COMMIT_IDS))
        self._erasure_cursor = max(self._erasure_cursor, cursor)
        self._forget(new)

    def _follow_revocations(self, store: FeedbackStore) -> None:
        tags, cursor = store.revocations_since(max(0, self._revocation_cursor - self.LATE_COMMIT_IDS))
        self._revocation_cursor = max(self._revocation_cursor, cursor)
        if set(tags) - self.revoked:
            self.revoked = self.revoked | frozenset(tags)
            _LOG.warning("models revoked, never to be served: %s", sorted(set(tags)))

    def _forget(self, watermarks: Mapping[str, float]) -> None:
        """Record erasures (``pseudonym -> event watermark``; infinite: made here, its job not read yet) and
        drop from the index every listener whose erasure is new here or later than the one known: a
        listener erased, back, and erased again loses what they did in between on every worker. A job read
        again (the window below the cursor) changes nothing."""
        for pseudonym, watermark in watermarks.items():
            known = self._erased_up_to.get(pseudonym)
            if known is None or (watermark > known and not math.isinf(known)):
                user = self._pseudonyms.pop(pseudonym, None)
                if user is not None:
                    self._index.pop(user, None)
                    self.sessions.drop(user)
                    self._named.discard(user)
            if known is None or math.isinf(known) or watermark > known:
                self._erased_up_to[pseudonym] = watermark
        self.erased = self.erased | frozenset(watermarks)

    @staticmethod
    def _pseudonym(store: FeedbackStore, user: str) -> str:
        return store.pseudonym(user)

    def _pseudonym_of(self, store: FeedbackStore) -> Callable[[str], str]:
        return lambda user: self._pseudonym(store, user)

    def add_served(self, records: Sequence[ServedRecommendation]) -> int:
        """Log served lists in the store (raises :class:`FeedbackUnavailableError` when it is down)."""
        return self.store().add_served(records)

    def close(self) -> None:
        """Close the store's connections."""
        if self._store is not None:
            self._store.close()


def _by_user(
    rows: Sequence[tuple[int, str, str]],
    erased_up_to: Mapping[str, float],
    pseudonym: Callable[[str], str],
) -> dict[str, set[str]]:
    """``user -> items`` of the dislike ``rows``, without an erased listener's rows up to their erasure's
    watermark (a late commit the erasure did not see; the erasure flow deletes it). A pseudonym is made once
    per listener, and only when some erasure is known."""
    if not erased_up_to:  # the usual case: one pass
        everything: dict[str, set[str]] = collections.defaultdict(set)
        for _, user, item in rows:
            everything[user].add(item)
        return everything
    grouped: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for id_, user, item in rows:
        grouped[user].append((id_, item))
    kept: dict[str, set[str]] = {}
    for user, pairs in grouped.items():
        up_to = erased_up_to.get(pseudonym(user), -1)
        items = {item for id_, item in pairs if id_ > up_to}
        if items:
            kept[user] = items
    return kept
