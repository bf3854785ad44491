"""Memory bounds: what a step will need, checked against what the machine has, before it allocates.

A step that can run a bounded variant says so in its settings (EASE on the ``max_items`` most listened
items, item-item models built a block of rows at a time); one that cannot refuses with
:class:`MemoryBoundError`, naming what it needed, what was available and the setting that lowers it,
instead of being killed by the kernel half-way through writing its outputs.

``RECSYS_MEMORY_LIMIT_GB`` caps what the checks assume is available (a container's limit, or a share of a
machine other work runs on); unset, it is the machine's available memory.
"""

from __future__ import annotations

import os

import psutil

from recsys.errors import RecsysError

MEMORY_LIMIT_ENV = "RECSYS_MEMORY_LIMIT_GB"
HEADROOM = 0.8
"""Share of the available memory a step may plan to use (the rest: the process, the OS, other work)."""
GB = 1024**3


class MemoryBoundError(RecsysError):
    """A step would need more memory than is available; raised before it allocates."""


def available_bytes() -> int:
    """Available memory now, capped by ``RECSYS_MEMORY_LIMIT_GB`` when it is set.

    Raises
    ------
    MemoryBoundError
        When the variable is set but is not a positive number.
    """
    available = int(psutil.virtual_memory().available)
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not raw:
        return available
    try:
        limit = float(raw)
    except ValueError:
        limit = -1.0
    if not limit > 0:
        raise MemoryBoundError(f"{MEMORY_LIMIT_ENV} must be a positive number of GB, got {raw!r}")
    return min(available, int(limit * GB))


def require(needed: int, what: str, fix: str) -> None:
    """Raise :class:`MemoryBoundError` unless ``needed`` bytes fit in the available memory's headroom.

    Examples
    --------
    >>> require(1024, "a tiny table", "nothing to do")
    >>> require(1 << 60, "EASE on 10^9 items", "lower train.ease.max_items")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recsys.memory.MemoryBoundError: EASE on 10^9 items needs 1073741824.0 GB ...
    """
    budget = int(available_bytes() * HEADROOM)
    if needed > budget:
        raise MemoryBoundError(
            f"{what} needs {needed / GB:.1f} GB but {budget / GB:.1f} GB are available "
            f"({HEADROOM:.0%} of the free memory{_limit_note()}): {fix}"
        )


def _limit_note() -> str:
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    return f", capped by {MEMORY_LIMIT_ENV}={raw}" if raw else ""
