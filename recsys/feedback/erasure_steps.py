"""Erasure on the retraining path: a listener's data leaves every place it reached, or the job stays open.

``DELETE /users/{user_id}/feedback`` deletes the listener's rows from the feedback store and records a
pending **erasure job** under their pseudonym (:mod:`recsys.feedback.erasure_jobs`). Their feedback may have
gone further: exported to ``data/feedback/events-<cursor>.parquet`` (and so into the DVC cache and its
remote), and trained into model versions (the champion, retired ones a rollback could restore, an
experiment's challenger). The retraining flow runs the pending jobs as one batch (:class:`ErasureBatch`),
each step idempotent and recorded in the jobs, so a run that fails anywhere is simply run again:

1. ``store``: rows of the listeners from before their erasure still in the store are deleted, and the
   database compacted (SQLite: the write-ahead log checkpointed into the file, whose deleted pages are
   zeroed);
2. ``exports``: their rows are purged from every exported events file (:func:`purge_event_files`);
3. ``dvc``: purged files are re-added, and every cached copy holding their rows (local cache, local
   remotes) deleted (``flows.dvc``);
4. ``models``: every stored version of every data set is checked with its record of whose feedback it
   trained on (:func:`held_by_model`); a champion holding them is replaced by a challenger fitted from
   scratch without them, promoted whatever the gate says (:func:`honour_erasure`), and every other version
   holding them is revoked (services stop serving it) and deleted;
5. ``verify``: each place is searched again; a job is marked done only when its listener is found nowhere.

Feedback a listener sends while their erasure job is pending is dropped with the rest; what comes after
the job is done is new feedback. The pseudonyms only match with the salt they were made with: a job
recorded under another salt than the flow's (``RECSYS_PSEUDONYM_SALT`` set differently for the service
and the flow) is refused with an error, never counted as done with nothing erased.

Examples
--------
>>> from recsys.feedback.store import pseudonymise
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
from recsys.errors import ConfigError
from recsys.feedback.erasure_jobs import ErasureJob
from recsys.feedback.pseudonyms import pseudonymise, salt_check
from recsys.io import write_parquet
from recsys.offline.gate import GateDecision

ERASED_PREFIX = "erased:"
"""Prefix of the id that replaces an erased feedback-only listener in a model's user ids."""
EVENTS_GLOB = "events-*.parquet"
"""The exported feedback files in ``data/feedback``."""
STEPS: tuple[str, ...] = ("store", "exports", "dvc", "models", "verify")
"""The steps of an erasure job, in order (each recorded in the job when it ran)."""


@dataclass(frozen=True)
class ErasureBatch:
    """The pending erasure jobs a retraining run honours together.

    Attributes
    ----------
    jobs : tuple of ErasureJob
        The pending jobs, oldest first.
    salt : str, optional
        The store's pseudonym salt, which every job was checked to have been made with; never in the repr.
    """

    jobs: tuple[ErasureJob, ...] = ()
    salt: str | None = field(default=None, repr=False)

    @property
    def pseudonyms(self) -> frozenset[str]:
        """The listeners to erase (several jobs of one listener count once)."""
        return frozenset(job.pseudonym for job in self.jobs)

    def __bool__(self) -> bool:
        return bool(self.jobs)


def erasure_batch(jobs: Sequence[ErasureJob], salt: str) -> ErasureBatch:
    """The pending ``jobs`` as a batch, once each is known to match pseudonyms made with ``salt``.

    Raises
    ------
    ConfigError
        A job was recorded under another salt: the service that took the erasure and this flow pseudonymise
        differently (``RECSYS_PSEUDONYM_SALT`` set for one and not the other, or to other values), so its
        listener would be matched nowhere.
    """
    expected = salt_check(salt)
    foreign = [job.id for job in jobs if job.salt_check is not None and job.salt_check != expected]
    if foreign:
        raise ConfigError(
            f"erasure jobs {foreign} were recorded with another pseudonym salt than this flow uses: the "
            "service and the flow must share the feedback store's salt (set RECSYS_PSEUDONYM_SALT to the "
            "same value for both, or unset it for both); nothing was erased and the jobs stay pending",
        )
    return ErasureBatch(tuple(jobs), salt)


