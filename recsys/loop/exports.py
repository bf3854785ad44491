"""Feedback exports: how far the store has been consumed, and the events files each run wrote.

Each event counts once: :class:`FeedbackCursor` records how far the feedback store has been exported
(``data/feedback/cursor.json``), and the retraining flow advances it only after a successful run. It also
counts the ``delete_user`` audit records already honoured (``erasures_applied``), so each erasure is applied
to the exported files and the model exactly once (see :mod:`recsys.loop.erasure`). The events of each run
are ``data/feedback/events-<cursor>.parquet`` (:func:`events_file`); :func:`load_history` reads them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import DataError
from recsys.io import write_json
from recsys.loop.erasure import EVENTS_GLOB
from recsys.loop.events import FEEDBACK_COLUMNS
from recsys.paths import FEEDBACK_CURSOR

CURSOR_FILE = FEEDBACK_CURSOR
"""Where the retraining flow keeps its :class:`FeedbackCursor`, relative to the project root."""


@dataclass(frozen=True)
class FeedbackCursor:
    """How far the feedback store has been consumed: the store's export cursor (0 = nothing yet).

    Attributes
    ----------
    position : int
        The ``cursor`` of :meth:`recsys.loop.feedback.FeedbackStore.export_frame` after the last
        consumed event.
    updated_at : str
        UTC ISO time of the last advance (empty before the first).
    history : list of dict
        One entry per advance: ``{"from", "to", "events", "file", "at"}``, plus ``"erasures"``,
        ``"erased_users"`` and ``"purged_rows"`` when the advance honoured erasures.
    erasures_applied : int
        How many ``delete_user`` records of the store's audit log (oldest first) have been honoured. A
        cursor file written before erasures were tracked loads with 0.
    """

    position: int = 0
    updated_at: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    erasures_applied: int = 0

    @classmethod
    def load(cls, path: str | Path) -> FeedbackCursor:
        """Read ``path``; a missing file means nothing has been consumed yet."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                int(payload["position"]),
                str(payload.get("updated_at", "")),
                list(payload.get("history", [])),
                int(payload.get("erasures_applied", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"feedback cursor is unreadable ({exc}); restore it from git/DVC", file=str(path)
            ) from exc

    def advanced(
        self,
        position: int,
        n_events: int,
        file: str,
        *,
        erasures_applied: int | None = None,
        erased_users: int = 0,
        purged_rows: int = 0,
    ) -> FeedbackCursor:
        """A new cursor at ``position``, recording the export (and any erasures honoured) in ``history``.

        Parameters
        ----------
        position, n_events, file
            The store cursor after the export, its number of events and the file it was written to.
        erasures_applied : int, optional
            The new count of honoured ``delete_user`` audit records; None keeps the current one.
        erased_users, purged_rows : int
            What those erasures changed (users reset in the model, rows purged from exported files).
        """
        if position < self.position:
            raise ValueError(f"the feedback cursor cannot move back from {self.position} to {position}")
        applied = self.erasures_applied if erasures_applied is None else erasures_applied
        if applied < self.erasures_applied:
            raise ValueError(f"erasures_applied cannot move back from {self.erasures_applied} to {applied}")
        now = datetime.now(UTC).isoformat()
        entry: dict[str, Any] = {
            "from": self.position,
            "to": position,
            "events": n_events,
            "file": file,
            "at": now,
        }
        if applied != self.erasures_applied:
            entry |= {
                "erasures": applied - self.erasures_applied,
                "erased_users": erased_users,
                "purged_rows": purged_rows,
            }
        return FeedbackCursor(position, now, [*self.history, entry], applied)

    def save(self, path: str | Path) -> None:
        """Write the cursor atomically (a crash leaves the previous one)."""
        write_json(path, asdict(self))


def events_file(feedback_dir: Path, position: int) -> Path:
    """``<feedback_dir>/events-<position>.parquet``: the events consumed up to store cursor ``position``."""
    return feedback_dir / f"events-{position}.parquet"


def load_history(feedback_dir: Path, current: Path | None = None) -> pd.DataFrame:
    """Every event of the exports in ``feedback_dir`` other than ``current``, oldest export first."""
    files = [path for path in sorted(feedback_dir.glob(EVENTS_GLOB), key=_position) if path != current]
    frames = [pd.read_parquet(path) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(FEEDBACK_COLUMNS))


def _position(path: Path) -> int:
    """The store cursor in ``events-<cursor>.parquet`` (files sort by it, not by name)."""
    return int(path.stem.removeprefix("events-"))
