"""What an anonymous caller can make a worker do, bounded: token buckets for their writes and erasures
(:func:`recsys.serving.http.rate_limited` answers 429 when one is spent).

The page's own listener never comes near these limits (a few reactions a minute); a loop of anonymous calls
gets ``429 Too Many Requests`` with ``Retry-After`` instead of growing the feedback tables, the audit log and
the workers' dislike index at the speed of the network. Clients with a token are not limited here: they are
the platform's own backends, bounded by their own quotas.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ANONYMOUS_WRITES_PER_S = 100.0
"""Feedback events and ratings a second and worker from anonymous callers (a burst of a second's worth)."""
ANONYMOUS_ERASURES_PER_S = 1.0
"""Erasures per second and worker from anonymous callers (each is a transaction, an audit row and a job)."""
ERASURE_BURST = 5.0


@dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; thread-safe."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._tokens, self._at = self.burst, self.clock()

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0 when granted, else the seconds until they would be (nothing is taken)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= n:
                self._tokens -= n
                return 0.0
            return (n - self._tokens) / self.rate if self.rate > 0 else math.inf


@dataclass
class AnonymousLimits:
    """The buckets of one worker."""

    writes: TokenBucket = field(
        default_factory=lambda: TokenBucket(ANONYMOUS_WRITES_PER_S, ANONYMOUS_WRITES_PER_S)
    )
    erasures: TokenBucket = field(
        default_factory=lambda: TokenBucket(ANONYMOUS_ERASURES_PER_S, ERASURE_BURST)
    )
