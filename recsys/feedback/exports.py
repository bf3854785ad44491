"""Feedback exports: how far the store has been consumed, and the events files each run wrote.

Each event counts once: :class:`FeedbackCursor` records how far the feedback store has been exported
(``data/feedback/cursor.json``), and the retraining flow advances it only after a successful run. The events
of each run are ``data/feedback/events-<cursor>.parquet`` (:func:`events_file`); an export beyond the cursor
was left by a run that failed and is exported again; :func:`load_history` reads the exports back, each event
once. Erasures are jobs in the feedback store (:mod:`recsys.feedback.erasure_steps`), not counted here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Col
from recsys.errors import DataError
from recsys.feedback.erasure_steps import EVENTS_GLOB
from recsys.feedback.events import FEEDBACK_COLUMNS
from recsys.io import write_json
from recsys.paths import FEEDBACK_CURSOR

CURSOR_FILE = FEEDBACK_CURSOR
EVENT_KEY = (Col.USER, Col.EVENT_ID)
"""What identifies an event: its listener and their ``event_id``."""
"""Where the retraining flow keeps its :class:`FeedbackCursor`, relative to the project root."""


@dataclass(frozen=True)
class FeedbackCursor:
    """How far the feedback store has been consumed: the store's export cursor (0 = nothing yet).

    Attributes
    ----------
    position : int
        The ``cursor`` of :meth:`recsys.feedback.store.FeedbackStore.export_frame` after the last
        consumed event.
    updated_at : str
        UTC ISO time of the last advance (empty before the first).
    history : list of dict
        One entry per advance: ``{"from", "to", "events", "file", "at"}``, plus ``"erasures"``,
        ``"erasure_jobs"`` and ``"erasures_done"`` when the run ran erasure jobs.
    """

    position: int = 0
    updated_at: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

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
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"feedback cursor is unreadable ({exc}); restore it from git/DVC", file=str(path)
            ) from exc

    def advanced(
        self, position: int, n_events: int, file: str, *, erasure_jobs: int = 0, erasures_done: int = 0
    ) -> FeedbackCursor:
        """A new cursor at ``position``, recording the export (and the erasure jobs it ran) in ``history``.

        Parameters
        ----------
        position, n_events, file
            The store cursor after the export, its number of events and the file it was written to.
        erasure_jobs, erasures_done : int
            Erasure jobs the run ran, and how many of them it found complete.
        """
        if position < self.position:
            raise ValueError(f"the feedback cursor cannot move back from {self.position} to {position}")
        now = datetime.now(UTC).isoformat()
        entry: dict[str, Any] = {
            "from": self.position,
            "to": position,
            "events": n_events,
            "file": file,
            "at": now,
        }
        if erasure_jobs:
            entry |= {"erasure_jobs": erasure_jobs, "erasures_done": erasures_done}
        return FeedbackCursor(position, now, [*self.history, entry])

    def save(self, path: str | Path) -> None:
        """Write the cursor atomically (a crash leaves the previous one)."""
        write_json(path, asdict(self))


def events_file(feedback_dir: Path, position: int) -> Path:
    """``<feedback_dir>/events-<position>.parquet``: the events consumed up to store cursor ``position``."""
    return feedback_dir / f"events-{position}.parquet"


def load_history(feedback_dir: Path) -> pd.DataFrame:
    """Every event of the exports in ``feedback_dir``, oldest export first, each event (a listener's
    ``event_id``) once: the first export's copy wins."""
    files = sorted(feedback_dir.glob(EVENTS_GLOB), key=export_position)
    frames = [pd.read_parquet(path) for path in files]
    if not frames:
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    history = pd.concat(frames, ignore_index=True)
    return history.drop_duplicates(list(EVENT_KEY), keep="first").reset_index(drop=True)


def known_events(events: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """Which rows of ``events`` an earlier export already holds (the same listener's ``event_id``)."""
    exported = pd.MultiIndex.from_frame(history[list(EVENT_KEY)])
    return np.asarray(pd.MultiIndex.from_frame(events[list(EVENT_KEY)]).isin(exported), dtype=bool)


def export_position(path: Path) -> int:
    """The store cursor in ``events-<cursor>.parquet`` (files sort by it, not by name)."""
    return int(path.stem.removeprefix("events-"))
