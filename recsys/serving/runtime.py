"""The service's moving parts: settings from the environment, the swappable model, the feedback store
and the log of served recommendations.

Several worker processes serve one port. A reload, a dislike or an erasure handled by one worker must
reach the others before the client's next request, so each change also appends a byte to a signal file
in a runtime folder shared by the workers; every worker compares that file's ``stat`` (about a
microsecond) before it trusts what it holds. Workers on other machines share no folder: they pick up
dislikes every :attr:`ServingSettings.dislike_sync_s` seconds (see :class:`Feedback`).
"""

from __future__ import annotations

import collections
import functools
import gc
import hashlib
import logging
import math
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recsys import registry
from recsys.io import write_text
from recsys.loop.events import FeedbackEvent
from recsys.loop.feedback import AddResult, FeedbackStore, FeedbackUnavailableError, feedback_url
from recsys.loop.feedback_db import ServedRecommendation
from recsys.serving.state import ServingState

_LOG = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "RECSYS_ADMIN_TOKEN"
RUNTIME_DIR_ENV = "RECSYS_RUNTIME_DIR"
ORIGINS_ENV = "RECSYS_ALLOWED_ORIGINS"
SERVED_LOG_MAX_PER_S_ENV = "RECSYS_SERVED_LOG_MAX_PER_S"
"""Most served lists a worker logs per second (float > 0, default 50)."""
SERVED_LOG_SAMPLE_ENV = "RECSYS_SERVED_LOG_SAMPLE"
"""Share of answered recommendation requests logged to the store (float 0-1, default 1; 0 turns it off)."""
RELOAD_SIGNAL, DISLIKE_SIGNAL, ERASE_SIGNAL = "reload", "dislike", "erase"
_NOTHING: frozenset[str] = frozenset()

Counter = Callable[[str, bool], None]
DropCounter = Callable[[str, int], None]
"""Adds ``n`` dropped served lists under a reason (``queue_full`` or ``store_unavailable``)."""
QUEUE_FULL, STORE_UNAVAILABLE = "queue_full", "store_unavailable"


class ServingSettings(BaseModel):
    """Settings of one service process, read from the environment when the service starts."""

    model_config = ConfigDict(frozen=True)

    home: Path
    feedback_url: str
    admin_token: str | None
    runtime_dir: Path
    allowed_origins: tuple[str, ...] = ()
    dislike_sync_s: float = Field(5.0, gt=0.0)
    dislike_full_sync_s: float = Field(600.0, gt=0.0)
    feedback_retry_s: float = 5.0
    served_log_sample: float = Field(1.0, ge=0.0, le=1.0)
    served_log_flush_s: float = Field(1.0, gt=0.0)
    served_log_capacity: int = Field(20_000, ge=1)
    served_log_max_per_s: float = Field(50.0, gt=0.0)

    @classmethod
    def from_env(cls) -> ServingSettings:
        """``BENTOML_HOME``, ``RECSYS_FEEDBACK_URL``, ``RECSYS_ADMIN_TOKEN``, ``RECSYS_RUNTIME_DIR``, ...

        The runtime folder defaults to one per (model store, feedback store) pair under the temp folder,
        so the workers of one service share it and two unrelated services do not.
        """
        home = registry.bentoml_home()
        url = feedback_url()
        digest = hashlib.sha256(f"{home}\n{url}".encode()).hexdigest()[:16]
        runtime = os.environ.get(RUNTIME_DIR_ENV, "").strip() or os.path.join(
            tempfile.gettempdir(), f"recsys-serving-{digest}"
        )
        origins = tuple(
            o.strip().rstrip("/") for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip()
        )
        token = os.environ.get(ADMIN_TOKEN_ENV) or None
        return cls(
            home=home,
            feedback_url=url,
            admin_token=token,
            runtime_dir=Path(runtime),
            allowed_origins=origins,
            served_log_sample=served_log_sample_from_env(),
            served_log_max_per_s=served_log_max_per_s_from_env(),
        )


