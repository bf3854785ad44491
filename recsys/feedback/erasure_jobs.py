"""Erasures as recorded jobs in the feedback store, and the models they revoke.

``DELETE /users/{user_id}/feedback`` (:meth:`recsys.feedback.store.FeedbackStore.delete_user`) deletes the
listener's rows and, in the same transaction, writes an audit row and an **erasure job** (table
``erasure_jobs``): the listener's pseudonym, a check of the salt it was made with, when, and the highest
event id at that moment. The job stays ``pending`` until the retraining flow has found no copy of the
listener's data left anywhere (:mod:`recsys.feedback.erasure_steps`); each step's outcome is recorded in
the job, so a run that fails part way is simply run again. A job is found by its status, not by its position
in a log, so an erasure that commits late (PostgreSQL hands out ids before commit) is never skipped.

Models that hold an erased listener's feedback are **revoked** (table ``model_revocations``) before they are
deleted from the model store: every service worker reads the revocations and stops serving such a model
even when no reload reaches it.

Both are mixins of :class:`recsys.feedback.store.FeedbackStore` (its engine, guard and pseudonyms).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recsys.columns import Col
from recsys.feedback.events import utc_now
from recsys.feedback.records import _Stored
from recsys.feedback.tables import (
    ACTION_COLUMN,
    AUDIT,
    ERASURE_DONE,
    ERASURE_PENDING,
    ERASURES,
    EVENTS,
    ID_COLUMN,
    PSEUDONYM_COLUMN,
    RATINGS,
    REASON_COLUMN,
    REVOCATIONS,
    SERVED,
    Served,
)

_LOG = logging.getLogger(__name__)
ERASE_ACTION = "delete_user"
"""The audit action of an erasure."""
CHECKPOINT_TRIES = 20
CHECKPOINT_PAUSE_S = 0.25


@dataclass(frozen=True)
class ErasureJob:
    """One erasure request and how far it got.

    Attributes
    ----------
    id : int
        The job's row id.
    pseudonym : str
        The listener's pseudonym (:func:`recsys.feedback.pseudonyms.pseudonymise`); never the raw id.
    requested_at : datetime
        When the rows were deleted from the store (UTC).
    event_watermark : int
        The highest event id at that moment: the listener's events up to it are the erased ones.
    salt_check : str, optional
        :func:`recsys.feedback.pseudonyms.salt_check` of the salt the pseudonym was made with (None for a job
        made from an older store's audit row).
    status : str
        ``pending`` or ``done``.
    steps : dict
        Each step's recorded outcome (``store``, ``exports``, ``dvc``, ``models``, ``verify``).
    """

    id: int
    pseudonym: str
    requested_at: datetime
    event_watermark: int
    salt_check: str | None = None
    status: str = ERASURE_PENDING
    steps: dict[str, Any] = field(default_factory=dict)


class ErasureJobs(_Stored):
    """The erasure jobs and model revocations of a feedback store."""

    def erasure_jobs(self, pending_only: bool = True) -> list[ErasureJob]:
        """The erasure jobs (only the pending ones by default), oldest first.

        An erasure recorded by an older version (an audit row without a job) first gets a job, so it is
        checked like any other.
        """
        query = sa.select(ERASURES).order_by(ERASURES.c[ID_COLUMN])
        if pending_only:
            query = query.where(ERASURES.c.status == ERASURE_PENDING)
        with self._guard("reading erasure jobs"), self._engine.begin() as conn:
            _jobs_for_older_audit_rows(conn)
            rows = conn.execute(query).mappings().all()
        return [_job(row) for row in rows]

    def record_erasure_step(self, jobs: Collection[ErasureJob], step: str, outcome: dict[str, Any]) -> None:
        """Record ``step``'s ``outcome`` (JSON-serialisable) in each of ``jobs``."""
        if not jobs:
            return
        with self._guard("recording an erasure step"), self._engine.begin() as conn:
            for job in jobs:
                stored = conn.execute(
                    sa.select(ERASURES.c.steps).where(ERASURES.c[ID_COLUMN] == job.id)
                ).scalar_one()
                steps = json.loads(stored or "{}") | {step: outcome}
                conn.execute(
                    sa.update(ERASURES)
                    .where(ERASURES.c[ID_COLUMN] == job.id)
                    .values(steps=json.dumps(steps, sort_keys=True, default=str))
                )

    def complete_erasures(self, jobs: Collection[ErasureJob]) -> int:
        """Mark ``jobs`` done (only once nothing of their listeners is left); returns how many changed."""
        if not jobs:
            return 0
        query = (
            sa.update(ERASURES)
            .where(ERASURES.c[ID_COLUMN].in_([job.id for job in jobs]))
            .where(ERASURES.c.status == ERASURE_PENDING)
            .values(status=ERASURE_DONE, completed_at=utc_now())
        )
        with self._guard("completing erasure jobs"), self._engine.begin() as conn:
            return int(conn.execute(query).rowcount)

    def erasure_watermarks(self, cursor: int = 0, pending_only: bool = False) -> tuple[dict[str, int], int]:
        """``pseudonym -> event watermark`` of the erasure jobs with an id above ``cursor`` (only the pending
        ones with ``pending_only``; a listener erased twice: the higher watermark), and the highest job id
        of any status. A listener's events above the watermark came after the erasure: a listener may come
        back, and what they do then is theirs to have honoured."""
        columns = (ERASURES.c[ID_COLUMN], ERASURES.c[PSEUDONYM_COLUMN], ERASURES.c.event_watermark)
        query = sa.select(*columns).where(ERASURES.c[ID_COLUMN] > cursor)
        if pending_only:
            query = query.where(ERASURES.c.status == ERASURE_PENDING)
        highest = sa.select(sa.func.coalesce(sa.func.max(ERASURES.c[ID_COLUMN]), 0))
        with self._guard("reading erasures"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
            # Only the pending read needs every job's id; else the rows read give it (a job committed
            # between two queries is never skipped).
            top = int(conn.execute(highest).scalar_one()) if pending_only else 0
        watermarks: dict[str, int] = {}
        for _, pseudonym, watermark in rows:
            watermarks[pseudonym] = max(int(watermark), watermarks.get(pseudonym, 0))
        return watermarks, max([top, cursor, *(int(row[0]) for row in rows)])

    def held_rows(self, jobs: Sequence[ErasureJob], delete: bool = False) -> dict[str, dict[str, int]]:
        """``pseudonym -> table -> rows`` the store still holds of the jobs' listeners from before their
        erasure (none: an empty dict); with ``delete`` they are deleted. Before means events up to the job's
        watermark, served lists and ratings up to its time: what came later is new.

        Rows are matched by pseudonymising every distinct user id of a table (about a microsecond each).
        """
        latest = _latest_per_pseudonym(jobs)
        found: dict[str, dict[str, int]] = {}
        tables = (
            (EVENTS, EVENTS.c[Col.USER], lambda job: EVENTS.c[ID_COLUMN] <= job.event_watermark),
            (SERVED, SERVED.c[Served.USER], lambda job: SERVED.c[Served.SERVED_AT] <= job.requested_at),
            (RATINGS, RATINGS.c[Col.USER], lambda job: RATINGS.c[Col.TIMESTAMP] <= job.requested_at),
        )
        if not latest:
            return found
        with self._guard("sweeping erased listeners"), self._engine.begin() as conn:
            for table, user, before in tables:
                users = conn.execute(sa.select(user).where(user.is_not(None)).distinct()).scalars().all()
                for raw in users:
                    job = latest.get(self.pseudonym(raw))
                    if job is None:
                        continue
                    where = sa.and_(user == raw, before(job))
                    if delete:
                        count = int(conn.execute(sa.delete(table).where(where)).rowcount)
                    else:
                        count = int(conn.execute(sa.select(sa.func.count()).where(where)).scalar_one())
                    if count:
                        found.setdefault(job.pseudonym, {})[table.name] = count
        return found

    def erasure_jobs_by_id(self, ids: Collection[int]) -> list[ErasureJob]:
        """The jobs with these ids as stored now (their recorded steps included), oldest first."""
        query = (
            sa.select(ERASURES).where(ERASURES.c[ID_COLUMN].in_(list(ids))).order_by(ERASURES.c[ID_COLUMN])
        )
        with self._guard("reading erasure jobs"), self._engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings().all()]

    def compact(self, tries: int = CHECKPOINT_TRIES) -> dict[str, Any]:
        """Make deleted rows unrecoverable from the database files.

        SQLite (``secure_delete`` zeroes deleted content): checkpoint the write-ahead log into the file and
        truncate it, tried ``tries`` times while readers hold it; ``{"truncated": True}`` once done.
        PostgreSQL: ``VACUUM`` of the listener tables removes the dead rows from the tables (their bytes may
        stay in free space and in the server's WAL and backups until overwritten: see docs/security.md).
        """
        if self._postgres:
            with self._guard("vacuuming"), self._engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in (EVENTS, SERVED, RATINGS):
                    conn.execute(sa.text(f"VACUUM {table.name}"))
            return {"vacuumed": True}
        for attempt in range(tries):
            with self._guard("checkpointing"), self._engine.connect() as conn:
                busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if not busy:
                return {"truncated": True}
            if attempt + 1 < tries:
                time.sleep(CHECKPOINT_PAUSE_S)
        return {"truncated": False}

    def revoke_models(self, tags: Iterable[str], reason: str) -> int:
        """Record ``tags`` as never to be served again (idempotent); returns how many were new."""
        rows = [{"model_tag": tag, REASON_COLUMN: reason, Col.TIMESTAMP: utc_now()} for tag in tags]
        if not rows:
            return 0
        new = 0
        with self._guard("revoking models"), self._engine.begin() as conn:
            known = set(conn.execute(sa.select(REVOCATIONS.c.model_tag)).scalars())
            fresh = [row for row in rows if row["model_tag"] not in known]
            if fresh:
                new = len(conn.execute(sa.insert(REVOCATIONS), fresh).inserted_primary_key_rows)
        return new

    def revocations_since(self, cursor: int = 0) -> tuple[list[str], int]:
        """Model tags revoked with an id above ``cursor``, and the highest such id."""
        query = sa.select(REVOCATIONS.c[ID_COLUMN], REVOCATIONS.c.model_tag).where(
            REVOCATIONS.c[ID_COLUMN] > cursor
        )
        with self._guard("reading model revocations"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [tag for _, tag in rows], max((int(row[0]) for row in rows), default=cursor)

    def is_revoked(self, tag: str) -> bool:
        """Whether ``tag`` was revoked."""
        query = sa.select(sa.func.count()).where(REVOCATIONS.c.model_tag == tag)
        with self._guard("reading model revocations"), self._engine.connect() as conn:
            return bool(conn.execute(query).scalar_one())

    def _erased_served(self, conn: Connection, rows: Sequence[tuple[int, str | None, datetime]]) -> list[int]:
        """Ids of just-inserted served rows whose listener was erased at or after the list was served: lists
        queued in a worker's memory before an erasure and written after it."""
        users = {user for _, user, _ in rows if user}
        if not users:
            return []
        pseudonyms = {user: self.pseudonym(user) for user in users}
        query = (
            sa.select(ERASURES.c[PSEUDONYM_COLUMN], sa.func.max(ERASURES.c.requested_at))
            .where(ERASURES.c[PSEUDONYM_COLUMN].in_(set(pseudonyms.values())))
            .group_by(ERASURES.c[PSEUDONYM_COLUMN])
        )
        erased_at = dict(conn.execute(query).all())
        if not erased_at:
            return []
        return [
            row_id
            for row_id, user, served_at in rows
            if user and (when := erased_at.get(pseudonyms[user])) is not None and served_at <= _aware(when)
        ]


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def event_watermark(conn: Connection) -> int:
    """The highest event id stored now (read before an erasure deletes the listener's events)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(EVENTS.c[ID_COLUMN]), 0))).scalar_one())


def record_erasure(
    conn: Connection, pseudonym: str, salt_check: str, reason: str, deleted: int, watermark: int
) -> tuple[int, int]:
    """Write the audit row and the pending job of an erasure in ``conn``'s transaction (after the delete);
    returns ``(audit id, job id)``."""
    now = utc_now()
    audit = {ACTION_COLUMN: ERASE_ACTION, PSEUDONYM_COLUMN: pseudonym, REASON_COLUMN: reason}
    audit_id = conn.execute(
        sa.insert(AUDIT)
        .values(**audit, **{Col.COUNT: deleted, Col.TIMESTAMP: now})
        .returning(AUDIT.c[ID_COLUMN])
    ).scalar_one()
    job_id = conn.execute(
        sa.insert(ERASURES)
        .values(
            **{PSEUDONYM_COLUMN: pseudonym},
            salt_check=salt_check,
            requested_at=now,
            event_watermark=int(watermark),
            audit_id=int(audit_id),
            status=ERASURE_PENDING,
            steps="{}",
        )
        .returning(ERASURES.c[ID_COLUMN])
    ).scalar_one()
    return int(audit_id), int(job_id)


def _jobs_for_older_audit_rows(conn: Connection) -> None:
    """A pending job for every ``delete_user`` audit row without one (a store written by an older version).

    Its listener's rows were deleted when the row was written, so nothing of the store's events is theirs
    (watermark 0); the job still checks the exports, the DVC cache and every model.
    """
    missing = (
        sa.select(AUDIT.c[ID_COLUMN], AUDIT.c[PSEUDONYM_COLUMN], AUDIT.c[Col.TIMESTAMP])
        .where(AUDIT.c[ACTION_COLUMN] == ERASE_ACTION)
        .where(
            AUDIT.c[ID_COLUMN].not_in(sa.select(ERASURES.c.audit_id).where(ERASURES.c.audit_id.is_not(None)))
        )
        .order_by(AUDIT.c[ID_COLUMN])
    )
    rows = conn.execute(missing).all()
    if rows:
        conn.execute(
            sa.insert(ERASURES),
            [
                {
                    PSEUDONYM_COLUMN: pseudonym,
                    "salt_check": None,
                    "requested_at": stamp,
                    "event_watermark": 0,
                    "audit_id": int(audit_id),
                    "status": ERASURE_PENDING,
                    "steps": "{}",
                }
                for audit_id, pseudonym, stamp in rows
            ],
        )
        _LOG.info("erasure jobs made for %d older erasure audit rows", len(rows))


def _latest_per_pseudonym(jobs: Sequence[ErasureJob]) -> dict[str, ErasureJob]:
    latest: dict[str, ErasureJob] = {}
    for job in sorted(jobs, key=lambda job: job.requested_at):
        latest[job.pseudonym] = job
    return latest


def _job(row: Any) -> ErasureJob:
    return ErasureJob(
        id=int(row[ID_COLUMN]),
        pseudonym=str(row[PSEUDONYM_COLUMN]),
        requested_at=_aware(row["requested_at"]),
        event_watermark=int(row["event_watermark"]),
        salt_check=row["salt_check"],
        status=str(row["status"]),
        steps=json.loads(row["steps"] or "{}"),
    )