def erased_users(user_ids: Iterable[str], pseudonyms: Collection[str], salt: str | None = None) -> list[str]:
    """The distinct ids among ``user_ids`` whose pseudonym is in ``pseudonyms``, sorted.

    ``salt`` defaults to ``RECSYS_PSEUDONYM_SALT`` as in :func:`recsys.feedback.pseudonyms.pseudonymise`.
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
    """The gate's decision, overridden to promote a challenger built to honour the erasure of ``erased``
    listeners whose feedback the champion holds.

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


def pseudonyms_in(user_ids: Iterable[str], pseudonyms: Collection[str], salt: str | None) -> set[str]:
    """Which of ``pseudonyms`` belong to one of ``user_ids`` (each distinct id pseudonymised once)."""
    if not pseudonyms:
        return set()
    wanted = set(pseudonyms)
    return {p for user in set(user_ids) if (p := pseudonymise(user, salt)) in wanted}


def events_holding(folder: str | Path, pseudonyms: Collection[str], salt: str | None) -> dict[str, set[str]]:
    """``file name -> pseudonyms found`` over the exported events files of ``folder`` (files holding none
    are left out): where the exports step still has work, and what the verify step checks."""
    found: dict[str, set[str]] = {}
    for path in sorted(Path(folder).glob(EVENTS_GLOB)):
        held = pseudonyms_in(pd.read_parquet(path, columns=[Col.USER])[Col.USER], pseudonyms, salt)
        if held:
            found[path.name] = held
    return found


def feedback_record(users: Iterable[str], model_users: Collection[str]) -> list[str]:
    """The sorted ids of ``model_users`` whose feedback (``users``, the trained events' listeners) a model
    trained on: packaged with the model, so an erasure finds every version that holds a listener's feedback
    by the listener's own id, whatever salt the erasure's pseudonym was made with."""
    return sorted(set(users) & set(model_users))


def held_by_model(
    record: frozenset[str] | None,
    user_ids: Iterable[str],
    trained_on_feedback: bool,
    pseudonyms: Collection[str],
    salt: str | None,
) -> set[str]:
    """Which of ``pseudonyms`` a stored model version holds feedback of.

    Parameters
    ----------
    record : frozenset of str, optional
        The users whose feedback the model trained on (:func:`feedback_record`); None for a model packaged
        before models kept one.
    user_ids : iterable of str
        The model's user ids (read only without a record).
    trained_on_feedback : bool
        Whether a model without a record came from the retraining flow (its metrics measure feedback).
        Such a model holds, as far as anyone can tell, the feedback of every listener it knows; one from
        the training flow holds none.
    """
    if record is not None:
        return pseudonyms_in(record, pseudonyms, salt)
    return pseudonyms_in(user_ids, pseudonyms, salt) if trained_on_feedback else set()


def feedback_file_holding(path: Path, pseudonyms: Collection[str], salt: str | None) -> set[str] | None:
    """Which of ``pseudonyms`` an exported events file (or a cached copy of one) holds rows of; None when
    ``path`` is no such file (another Parquet table, a directory listing, any other data).

    Only the file's footer is read to tell, so a cache of large data files is scanned quickly.
    """
    import pyarrow.parquet as pq

    with open(path, "rb") as handle:
        if handle.read(4) != b"PAR1":
            return None
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, ValueError):
        return None
    if not {Col.USER, Col.EVENT_ID, Col.EVENT} <= names:
        return None
    users = pq.read_table(path, columns=[Col.USER]).column(Col.USER).to_pylist()
    return pseudonyms_in((str(user) for user in users), pseudonyms, salt)


def objects_holding(folder: Path, pseudonyms: Collection[str], salt: str | None) -> dict[str, set[str]]:
    """``object -> pseudonyms found`` over a content-addressed folder (a DVC cache or a local remote):
    every cached events file holding rows of one of ``pseudonyms``. Objects are named by their md5."""
    found: dict[str, set[str]] = {}
    if not pseudonyms or not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix in (".dir", ".tmp", ".lock"):
            continue
        held = feedback_file_holding(path, pseudonyms, salt)
        if held:
            found[str(path)] = held
    return found
