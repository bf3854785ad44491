"""The log of served recommendation lists: sampled, capped per second, batched and written by a thread;
dropped (and counted) when the store is down, never in a request's way."""

from __future__ import annotations

import collections
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from recsys.experiments.design import INTERLEAVE
from recsys.feedback.store import FeedbackUnavailableError
from recsys.feedback.tables import ServedRecommendation

_LOG = logging.getLogger(__name__)
DropCounter = Callable[[str, int], None]
"""Adds ``n`` dropped served lists under a reason (``queue_full`` or ``store_unavailable``)."""
QUEUE_FULL, STORE_UNAVAILABLE = "queue_full", "store_unavailable"


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
        Stores a batch and returns how many it stored (:meth:`FeedbackFollower.add_served`).
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
        self,
        endpoint: str,
        user_id: str | None,
        answer: dict[str, Any],
        bias_strength: float,
        challenger: str | None = None,
    ) -> None:
        """Queue one answer of ``/recommend`` (``endpoint="recommend"``) or ``/recommend/new-listener``.

        An experiment's answer carries its ``arm`` (and, interleaved, each item's ``model``): both are logged,
        with the experiment's ``challenger`` model version. An answer whose items carry a ``propensity``
        (:mod:`recsys.serving.exploration`) is logged with them and its explored places.

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
            arm = answer.get("arm")
            credits = tuple([item["model"] for item in answer["items"]]) if arm == INTERLEAVE else None
            explored = propensities = None
            if answer["items"] and "propensity" in answer["items"][0]:
                propensities = tuple([float(item["propensity"]) for item in answer["items"]])
                explored = tuple([at for at, item in enumerate(answer["items"]) if item.get("explored")])
            self._queue.append(
                ServedRecommendation(
                    datetime.now(UTC),
                    user_id,
                    endpoint,
                    answer["model_version"],
                    cold,
                    items,
                    0.0 if cold else bias_strength,
                    arm,
                    credits,
                    challenger,
                    propensities,
                    explored,
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