def served_log_sample_from_env() -> float:
    """The sampling rate in ``RECSYS_SERVED_LOG_SAMPLE`` (1 when unset or blank).

    Raises
    ------
    ValueError
        When the value is not a number between 0 and 1.
    """
    raw = os.environ.get(SERVED_LOG_SAMPLE_ENV, "").strip()
    try:
        rate = float(raw) if raw else 1.0
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:  # also refuses nan
        raise ValueError(f"{SERVED_LOG_SAMPLE_ENV} must be a number between 0 and 1, got {raw!r}")
    return rate


def served_log_max_per_s_from_env() -> float:
    """The cap in ``RECSYS_SERVED_LOG_MAX_PER_S`` (lists per second and worker; 50 when unset or blank).

    Raises
    ------
    ValueError
        When the value is not a positive number.
    """
    raw = os.environ.get(SERVED_LOG_MAX_PER_S_ENV, "").strip()
    try:
        cap = float(raw) if raw else 50.0
    except ValueError:
        cap = math.nan
    if not cap > 0:  # also refuses nan
        raise ValueError(f"{SERVED_LOG_MAX_PER_S_ENV} must be a positive number, got {raw!r}")
    return cap


RELOADED_TAG = "reloaded-tag"
"""File in the signals folder naming the model the last announced reload loaded."""


