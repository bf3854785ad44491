"""The service's moving parts: settings from the environment, the swappable model, the feedback store
and the log of served recommendations.

Several worker processes serve one port, and several replicas (on other hosts) share one feedback database.
A reload, an experiment, a dislike or an erasure handled by one worker must reach the others: each change is
announced in the feedback database and in a signal file of this host's runtime folder
(:mod:`recsys.serving.signals`). This host's workers see it at their next request (a ``stat``, about a
microsecond); the other hosts' within a second (their poll), usually within milliseconds on PostgreSQL
(``LISTEN``). A replica that was down reads the announcements when it starts.

Which model to serve: on one host, the registry's champion (a reload announces the tag it loaded, and the
other workers load that very tag). On several hosts (``RECSYS_MODEL_EXCHANGE`` set), the tag the training
host announced when it promoted (:func:`recsys.registry.publishing.publish_champion`), imported from the model
exchange when this host does not hold it yet.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable

from recsys import registry
from recsys.feedback.announcements import listening_connection
from recsys.feedback.store import FeedbackUnavailableError
from recsys.registry import exchange as model_exchange
from recsys.serving.experiment import ExperimentHolder
from recsys.serving.exploration import Explorer
from recsys.serving.feedback_follower import FeedbackFollower
from recsys.serving.limits import AnonymousLimits
from recsys.serving.loading import ModelSource
from recsys.serving.served_log import ServedLog, prometheus_served_counters
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import RELOAD_SIGNAL, Listener, Signals
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
        """Load the model to serve and swap it in; on failure keep the current state, unless it was revoked.

        Which model: the registry's champion, or (``follow``, and always on several hosts) the tag last
        announced (the champion when none was). Returns ``(previous version, error)``; ``error`` is None on
        success. ``announce`` (one host) tells every other worker to load the very model this one loaded
        (not whatever is champion when they get to it, which may have changed in between).
        """
        with self._lock:
            previous = self.state.version if self.state is not None else None
            shared = self.source.exchange is not None
            # Read first, so that only announcements made after this load count as new.
            if not self.signals.refresh() and self.signals.shared and (follow or shared):
                # Which model was announced is unknown: keep serving, and retry at the next poll.
                self.error = "the announcements could not be read: still serving the current model"
                return previous, self.error
            self.seen = self.signals.version(RELOAD_SIGNAL)
            tag = (
                (self.signals.value(RELOAD_SIGNAL) or registry.CHAMPION)
                if follow or shared
                else registry.CHAMPION
            )
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
            if announce and not shared:
                try:
                    self.signals.announce(RELOAD_SIGNAL, fresh.version)
                except FeedbackUnavailableError as err:  # loaded here; the others would load another model
                    self.error = f"loaded {fresh.version} here but could not tell the other workers: {err}"
                    _LOG.error(self.error)
                    return previous, self.error
                self.seen = self.signals.version(RELOAD_SIGNAL)
            _LOG.info("serving model %s (was %s)", fresh.version, previous)
            return previous, None

    def needs_reload(self) -> bool:
        """True when a reload was announced (here or on another host), or no model is loaded yet."""
        return self.state is None or self.signals.version(RELOAD_SIGNAL) != self.seen


class Runtime:
    """Settings, model holder and feedback of one worker process."""

    def __init__(self, settings: ServingSettings, counter: Counter | None = None) -> None:
        self.settings = settings
        self._counter = counter
        self.signals = Signals(settings.runtime_dir, scope=registry.model_name(settings.dataset))
        self.feedback = FeedbackFollower(settings, self.signals)
        self.signals.share(self.feedback.store)
        self.listener: Listener | None = None
        self._forgotten: frozenset[str] = frozenset()
        source = ModelSource(
            settings.home, settings.dataset, lambda: self.feedback.revoked, exchange=settings.model_exchange
        )
        self.models = ModelHolder(source, self.signals)
        self.experiments = ExperimentHolder(source, self.signals)
        self.limits = AnonymousLimits()
        self.searches = asyncio.Semaphore(SEARCHES_IN_FLIGHT)
        self.explorer = Explorer(settings.explore_share)
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

    def start_listener(self) -> None:
        """On PostgreSQL, follow announcements as they are notified (the app's lifespan calls this)."""
        url = self.settings.feedback_url
        if url.startswith("postgresql") and self.listener is None:
            self.listener = Listener(self.signals, lambda: listening_connection(url))
            self.listener.start()

    def stop_listener(self) -> None:
        """Stop following notifications."""
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

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
        self._forget_revoked(revoked)
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

    def forget_session(self, user_id: str) -> None:
        """Drop a listener's adapted lists from the loaded models (their erasure through this worker; the
        other workers drop them by pseudonym in :meth:`honour_erasures`)."""
        for loaded in (self.models.state, self.experiments.running.challenger):
            if loaded is not None:
                loaded.forget_session(user_id)

    def _forget_revoked(self, revoked: frozenset[str]) -> None:
        """On several hosts, delete this host's copies of revoked versions (its store caches the exchange)."""
        if self.settings.model_exchange is None or revoked <= self._forgotten:
            return
        try:
            deleted = model_exchange.forget(revoked - self._forgotten, self.settings.home)
        except Exception as err:  # retried at the next sync; a revoked model is never loaded meanwhile
            _LOG.error("could not delete revoked models from %s: %s", self.settings.home, err)
            return
        self._forgotten = revoked
        if deleted:
            _LOG.warning("deleted revoked models from this host's store: %s", deleted)
