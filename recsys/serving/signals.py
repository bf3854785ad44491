"""Change counters shared by the workers of one service.

A reload, a dislike or an erasure handled by one worker reaches the others through a file that grows by a
byte per change; a ``stat`` of it costs about a microsecond.
"""

from __future__ import annotations

import os
from pathlib import Path

RELOAD_SIGNAL, DISLIKE_SIGNAL, ERASE_SIGNAL = "reload", "dislike", "erase"
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