class Signals:
    """Change counters shared by the workers of one service: files that grow by a byte per change."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def bump(self, name: str) -> None:
        """Record a change (visible to every worker once this returns)."""
        with open(self.folder / name, "ab") as handle:
            handle.write(b".")

    def version(self, name: str) -> tuple[int, int, int]:
        """Changes whenever :meth:`bump` ran for ``name``; ``(0, 0, 0)`` before the first bump."""
        try:
            found = os.stat(self.folder / name)
        except FileNotFoundError:
            return (0, 0, 0)
        return (found.st_ino, found.st_size, found.st_mtime_ns)


class ModelHolder:
    """The current :class:`ServingState`; reloads build a new state fully, then replace one reference."""

    def __init__(self, home: Path, signals: Signals) -> None:
        self.home, self.signals = home, signals
        self.state: ServingState | None = None
        self.error: str | None = None
        self.seen = signals.version(RELOAD_SIGNAL)
        self._lock = threading.Lock()

    def reload(self, announce: bool = False) -> tuple[str | None, str | None]:
        """Load the registry's champion and swap it in; on failure keep the current state.

        Returns ``(previous version, error)``; ``error`` is None on success. ``announce`` tells the other
        workers to load the very model this one loaded (not whatever is champion when they get to it,
        which may have changed in between).
        """
        with self._lock:
            previous = self.state.version if self.state is not None else None
            self.seen = self.signals.version(RELOAD_SIGNAL)
            tag = "champion" if announce else self.announced_tag()
            try:
                fresh = ServingState(registry.load_artifact(tag, home=self.home))
            except Exception as err:  # any failure to load must leave the served model untouched
                self.error = f"{type(err).__name__}: {err}"
                _LOG.error("model reload failed, still serving %s: %s", previous, self.error)
                return previous, self.error
            self.state, self.error = fresh, None
            # The state is hundreds of thousands of long-lived objects; keeping them out of the cyclic
            # collector's generations avoids full collections that stall requests for tens of ms.
            gc.collect()
            gc.freeze()
            if announce:
                write_text(self.signals.folder / RELOADED_TAG, fresh.version)
                self.signals.bump(RELOAD_SIGNAL)
                self.seen = self.signals.version(RELOAD_SIGNAL)
            _LOG.info("serving model %s (was %s)", fresh.version, previous)
            return previous, None

    def announced_tag(self) -> str:
        """The model another worker announced, or the champion when none was announced yet."""
        try:
            return (self.signals.folder / RELOADED_TAG).read_text(encoding="utf-8").strip() or "champion"
        except FileNotFoundError:
            return "champion"

    def needs_reload(self) -> bool:
        """True when another worker announced a reload, or no model is loaded yet."""
        return self.state is None or self.signals.version(RELOAD_SIGNAL) != self.seen


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


class ServedLog:
    """Answered recommendation lists, queued in memory and written to the store in batches by a thread.

    Logging never fails or slows a recommendation: :meth:`record` samples, then appends one tuple to a
    bounded deque, and a daemon thread writes what is queued every ``flush_s`` seconds. When the queue
    is full the new list is dropped; when the store is down the batch being written is dropped and
    writing pauses for ``retry_s`` (the queue then fills and drops). Drops are counted by reason and
    reported to ``on_drop`` (the Prometheus counter) from the writer thread, never on the hot path.

    Parameters
    ----------
    write : callable
        Stores a batch and returns how many it stored (:meth:`Feedback.add_served`).
    sample : float
        Share of requests logged, 0 to 1 (0 turns logging off).
    max_per_s : float
        Most lists logged per second (a token bucket, burst of one second's worth): at low traffic every
        sampled list is logged, at high traffic the writer's cost stays bounded. Its SQL work holds the
        GIL, so logging all of ~1,000 req/s cut the service's tail-bounded capacity by two thirds in the
        soak benchmark. Lists over the cap are counted in :attr:`rate_limited`, not as drops.
    capacity : int
        Most lists held in memory.
    flush_s, retry_s : float
        Seconds between writes, and pause after a failed write.
    rng : callable, optional
        Uniform floats in ``[0, 1)`` for sampling (default :func:`random.random`).
    clock : callable, optional
        Monotonic seconds, for the pause after a failure.
    on_drop, on_write : callable, optional
        Counters of dropped lists (by reason) and of written lists, called from the writer.
    """

    MAX_BATCH = 5_000
    WARN_EVERY_S = 60.0

    def __init__(
        self,
        write: Callable[[Sequence[ServedRecommendation]], int],
        *,
        sample: float,
        capacity: int,
        flush_s: float,
        retry_s: float,
        max_per_s: float = math.inf,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        on_drop: DropCounter | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be between 0 and 1, got {sample}")
        if not max_per_s > 0:
            raise ValueError(f"max_per_s must be positive, got {max_per_s}")
        self.sample, self.capacity, self.flush_s, self.retry_s = sample, capacity, flush_s, retry_s
        self.max_per_s = max_per_s
        self._tokens, self._refilled_at = max_per_s, clock()
        self.rate_limited = 0
        self._write, self._rng, self._clock = write, rng, clock
        self._queue: collections.deque[ServedRecommendation] = collections.deque()
        self._full = 0  # written by the event loop only; reported by the writer
        self._failed: collections.Counter[str] = collections.Counter()
        self._reported: collections.Counter[str] = collections.Counter()
        self.written = 0
        self._on_drop, self._on_write = on_drop, on_write
        self._paused_until = -math.inf
        self._warned_at = -math.inf
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether any request is logged (``sample > 0``)."""
        return self.sample > 0.0

    @property
    def queued(self) -> int:
        """Lists waiting to be written."""
        return len(self._queue)

    @property
    def dropped(self) -> dict[str, int]:
        """Lists dropped so far, by reason (``queue_full``, ``store_unavailable``, ``write_failed``)."""
        return {QUEUE_FULL: self._full, **self._failed}

    def record(
        self, endpoint: str, user_id: str | None, answer: dict[str, Any], bias_strength: float
    ) -> None:
        """Queue one answer of ``/recommend`` (``endpoint="recommend"``) or ``/recommend/new-listener``.

        ``bias_strength`` is the state's re-ranking strength; cold-start popularity lists are never
        re-ranked, so they are logged with 0.
        """
        if self.sample < 1.0 and (self.sample == 0.0 or self._rng() >= self.sample):
            return
        if not self._take_token():
            self.rate_limited += 1
            return
        if len(self._queue) >= self.capacity:
            self._full += 1
            return
        try:
            cold = bool(answer["cold_start"])
            items = tuple([item["item_id"] for item in answer["items"]])
            self._queue.append(
                ServedRecommendation(
                    datetime.now(UTC),
                    user_id,
                    endpoint,
                    answer["model_version"],
                    cold,
                    items,
                    0.0 if cold else bias_strength,
                )
            )
        except Exception as err:  # a malformed answer must still reach the client
            _LOG.warning("served list not logged: %s", type(err).__name__)

    def _take_token(self) -> bool:
        if self.max_per_s == math.inf:
            return True
        now = self._clock()
        self._tokens = min(self.max_per_s, self._tokens + (now - self._refilled_at) * self.max_per_s)
        self._refilled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def start(
        self, on_drop: DropCounter | None = None, on_write: Callable[[int], None] | None = None
    ) -> None:
        """Start the writer thread (no-op when disabled or already started); given counters replace them."""
        self._on_drop = on_drop or self._on_drop
        self._on_write = on_write or self._on_write
        if self._thread is not None or not self.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="served-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop the writer thread and write what is still queued (one try); return lists written then."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._paused_until = -math.inf
        return self.flush()

    def flush(self) -> int:
        """Write everything queued, in batches of at most :attr:`MAX_BATCH`; return lists written."""
        with self._lock:
            written = 0
            if self._clock() >= self._paused_until:
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(min(self.MAX_BATCH, len(self._queue)))]
                    stored = self._write_batch(batch)
                    if stored is None:
                        break
                    written += stored
            self.written += written
            self._report(written)
            return written

    def _write_batch(self, batch: list[ServedRecommendation]) -> int | None:
        try:
            return self._write(batch)
        except FeedbackUnavailableError as err:
            self._failed[STORE_UNAVAILABLE] += len(batch)
            self._paused_until = self._clock() + self.retry_s
            self._warn(str(err))
        except Exception as err:  # the log is best-effort: count, and keep the thread alive
            self._failed["write_failed"] += len(batch)
            self._warn(type(err).__name__)  # never the message: it could quote a row
        return None

    def _report(self, written: int) -> None:
        if written and self._on_write is not None:
            self._on_write(written)
        if self._on_drop is None:
            return
        for reason, count in self.dropped.items():
            if count > self._reported[reason]:
                self._on_drop(reason, count - self._reported[reason])
                self._reported[reason] = count

    def _warn(self, detail: str) -> None:
        now = self._clock()
        if now - self._warned_at >= self.WARN_EVERY_S:
            self._warned_at = now
            _LOG.warning(
                "served recommendations not logged (dropped so far: %s): %s", dict(self.dropped), detail
            )

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # never let the writer die: the next tick tries again
                _LOG.exception("served log writer failed")


