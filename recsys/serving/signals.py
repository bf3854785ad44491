"""Change counters shared by the workers of a service, on one host and across hosts.

A reload, an experiment, a dislike or an erasure handled by one worker must reach every other worker of the
service, on this host and on the others. Two paths carry it:

- **across hosts**: the feedback database every replica shares (:mod:`recsys.feedback.announcements`):
  one row per kind of change, its version bumped and its value (the model tag, the experiment's design)
  replaced by each change. Each worker reads the rows once a second (:meth:`Signals.refresh`, from the
  service's poll) and, on PostgreSQL, as soon as a ``NOTIFY`` arrives (:class:`Listener`);
- **on this host**, the fast path: a file per kind of change in a runtime folder the workers share, grown by
  a byte per change; a ``stat`` of it costs about a microsecond, so the next request of any local worker
  sees the change.

:meth:`Signals.version` combines both, so a change seen either way counts. The folder is private to the user
(:func:`private_folder`): whoever can write in it steers the service.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from recsys.errors import ConfigError
from recsys.feedback.announcements import CHANNEL, NEVER, RELOAD, Announcement, announcement_key
from recsys.feedback.store import FeedbackUnavailableError

_LOG = logging.getLogger(__name__)
RELOAD_SIGNAL, DISLIKE_SIGNAL, SESSION_SIGNAL = RELOAD, "dislike", "session"
REFRESH_RETRY_S = 5.0
"""How long :meth:`Signals.refresh` leaves a database that did not answer alone."""


class Board(Protocol):
    """What :class:`Signals` needs of the feedback store."""

    def announce(self, name: str, value: str | None = None) -> int: ...

    def announcements(self) -> dict[str, Announcement]: ...


class Signals:
    """Change counters of one service: local files (this host's workers) plus the shared announcements
    (every host). ``scope`` (the service's model name) keeps two services of one database apart."""

    def __init__(self, folder: Path, scope: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = private_folder(folder)
        self.scope, self.clock = scope, clock
        self._board: Callable[[], Board] | None = None
        self._shared: dict[str, Announcement] = {}
        self._down_until = -math.inf
        self._refresh_lock = threading.Lock()

    def share(self, board: Callable[[], Board]) -> None:
        """Also announce and follow changes through ``board()`` (the feedback store)."""
        self._board = board

    @property
    def shared(self) -> bool:
        """Whether changes are also announced and followed through the feedback store."""
        return self._board is not None

    def key(self, name: str) -> str:
        """The announcement's name in the shared table."""
        return announcement_key(self.scope, name)

    def bump(self, name: str) -> bool:
        """Record a change (visible to this host's workers once this returns, to the other hosts' within
        their next refresh); False when it could not be recorded everywhere. The change itself is already
        stored, and the other workers learn of it by their periodic sync instead, so the failure is logged,
        never raised to the caller."""
        shared = True
        if self._board is not None:
            try:
                self._note(name, self._board().announce(self.key(name)), None)
            except FeedbackUnavailableError as err:
                _LOG.warning(
                    "could not announce %r to the other hosts (%s): they catch up by their sync", name, err
                )
                shared = False
        return self._touch(name) and shared

    def announce(self, name: str, value: str) -> None:
        """Record a change with its ``value`` (the model to serve, the experiment to run) for every worker
        on every host: the shared row first, then this host's file.

        Raises
        ------
        FeedbackUnavailableError
            The database cannot be reached: nothing changed anywhere.
        """
        if self._board is not None:
            self._note(name, self._board().announce(self.key(name), value), value)
        self._touch(name)

    def version(self, name: str) -> tuple[int, ...]:
        """Changes whenever a change of ``name`` was recorded here or seen in the shared table."""
        try:
            found = os.stat(self.folder / name)
            local = (found.st_ino, found.st_size, found.st_mtime_ns)
        except FileNotFoundError:
            local = (0, 0, 0)
        return (*local, self._shared.get(self.key(name), NEVER).version)

    def value(self, name: str) -> str | None:
        """The value last announced for ``name``, as of the last refresh (None: never announced)."""
        return self._shared.get(self.key(name), NEVER).value

    def refresh(self) -> bool:
        """Read the shared announcements (blocking: run in a thread); False when there is no shared table or
        it cannot be read now (then it is not asked again for :data:`REFRESH_RETRY_S`)."""
        if self._board is None or self.clock() < self._down_until:
            return False
        with self._refresh_lock:
            try:
                self._shared = self._board().announcements()
            except FeedbackUnavailableError as err:
                self._down_until = self.clock() + REFRESH_RETRY_S
                _LOG.warning("announcements not read (%s): following local changes only", err)
                return False
        return True

    def _note(self, name: str, version: int, value: str | None) -> None:
        key = self.key(name)
        if version > self._shared.get(key, NEVER).version:
            self._shared = self._shared | {key: Announcement(version, value)}

    def _touch(self, name: str) -> bool:
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


class Listener:
    """Refreshes :class:`Signals` as soon as PostgreSQL notifies an announcement (a daemon thread with its
    own connection, reconnecting after a failure); the once-a-second poll stays the fallback."""

    WAIT_S = 5.0

    def __init__(self, signals: Signals, connect: Callable[[], Any]) -> None:
        self.signals, self.connect = signals, connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="announcement-listener", daemon=True)

    def start(self) -> None:
        """Start listening (returns at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does within :attr:`WAIT_S`)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.signals.refresh()  # what changed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.WAIT_S):
                            self.signals.refresh()
            except Exception as err:  # a lost connection: the poll covers the gap until the next one
                _LOG.info("announcement listener reconnecting: %s", err)
                self._stop.wait(1.0)


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
