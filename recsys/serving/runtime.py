"""The service's moving parts: settings from the environment, the swappable model, the feedback store
and the log of served recommendations.

Several worker processes serve one port. A reload, a dislike or an erasure handled by one worker must
reach the others before the client's next request, so each change also appends a byte to a signal file
in a runtime folder shared by the workers; every worker compares that file's ``stat`` (about a
microsecond) before it trusts what it holds. Workers on other machines share no folder: they pick up
dislikes every :attr:`ServingSettings.dislike_sync_s` seconds (see :class:`Feedback`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable

from recsys.io import write_text
from recsys.loop.feedback import FeedbackUnavailableError
from recsys.serving.dislikes import Feedback
from recsys.serving.experiment import ExperimentHolder
from recsys.serving.limits import AnonymousLimits
from recsys.serving.loading import ModelSource
from recsys.serving.served_log import ServedLog, prometheus_served_counters
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import RELOAD_SIGNAL, RELOADED_TAG, Signals
from recsys.serving.state import ServingState

_LOG = logging.getLogger(__name__)
Counter = Callable[[str, bool], None]
SEARCHES_IN_FLIGHT = 4
"""Name searches a worker runs at once (each a step at a time on its event loop)."""


class ModelHolder:
    """The current :class:`ServingState`; reloads build a new state fully, then replace one reference.

    Only models of the service's data set are ever loaded, and never a revoked one (:class:`ModelSource`).
    """

    def __init__(self, source: ModelSource, signals: Signals) -> None:
        self.source, self.signals = source, signals
        self.state: ServingState | None = None
        self.error: str | None = None
        self.seen = signals.version(RELOAD_SIGNAL)
        self._lock = threading.Lock()

    def reload(self, announce: bool = False, follow: bool = False) -> tuple[str | None, str | None]:
        """Load the registry's champion (``follow``: the model another worker announced) and swap it in; on
        failure keep the current state, unless it was revoked.

        Returns ``(previous version, error)``; ``error`` is None on success. ``announce`` tells the other
        workers to load the very model this one loaded (not whatever is champion when they get to it,
        which may have changed in between).
        """
        with self._lock:
            previous = self.state.version if self.state is not None else None
            self.seen = self.signals.version(RELOAD_SIGNAL)
            tag = self.announced_tag() if follow else "champion"
            try:
                fresh = ServingState(self.source.load(tag))
            except Exception as err:  # any failure to load must leave the served model untouched
                self.error = f"{type(err).__name__}: {err}"
                if previous is not None and previous in self.source.revoked():
                    self.state = None
                    _LOG.error(
                        "model reload failed and %s is revoked: serving nothing: %s", previous, self.error
                    )
                else:
                    _LOG.error("model reload failed, still serving %s: %s", previous, self.error)
                return previous, self.error
            self.state, self.error = fresh, None
            # The state is hundreds of thousands of long-lived objects; keeping them out of the cyclic
            # collector's generations avoids full collections that stall requests for tens of ms.
            gc.collect()
            gc.freeze()
            if announce:
                try:
                    write_text(self.signals.folder / RELOADED_TAG, fresh.version)
                except OSError as err:  # loaded here; the others would load another model: say so
                    self.error = f"loaded {fresh.version} here but could not tell the other workers: {err}"
                    _LOG.error(self.error)
                    return previous, self.error
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


class Runtime:
    """Settings, model holder and feedback of one worker process."""

    def __init__(self, settings: ServingSettings, counter: Counter | None = None) -> None:
        self.settings = settings
        self._counter = counter
        self.signals = Signals(settings.runtime_dir)
        self.feedback = Feedback(settings, self.signals)
        source = ModelSource(settings.home, settings.dataset, lambda: self.feedback.revoked)
        self.models = ModelHolder(source, self.signals)
        self.experiments = ExperimentHolder(source, self.signals)
        self.limits = AnonymousLimits()
        self.searches = asyncio.Semaphore(SEARCHES_IN_FLIGHT)
        self.served = ServedLog(
            self.feedback.add_served,
            sample=settings.served_log_sample,
            max_per_s=settings.served_log_max_per_s,
            capacity=settings.served_log_capacity,
            flush_s=settings.served_log_flush_s,
            retry_s=settings.feedback_retry_s,
        )

    def _revoked(self) -> frozenset[str]:
        return self.feedback.revoked

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

    def honour_erasures(self) -> None:
        """Act on what the last feedback sync learnt (blocking: run in a thread): stop serving a revoked
        champion or challenger, and answer erased listeners as unknown from any loaded model that still
        holds their feedback. Cheap when nothing changed."""
        revoked = self.feedback.revoked
        state = self.models.state
        if state is not None and state.version in revoked:
            _LOG.warning("the served model %s was revoked: loading the champion", state.version)
            self.models.reload()
        self.experiments.drop_revoked(revoked)
        erased = self.feedback.erased
        if not erased:
            return
        try:
            pseudonym = self.feedback.store().pseudonym
        except FeedbackUnavailableError:
            return  # the salt is in the store; the next sync retries
        for loaded in (self.models.state, self.experiments.running.challenger):
            if loaded is not None:
                loaded.hide_erased(erased, pseudonym)