@functools.cache
def prometheus_served_counters() -> tuple[DropCounter, Callable[[int], None]]:
    """``recsys_served_log_dropped_total{reason}`` and ``recsys_served_log_written_total``, once a process.

    ``prometheus_client`` is imported here, once BentoML has set ``PROMETHEUS_MULTIPROC_DIR`` for the
    worker, as for the service's request counter.
    """
    import prometheus_client

    dropped = prometheus_client.Counter(
        "recsys_served_log_dropped", "Served recommendation lists not logged, by reason", ["reason"]
    )
    written = prometheus_client.Counter("recsys_served_log_written", "Served recommendation lists logged")

    def drop(reason: str, count: int) -> None:
        dropped.labels(reason=reason).inc(count)

    return drop, written.inc


class Runtime:
    """Settings, model holder and feedback of one worker process."""

    def __init__(self, settings: ServingSettings, counter: Counter | None = None) -> None:
        self.settings = settings
        self._counter = counter
        self.signals = Signals(settings.runtime_dir)
        self.models = ModelHolder(settings.home, self.signals)
        self.feedback = Feedback(settings, self.signals)
        self.served = ServedLog(
            self.feedback.add_served,
            sample=settings.served_log_sample,
            max_per_s=settings.served_log_max_per_s,
            capacity=settings.served_log_capacity,
            flush_s=settings.served_log_flush_s,
            retry_s=settings.feedback_retry_s,
        )

    @property
    def ready(self) -> bool:
        """Whether a model is loaded."""
        return self.models.state is not None

    def start_served_log(self) -> None:
        """Start the served-list writer, counted in Prometheus (the app's lifespan calls this)."""
        if self.served.enabled:
            self.served.start(*prometheus_served_counters())

    def count(self, endpoint: str, cold_start: bool) -> None:
        """Count one answered recommendation request (Prometheus, when the service provides a counter)."""
        if self._counter is not None:
            self._counter(endpoint, cold_start)
