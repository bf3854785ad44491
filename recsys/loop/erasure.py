"""Erasure on the retraining path: keep a deleted listener's feedback out of exported files and models.

``DELETE /users/{user_id}/feedback`` (:meth:`recsys.loop.feedback.FeedbackStore.delete_user`) removes
the user's events from the feedback store and writes a ``delete_user`` audit record holding only an HMAC
pseudonym (:func:`recsys.loop.pseudonyms.pseudonymise`). Their feedback may already have left the store,
though: exported to ``data/feedback/events-<cursor>.parquet`` and merged into the champion's training
matrix, from which every later retraining starts. For each audit record it has not honoured yet
(:attr:`recsys.loop.exports.FeedbackCursor.erasures_applied`) the retraining flow

1. finds the erased users by pseudonymising candidate ids (the champion's users, the users of each
   exported file) and matching them with the audit pseudonyms, so no raw id is ever stored for an erasure;
2. purges their rows from every exported events file (:func:`purge_event_files`, an atomic rewrite) and
   drops their events from the current export, the recent-feedback holdout included;
3. rebuilds the training data from the split's own listens and the purged files, so their rows hold
   only their original Last.fm listens, or nothing for listeners known only through feedback, whose ids
   it replaces by ``erased:<pseudonym>`` (:func:`anonymise_ids`) so the raw id leaves the model too;
4. fits the challenger from scratch (a warm start would keep the erased user's embedding and its pull on
   the item embeddings) and promotes it whatever the metrics (:func:`honour_erasure`): erasure is a legal
   obligation, not a quality choice.

The pseudonyms only match with the salt they were made with: the feedback store's own
(:meth:`recsys.loop.feedback.FeedbackStore.pseudonym_salt`, shared by the service and the flow through the
store) unless ``RECSYS_PSEUDONYM_SALT`` overrides it.

Examples
--------
>>> from recsys.loop.feedback import pseudonymise
>>> erased_users(["u1", "u2", "u3"], {pseudonymise("u2", salt="s")}, salt="s")
['u2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.columns import Col
from recsys.errors import DataError
from recsys.io import write_parquet
from recsys.loop.feedback_db import AuditRecord
from recsys.loop.pseudonyms import pseudonymise
from recsys.offline.gate import GateDecision

ERASE_ACTION = "delete_user"
"""The audit action written by :meth:`recsys.loop.feedback.FeedbackStore.delete_user`."""
ERASED_PREFIX = "erased:"
"""Prefix of the id that replaces an erased feedback-only listener in a model's user ids."""
EVENTS_GLOB = "events-*.parquet"
"""The exported feedback files in ``data/feedback``."""


@dataclass(frozen=True)
class PendingErasures:
    """The ``delete_user`` audit records not honoured yet.

    Attributes
    ----------
    pseudonyms : frozenset of str
        Pseudonyms of the users to erase (several records of one user count once).
    applied : int
        ``delete_user`` records honoured before.
    total : int
        ``delete_user`` records in the audit log: the new ``erasures_applied`` once these are honoured.
    salt : str, optional
        The store's pseudonym salt (:meth:`recsys.loop.feedback.FeedbackStore.pseudonym_salt`) the pseudonyms
        were made with; never shown in the repr.
    """

    pseudonyms: frozenset[str]
    applied: int
    total: int
    salt: str | None = field(default=None, repr=False)

    @property
    def n_records(self) -> int:
        """How many audit records these erasures come from."""
        return self.total - self.applied

    def __bool__(self) -> bool:
        return self.n_records > 0


def pending_erasures(
    records: Sequence[AuditRecord], applied: int, salt: str | None = None
) -> PendingErasures:
    """The ``delete_user`` records of ``records`` (oldest first) after the first ``applied`` of them.

    Raises
    ------
    DataError
        The log holds fewer ``delete_user`` records than ``applied``: it was pruned or the store replaced,
        so the records still to honour cannot be told apart.
    """
    erasures = [record for record in records if record.action == ERASE_ACTION]
    if applied > len(erasures):
        raise DataError(
            f"the feedback audit log holds {len(erasures)} {ERASE_ACTION} records but the cursor has "
            f"honoured {applied}: the log was pruned or the store replaced; set erasures_applied in the "
            "cursor to the number of records in the current log that are already honoured",
            column="erasures_applied",
        )
    pseudonyms = frozenset(record.user_pseudonym for record in erasures[applied:])
    return PendingErasures(pseudonyms, applied, len(erasures), salt)


