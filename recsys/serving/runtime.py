"""The service's moving parts: settings from the environment, the swappable model, the feedback store
and the log of served recommendations.

Several worker processes serve one port. A reload, a dislike or an erasure handled by one worker must
reach the others before the client's next request, so each change also appends a byte to a signal file
in a runtime folder shared by the workers; every worker compares that file's ``stat`` (about a
microsecond) before it trusts what it holds. Workers on other machines share no folder: they pick up
dislikes every :attr:`ServingSettings.dislike_sync_s` seconds (see :class:`Feedback`).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from recsys import registry
from recsys.io import write_text
from recsys.serving.dislikes import Feedback
from recsys.serving.experiment import ExperimentHolder
from recsys.serving.served_log import ServedLog, prometheus_served_counters
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import RELOAD_SIGNAL, RELOADED_TAG, Signals
from recsys.serving.state import ServingState

_LOG = logging.getLogger(__name__)
Counter = Callable[[str, bool], None]


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


class Runtime:
    """Settings, model holder and feedback of one worker process."""

    def __init__(self, settings: ServingSettings, counter: Counter | None = None) -> None:
        self.settings = settings
        self._counter = counter
        self.signals = Signals(settings.runtime_dir)
        self.models = ModelHolder(settings.home, self.signals)
        self.experiments = ExperimentHolder(settings.home, self.signals)
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
