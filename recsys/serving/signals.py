"""Change counters shared by the workers of one service.

A reload, a dislike or an erasure handled by one worker reaches the others through a file that grows by a
byte per change; a ``stat`` of it costs about a microsecond. The folder is private to the user
(:func:`private_folder`): whoever can write in it steers the service.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from recsys.errors import ConfigError

_LOG = logging.getLogger(__name__)
RELOAD_SIGNAL, DISLIKE_SIGNAL = "reload", "dislike"
RELOADED_TAG = "reloaded-tag"
"""File in the signals folder naming the model the last announced reload loaded."""


class Signals:
    """Change counters shared by the workers of one service: files that grow by a byte per change."""

    def __init__(self, folder: Path) -> None:
        self.folder = private_folder(folder)

    def bump(self, name: str) -> bool:
        """Record a change (visible to every worker once this returns); False when the folder cannot be
        written (a full disk, say): the change itself is already stored, and the other workers learn of it
        by their periodic sync instead, so the failure is logged, never raised to the caller."""
        try:
            with open(self.folder / name, "ab") as handle:
                handle.write(b".")
        except OSError as err:
            _LOG.warning(
                "could not signal %r in %s (%s): the other workers catch up by their sync",
                name,
                self.folder,
                err,
            )
            return False
        return True

    def version(self, name: str) -> tuple[int, int, int]:
        """Changes whenever :meth:`bump` ran for ``name``; ``(0, 0, 0)`` before the first bump."""
        try:
            found = os.stat(self.folder / name)
        except FileNotFoundError:
            return (0, 0, 0)
        return (found.st_ino, found.st_size, found.st_mtime_ns)


def private_folder(folder: Path) -> Path:
    """``folder``, created if missing, once it is known to be this user's alone (mode 0700).

    The folder steers the workers (which model to load, which experiment to run), so another local user
    must not be able to write in it: it is refused when it is a symbolic link, belongs to another user, or
    holds an entry of another user (someone made it first, or wrote in it while it was open); a folder of
    this user that others could enter is closed to them.

    Raises
    ------
    ConfigError
        Naming the folder and what is wrong with it.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    uid = os.getuid()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"runtime folder {folder} is not a plain folder: remove it or set RECSYS_RUNTIME_DIR"
        )
    if info.st_uid != uid:
        raise ConfigError(
            f"runtime folder {folder} belongs to user id {info.st_uid}, not to this user ({uid}): another "
            "local user may have made it to steer this service; remove it or set RECSYS_RUNTIME_DIR"
        )
    foreign = [entry.name for entry in folder.iterdir() if entry.lstat().st_uid != uid]
    if foreign:
        raise ConfigError(
            f"runtime folder {folder} holds files of another user ({', '.join(sorted(foreign)[:5])}): "
            "remove the folder or set RECSYS_RUNTIME_DIR"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        folder.chmod(0o700)
    return folder