def erased_users(user_ids: Iterable[str], pseudonyms: Collection[str], salt: str | None = None) -> list[str]:
    """The distinct ids among ``user_ids`` whose pseudonym is in ``pseudonyms``, sorted.

    ``salt`` defaults to ``RECSYS_PSEUDONYM_SALT`` as in :func:`recsys.loop.pseudonyms.pseudonymise`.
    """
    if not pseudonyms:
        return []
    return sorted(user for user in set(user_ids) if pseudonymise(user, salt) in pseudonyms)


def without_users(events: pd.DataFrame, users: Collection[str]) -> tuple[pd.DataFrame, int]:
    """``events`` without the rows of ``users`` (column ``Col.USER``) and how many rows went."""
    erased = events[Col.USER].isin(list(users)).to_numpy()
    return events[~erased], int(erased.sum())


def without_erased_events(
    events: pd.DataFrame, pseudonyms: Collection[str], salt: str | None = None
) -> tuple[pd.DataFrame, int]:
    """``events`` without the rows of users whose pseudonym is in ``pseudonyms``, and how many rows went."""
    return without_users(events, erased_users(events[Col.USER], pseudonyms, salt))


def purge_event_files(
    folder: str | Path, pseudonyms: Collection[str], salt: str | None = None
) -> dict[str, int]:
    """Remove the erased users' rows from every ``events-*.parquet`` of ``folder``.

    A file that loses rows is rewritten atomically (a crash leaves the old one, and the next run purges it
    again); the others are not touched. A file may end up empty: it stays, as the cursor history names it.

    Returns
    -------
    dict
        ``file name -> rows removed`` for every file scanned, in name order.
    """
    removed: dict[str, int] = {}
    for path in sorted(Path(folder).glob(EVENTS_GLOB)):
        frame = pd.read_parquet(path)
        kept, n_removed = without_erased_events(frame, pseudonyms, salt)
        if n_removed:
            write_parquet(path, kept)
        removed[path.name] = n_removed
    return removed


def anonymise_ids(
    user_ids: Sequence[str], erased: Collection[str], n_fixed: int, salt: str | None = None
) -> list[str]:
    """``user_ids`` with each erased id from position ``n_fixed`` on replaced by ``erased:<pseudonym>``.

    The first ``n_fixed`` ids are the split's (the Last.fm listeners every model of the split shares) and
    stay; the ones after them exist only through feedback, so after an erasure their id must go too. The
    row itself stays (empty) so that the models' rows keep lining up.
    """
    erased_set = set(erased)
    return [
        f"{ERASED_PREFIX}{pseudonymise(user, salt)}" if row >= n_fixed and user in erased_set else user
        for row, user in enumerate(user_ids)
    ]


def honour_erasure(decision: GateDecision, erased: int) -> GateDecision:
    """The gate's decision, overridden to promote a challenger built to honour ``erased`` users' erasure.

    With ``erased == 0`` the decision is returned unchanged. Otherwise the challenger is promoted whatever
    its metrics, and the reasons say so (and keep the gate's own reasons for the record).
    """
    if erased <= 0:
        return decision
    note = (
        f"erasure of {erased} user(s): the challenger is the first model without their feedback, so it "
        "replaces the champion whatever the metrics (a legal obligation, not a quality choice)"
    )
    if decision.promote:
        return dataclasses.replace(decision, reasons=[*decision.reasons, note])
    overruled = [f"the gate alone would keep the champion: {reason}" for reason in decision.reasons]
    return dataclasses.replace(decision, promote=True, reasons=[note, *overruled])
