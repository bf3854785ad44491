"""The project's run lock: training, retraining, monitoring and every promotion of a model take it, so
none of them runs in the middle of another (a promotion by the experiment flow or by hand between a
retraining run's promotion and its clean-up could otherwise be undone, or leave no champion).

The lock is a file in the project root (``.recsys-train.lock``); the operating system releases it when the
holding process ends, even if it crashed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from recsys.errors import RecsysError

LOCK_NAME = ".recsys-train.lock"


class LockBusyError(RecsysError):
    """Another run holds the project's run lock."""


@contextlib.contextmanager
def run_lock(project_dir: Path, timeout_s: float) -> Iterator[Path]:
    """Hold ``<project_dir>/.recsys-train.lock`` for the block; wait at most ``timeout_s`` for it.

    Raises
    ------
    LockBusyError
        Another run kept the lock for longer than ``timeout_s``.
    """
    from filelock import FileLock, Timeout

    path = project_dir / LOCK_NAME
    lock = FileLock(str(path), timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise LockBusyError(
            f"another run holds the lock {path} (waited {timeout_s:g} s): wait for it to finish and retry. "
            "The lock is released when that process ends, even if it crashed."
        ) from None
    try:
        yield path
    finally:
        lock.release()
