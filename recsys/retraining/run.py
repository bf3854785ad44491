"""One retraining run's record: what was exported, what the erasure jobs did, what was retrained and
decided; the flow fills it step by step and returns its summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recsys.retraining.challenger import Retrained

NO_NEW_FEEDBACK = "no new feedback"
ERASURES_ONLY = "erasures recorded; nothing to retrain"


@dataclass
class RetrainingRun:
    """A retraining run, from the export to the cursor.

    Attributes
    ----------
    cursor : int
        The export cursor after this run.
    events, events_file, dvc_files : int, str, list
        The events exported (new ones only), their file and its ``.dvc`` file.
    discarded_exports : list of str
        Exports a failed run left beyond the cursor, deleted (their events are exported again).
    duplicate_events : int
        Events already in an earlier export (the same ``event_id``), dropped.
    erasures, erased_users, erased_events : int
        Pending erasure jobs, erased listeners the champion held, their rows dropped from this export.
    erasure : dict
        Each erasure step's outcome (``store``, ``exports``, ``dvc``, ``models``, ``verify``).
    retrained : Retrained, optional
        The challenger and both models' measures (None: nothing to retrain).
    decision : dict
        The gate's decision (``promote``, ``reasons``, ``model_tag``, ``erasure_override`` ...).
    reloaded, published : optional
        The service's reload status; the publication of a promoted champion.
    """

    cursor: int
    events: int = 0
    events_file: str | None = None
    dvc_files: list[str] = field(default_factory=list)
    discarded_exports: list[str] = field(default_factory=list)
    duplicate_events: int = 0
    erasures: int = 0
    erased_users: int = 0
    erased_events: int = 0
    erasure: dict[str, Any] = field(default_factory=dict)
    retrained: Retrained | None = None
    decision: dict[str, Any] = field(default_factory=lambda: {"promote": False})
    reloaded: int | None = None
    published: dict[str, Any] | None = None

    @property
    def promoted(self) -> bool:
        return bool(self.decision["promote"])

    @property
    def status(self) -> str:
        if self.retrained is None:
            return ERASURES_ONLY
        return "promoted" if self.promoted else "kept the champion"

    @property
    def erasures_done(self) -> int:
        return len(self.erasure.get("verify", {}).get("done", []))

    def summary(self, seconds: float) -> dict[str, Any]:
        """The flow's result (keys in the flow's docstring)."""
        summary: dict[str, Any] = {
            "status": self.status,
            "cursor": self.cursor,
            "events": self.events,
            "events_file": self.events_file,
            "dvc_files": self.dvc_files,
            "discarded_exports": self.discarded_exports,
            "duplicate_events": self.duplicate_events,
            "erasures": self.erasures,
            "erased_users": self.erased_users,
            "erased_events": self.erased_events,
            "erasure": self.erasure,
            "reloaded": self.reloaded,
            "published": self.published,
            "seconds": round(seconds, 1),
        }
        if self.retrained is not None:
            decision = {
                key: self.decision[key] for key in ("promote", "reasons", "model_tag", "erasure_override")
            }
            summary |= self.retrained.summary() | decision
        return summary
