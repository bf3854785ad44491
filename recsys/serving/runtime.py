"""The service's moving parts: settings from the environment, the swappable model and the feedback store.

Several worker processes serve one port. A reload or a dislike handled by one worker must reach the
others before the client's next request, so each change also appends a byte to a signal file in a
runtime folder shared by the workers; every worker compares that file's ``stat`` (about a microsecond)
before it trusts its caches. Workers on other machines share no folder: there the dislike cache also
expires after :attr:`ServingSettings.dislike_ttl_s`.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from recsys import registry
from recsys.feedback import AddResult, FeedbackEvent, FeedbackStore, FeedbackUnavailableError
from recsys.io import write_text
from recsys.serving.state import ServingState

_LOG = logging.getLogger(__name__)

FEEDBACK_URL_ENV = "RECSYS_FEEDBACK_URL"
ADMIN_TOKEN_ENV = "RECSYS_ADMIN_TOKEN"
RUNTIME_DIR_ENV = "RECSYS_RUNTIME_DIR"
ORIGINS_ENV = "RECSYS_ALLOWED_ORIGINS"
DEFAULT_FEEDBACK_URL = "sqlite:///data/feedback/feedback.db"
RELOAD_SIGNAL, DISLIKE_SIGNAL = "reload", "dislike"
MAX_CACHED_USERS = 100_000

Counter = Callable[[str, bool], None]


class ServingSettings(BaseModel):
    """Settings of one service process, read from the environment when the service starts."""

    model_config = ConfigDict(frozen=True)

    home: Path
    feedback_url: str
    admin_token: str | None
    runtime_dir: Path
    allowed_origins: tuple[str, ...] = ()
    dislike_ttl_s: float = 30.0
    feedback_retry_s: float = 5.0

    @classmethod
    def from_env(cls) -> ServingSettings:
        """``BENTOML_HOME``, ``RECSYS_FEEDBACK_URL``, ``RECSYS_ADMIN_TOKEN``, ``RECSYS_RUNTIME_DIR``, ...

        The runtime folder defaults to one per (model store, feedback store) pair under the temp folder,
        so the workers of one service share it and two unrelated services do not.
        """
        home = registry.bentoml_home()
        url = os.environ.get(FEEDBACK_URL_ENV, "").strip() or DEFAULT_FEEDBACK_URL
        digest = hashlib.sha256(f"{home}\n{url}".encode()).hexdigest()[:16]
        runtime = os.environ.get(RUNTIME_DIR_ENV, "").strip() or os.path.join(
            tempfile.gettempdir(), f"recsys-serving-{digest}"
        )
        origins = tuple(
            o.strip().rstrip("/") for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip()
        )
        token = os.environ.get(ADMIN_TOKEN_ENV) or None
        return cls(
            home=home, feedback_url=url, admin_token=token, runtime_dir=Path(runtime), allowed_origins=origins
        )


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
    """The feedback store plus a per-worker cache of each listener's disliked items.

    A database outage never fails a recommendation: reads fall back to the cached dislikes (or none)
    and the store is not asked again for ``retry_s`` seconds.
    """

    def __init__(
        self, settings: ServingSettings, signals: Signals, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = settings.feedback_url
        self.signals, self.clock = signals, clock
        self.ttl_s, self.retry_s = settings.dislike_ttl_s, settings.feedback_retry_s
        self._store: FeedbackStore | None = None
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._seen = signals.version(DISLIKE_SIGNAL)
        self._down_until = 0.0
        self._lock = threading.Lock()

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
        """Store events durably (raises :class:`FeedbackUnavailableError`), then announce new dislikes."""
        result = self.store().add_events(events)
        disliked = {event.user_id for event in events if event.event == "dislike"}
        if disliked:
            for user in disliked:
                self._cache.pop(user, None)
            self.signals.bump(DISLIKE_SIGNAL)
        return result

    def delete_user(self, user_id: str, reason: str) -> int:
        """Erase ``user_id``'s events (audited under a pseudonym), then make every worker forget them.

        The events are gone from the store, so the next retraining export cannot see them either.
        """
        deleted = self.store().delete_user(user_id, reason)
        self._cache.pop(user_id, None)
        self.signals.bump(DISLIKE_SIGNAL)
        return deleted

    def cached_dislikes(self, user_id: str) -> frozenset[str] | None:
        """Fresh cached dislikes of ``user_id``, or None when the store must be asked."""
        version = self.signals.version(DISLIKE_SIGNAL)
        if version != self._seen:
            self._cache.clear()
            self._seen = version
        entry = self._cache.get(user_id)
        if entry is not None and self.clock() - entry[0] < self.ttl_s:
            return entry[1]
        if self.clock() < self._down_until:
            return entry[1] if entry is not None else frozenset()
        return None

    def load_dislikes(self, user_id: str) -> frozenset[str]:
        """Ask the store (blocking: run in a thread); on an outage use what is cached, or nothing."""
        before = self.signals.version(DISLIKE_SIGNAL)
        try:
            found = frozenset(self.store().disliked_items(user_id))
        except FeedbackUnavailableError as err:
            self._down_until = self.clock() + self.retry_s
            _LOG.warning("recommending without fresh dislikes: %s", err)
            entry = self._cache.get(user_id)
            return entry[1] if entry is not None else frozenset()
        if len(self._cache) >= MAX_CACHED_USERS:
            self._cache.clear()
        if self.signals.version(DISLIKE_SIGNAL) == before:  # else a dislike raced the read: do not cache
            self._cache[user_id] = (self.clock(), found)
        return found

    def close(self) -> None:
        """Close the store's connections."""
        if self._store is not None:
            self._store.close()


class Runtime:
    """Settings, model holder and feedback of one worker process."""

    def __init__(self, settings: ServingSettings, counter: Counter | None = None) -> None:
        self.settings = settings
        self._counter = counter
        self.signals = Signals(settings.runtime_dir)
        self.models = ModelHolder(settings.home, self.signals)
        self.feedback = Feedback(settings, self.signals)

    @property
    def ready(self) -> bool:
        """Whether a model is loaded."""
        return self.models.state is not None

    def count(self, endpoint: str, cold_start: bool) -> None:
        """Count one answered recommendation request (Prometheus, when the service provides a counter)."""
        if self._counter is not None:
            self._counter(endpoint, cold_start)
