"""The durable store of listener feedback (play, like, skip and dislike events) and of served lists.

SQLite (WAL journal, ``synchronous=FULL``) by default, PostgreSQL by URL. Every write is committed before
:meth:`FeedbackStore.add_events` returns, retries are idempotent on ``(user_id, event_id)``, and the
retraining export pages through a monotonically increasing surrogate key so the same event is never exported
twice. The service also logs the recommendation lists it answered (:meth:`FeedbackStore.add_served`) for the
monitoring flow; that log is best-effort (sampled, batched, dropped when the store is down).

Examples
--------
>>> store = FeedbackStore("sqlite://")
>>> store.add_events([FeedbackEvent(user_id="u1", item_id="a1", event="dislike", event_id="e1")])
AddResult(inserted=1, duplicates=0)
>>> store.add_events([FeedbackEvent(user_id="u1", item_id="a1", event="dislike", event_id="e1")])
AddResult(inserted=0, duplicates=1)
>>> store.disliked_items("u1")
{'a1'}
>>> events, cursor = store.events_since(None, limit=100)
>>> store.events_since(cursor, limit=100)[0]
[]
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.schema import CreateIndex, CreateTable

from recsys.columns import Col
from recsys.errors import RecsysError
from recsys.feedback.announcements import Announcements
from recsys.feedback.erasure_jobs import ErasureJobs, event_watermark, record_erasure
from recsys.feedback.events import (
    FEEDBACK_COLUMNS,
    MAX_REASON_LENGTH,
    FeedbackEvent,
    InvalidFeedbackError,
    events_to_frame,
)
from recsys.feedback.pseudonyms import DEFAULT_PSEUDONYM_SALT, PSEUDONYM_SALT_ENV, pseudonymise, salt_check
from recsys.feedback.records import Ratings, ServedLists
from recsys.feedback.tables import (
    ACTION_COLUMN,
    AUDIT,
    EVENTS,
    ID_COLUMN,
    METADATA,
    PSEUDONYM_COLUMN,
    RATINGS,
    REASON_COLUMN,
    SALT_SETTING,
    SERVED,
    SETTINGS,
    AuditRecord,
    Served,
    add_missing_columns,
    make_engine,
    parse_url,
    scope_event_ids_per_user,
)
from recsys.paths import FEEDBACK_DIR

_LOG = logging.getLogger(__name__)

FEEDBACK_URL_ENV = "RECSYS_FEEDBACK_URL"
"""Environment variable holding the feedback store's URL (SQLite or PostgreSQL)."""
DEFAULT_FEEDBACK_URL = f"sqlite:///{(FEEDBACK_DIR / 'feedback.db').as_posix()}"
"""Without ``RECSYS_FEEDBACK_URL``: a SQLite file under the project's ``data/feedback``."""

EXPORT_CURSOR_ATTR = "cursor"
"""Key of ``DataFrame.attrs`` where :meth:`FeedbackStore.export_frame` leaves the cursor to keep."""
_EXPORT_LOCK_TIMEOUT = "30s"
_SCHEMA_LOCK_KEY = 0x7265637379730001  # any constant bigint; serialises concurrent create_schema calls


class FeedbackUnavailableError(RecsysError):
    """The feedback database cannot be reached or is busy; the service should answer 503 and retry later."""


def feedback_url(project_dir: Path | None = None) -> str:
    """The feedback store's URL: ``$RECSYS_FEEDBACK_URL``, else :data:`DEFAULT_FEEDBACK_URL`.

    The service, the monitoring flow and the retraining flow all find the store through here. A relative
    SQLite path is under ``project_dir`` when one is given (the flows), else under the working directory
    (the service, started from the project root).
    """
    url = os.environ.get(FEEDBACK_URL_ENV, "").strip() or DEFAULT_FEEDBACK_URL
    prefix = "sqlite:///"
    if project_dir is not None and url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(project_dir / url.removeprefix(prefix))
    return url


@dataclass(frozen=True)
class AddResult:
    """Outcome of :meth:`FeedbackStore.add_events`: new rows, and events whose ``event_id`` was known."""

    inserted: int
    duplicates: int


class FeedbackStore(ServedLists, Ratings, ErasureJobs, Announcements):
    """Feedback events in SQLite (``sqlite:///path.db``) or PostgreSQL (``postgresql+psycopg://...``).

    Thread-safe: share one store per process. Every method that touches the database raises
    :class:`FeedbackUnavailableError` when the database cannot be reached. The served-list log and the
    listeners' ratings are kept by the same store (:mod:`recsys.feedback.records`).

    Parameters
    ----------
    url : str
        SQLAlchemy database URL. ``postgresql://`` means the psycopg 3 driver.
    create : bool
        Create the tables (and the SQLite file's folder) if missing. Needs the database to be reachable.
    timeout_s : float
        How long to wait for a connection (PostgreSQL, at least 2 s) or a lock (SQLite busy timeout).
    query_timeout_s : float
        PostgreSQL: the longest a statement may take, and the longest the client waits for any answer
        (a server that stops answering ends the call instead of hanging it: :func:`postgres_engine`).
    """

    def __init__(
        self, url: str, *, create: bool = True, timeout_s: float = 10.0, query_timeout_s: float = 60.0
    ) -> None:
        parsed = parse_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        self._sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" else None
        self._engine = make_engine(parsed, timeout_s, query_timeout_s)
        self._postgres = parsed.get_backend_name() == "postgresql"
        self._insert_new = _insert_skipping_known(self._postgres)
        self._salt: str | None = None
        if create:
            self.create_schema()

    def __repr__(self) -> str:
        return f"FeedbackStore({self.url!r})"

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for administration and tests)."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def create_schema(self) -> None:
        """Create the tables and indexes that are missing; safe to call from several processes at once."""
        with self._guard("creating the schema"):
            if self._sqlite_file and self._sqlite_file != ":memory:":
                Path(self._sqlite_file).parent.mkdir(parents=True, exist_ok=True)
            with self._engine.begin() as conn:
                if self._postgres:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                for table in METADATA.sorted_tables:
                    conn.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        conn.execute(CreateIndex(index, if_not_exists=True))
                add_missing_columns(conn)
                scope_event_ids_per_user(conn)
                # The first creator's random salt wins; later (or concurrent) creators keep it.
                insert = postgresql.insert if self._postgres else sqlite.insert
                conn.execute(
                    insert(SETTINGS)
                    .values(name=SALT_SETTING, value=secrets.token_hex(32))
                    .on_conflict_do_nothing(index_elements=[SETTINGS.c.name])
                )

    def pseudonym_salt(self) -> str:
        """The secret salt of this store's pseudonyms: ``RECSYS_PSEUDONYM_SALT`` when set, else the random
        salt the store drew when it was created (kept in ``store_settings``, beside the raw ids it
        protects, so the service and the flows that share a store share its pseudonyms).

        A store created before salts were stored falls back to :data:`DEFAULT_PSEUDONYM_SALT`, with a
        warning.
        """
        override = os.environ.get(PSEUDONYM_SALT_ENV)
        if override:
            return override
        if self._salt is None:
            query = sa.select(SETTINGS.c.value).where(SETTINGS.c.name == SALT_SETTING)
            try:
                with self._guard("reading the pseudonym salt"), self._engine.connect() as conn:
                    self._salt = conn.execute(query).scalar_one_or_none()
            except FeedbackUnavailableError:
                if self.ping():  # reachable, so the table is missing: a store older than stored salts
                    self._salt = None
                else:
                    raise
            if self._salt is None:
                _LOG.warning("%s has no stored pseudonym salt: using the public default", self.url)
                self._salt = DEFAULT_PSEUDONYM_SALT
        return self._salt

    def pseudonym(self, user_id: str) -> str:
        """:func:`pseudonymise` with :meth:`pseudonym_salt`."""
        return pseudonymise(user_id, self.pseudonym_salt())

    def ping(self) -> bool:
        """Return whether the database answers a trivial query (for readiness probes)."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except (sa_exc.SQLAlchemyError, OSError) as err:
            _LOG.warning("feedback store %s is not reachable: %s", self.url, _first_line(err))
            return False
        return True

    def add_events(self, events: Sequence[FeedbackEvent]) -> AddResult:
        """Insert events in one transaction, committed before returning; known events are skipped.

        An event is known by its listener and ``event_id``: a repeated pair (in this batch or stored earlier)
        counts as a duplicate and keeps the first stored version; two listeners may use the same event id.
        """
        rows = _unique_rows(events)
        inserted = 0
        if rows:
            with self._guard("adding events"), self._engine.begin() as conn:
                inserted = len(conn.execute(self._insert_new, rows).all())
        return AddResult(inserted=inserted, duplicates=len(events) - inserted)

    def count(self, after_cursor: int = 0) -> int:
        """Number of stored events (with ``after_cursor``: of those stored after that export cursor)."""
        query = sa.select(sa.func.count()).select_from(EVENTS).where(EVENTS.c[ID_COLUMN] > after_cursor)
        with self._guard("counting events"), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def disliked_items(self, user_id: str) -> set[str]:
        """Items ``user_id`` has ever disliked (a later like does not undo a dislike)."""
        query = sa.select(EVENTS.c[Col.ITEM]).where(
            EVENTS.c[Col.USER] == user_id, EVENTS.c[Col.EVENT] == "dislike"
        )
        with self._guard("reading dislikes"), self._engine.connect() as conn:
            return set(conn.execute(query.distinct()).scalars())

    def user_events(self, user_id: str, limit: int = 1000) -> list[dict[str, str]]:
        """The newest ``limit`` events stored for ``user_id``, newest first: what the store holds about them
        (``event_id``, ``item_id``, ``event``, ``timestamp`` as ISO 8601)."""
        columns = (EVENTS.c[Col.EVENT_ID], EVENTS.c[Col.ITEM], EVENTS.c[Col.EVENT], EVENTS.c[Col.TIMESTAMP])
        query = (
            sa.select(*columns)
            .where(EVENTS.c[Col.USER] == user_id)
            .order_by(EVENTS.c[ID_COLUMN].desc())
            .limit(limit)
        )
        with self._guard("reading a listener's events"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {"event_id": event_id, "item_id": item, "event": event, "timestamp": stamp.isoformat()}
            for event_id, item, event, stamp in rows
        ]

    def dislikes_since(self, cursor: int = 0) -> tuple[list[tuple[int, str, str]], int]:
        """Every ``(id, user, item)`` dislike stored with an id above ``cursor``, and the highest such id.

        For the service's in-memory dislike index: ``cursor=0`` reads them all. With no new dislikes the
        cursor comes back unchanged. Unlike :meth:`events_since` it does not wait for in-flight writers
        (that would block every insert): a caller that must not miss a late commit reads again from a
        little below its cursor.
        """
        query = sa.select(EVENTS.c[ID_COLUMN], EVENTS.c[Col.USER], EVENTS.c[Col.ITEM]).where(
            EVENTS.c[ID_COLUMN] > cursor, EVENTS.c[Col.EVENT] == "dislike"
        )
        with self._guard("reading dislikes"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(int(id_), user, item) for id_, user, item in rows], max(
            (int(row[0]) for row in rows), default=cursor
        )

    def session_events_since(
        self, cursor: int, since: datetime, per_user: int | None = None
    ) -> tuple[list[tuple[int, str, str, str, float]], int]:
        """Every ``(id, user, item, event, time)`` stored with an id above ``cursor`` and a timestamp from
        ``since`` on (``time``: seconds since the epoch), oldest first, and the highest id stored (whatever
        its timestamp: a back-dated event never holds the cursor back). ``per_user``: only each listener's
        newest that many (a full read).

        For the service's in-memory session index (:mod:`recsys.serving.session`); like
        :meth:`dislikes_since` it does not wait for in-flight writers.
        """
        columns = [EVENTS.c[name] for name in (ID_COLUMN, Col.USER, Col.ITEM, Col.EVENT, Col.TIMESTAMP)]
        where = (EVENTS.c[ID_COLUMN] > cursor, EVENTS.c[Col.TIMESTAMP] >= since)
        if per_user is None:
            query = sa.select(*columns).where(*where).order_by(EVENTS.c[ID_COLUMN])
        else:
            newest = sa.func.row_number().over(
                partition_by=EVENTS.c[Col.USER], order_by=EVENTS.c[ID_COLUMN].desc()
            )
            ranked = sa.select(*columns, newest.label("newest")).where(*where).subquery()
            kept = [ranked.c[name] for name in (ID_COLUMN, Col.USER, Col.ITEM, Col.EVENT, Col.TIMESTAMP)]
            query = sa.select(*kept).where(ranked.c.newest <= per_user).order_by(ranked.c[ID_COLUMN])
        with self._guard("reading session events"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
            highest = conn.execute(sa.select(sa.func.max(EVENTS.c[ID_COLUMN]))).scalar()
        found = [(int(id_), user, item, event, stamp.timestamp()) for id_, user, item, event, stamp in rows]
        return found, max(cursor, int(highest or 0))

    def events_since(self, cursor: int | None = None, limit: int = 1000) -> tuple[list[FeedbackEvent], int]:
        """Return up to ``limit`` events stored after ``cursor`` (``None``: the start) and the new cursor.

        Keep the returned cursor and pass it next time: no event is returned twice or skipped, even with
        concurrent writers. With no new events the cursor comes back unchanged.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        start = cursor or 0
        query = (
            sa.select(EVENTS).where(EVENTS.c[ID_COLUMN] > start).order_by(EVENTS.c[ID_COLUMN]).limit(limit)
        )
        with self._guard("reading events"), self._engine.begin() as conn:
            self._wait_for_writers(conn)
            rows = conn.execute(query).mappings().all()
        return [_to_event(row) for row in rows], (int(rows[-1][ID_COLUMN]) if rows else start)

    def export_frame(self, since_cursor: int | None = None, *, page_size: int = 10_000) -> pd.DataFrame:
        """All events after ``since_cursor`` as a DataFrame (:func:`events_to_frame`).

        The cursor to keep for the next export is in ``frame.attrs[EXPORT_CURSOR_ATTR]``.
        """
        events: list[FeedbackEvent] = []
        cursor = since_cursor or 0
        while True:
            page, cursor = self.events_since(cursor, page_size)
            events += page
            if len(page) < page_size:
                break
        frame = events_to_frame(events)
        frame.attrs[EXPORT_CURSOR_ATTR] = cursor
        return frame

    def delete_user(self, user_id: str, reason: str) -> int:
        """Delete all of ``user_id``'s feedback, served lists and ratings; record an erasure job.

        One transaction deletes the rows and writes the audit row and the pending erasure job
        (:mod:`recsys.feedback.erasure_jobs`), both under the user's pseudonym only. On PostgreSQL it first
        waits for the writers in flight on those tables and holds new ones until it commits, so no row of
        the user committed around it survives. On SQLite the write-ahead log is then checkpointed, so the
        deleted rows (zeroed by ``secure_delete``) leave the files at once when no reader holds them.

        Returns the number of feedback events deleted (the audit row's count). ``reason`` is stored
        verbatim, so it must not contain personal data.
        """
        if not 1 <= len(reason.strip()) <= MAX_REASON_LENGTH:
            raise InvalidFeedbackError(f"reason must be 1-{MAX_REASON_LENGTH} characters, got {len(reason)}")
        pseudonym, check = self.pseudonym(user_id), salt_check(self.pseudonym_salt())
        with self._guard("deleting a user"), self._engine.begin() as conn:
            if self._postgres:
                conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_EXPORT_LOCK_TIMEOUT}'"))
                tables = ", ".join(table.name for table in (EVENTS, SERVED, RATINGS))
                conn.execute(sa.text(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE"))
            watermark = event_watermark(conn)
            deleted = conn.execute(sa.delete(EVENTS).where(EVENTS.c[Col.USER] == user_id)).rowcount
            served = conn.execute(sa.delete(SERVED).where(SERVED.c[Served.USER] == user_id)).rowcount
            conn.execute(sa.delete(RATINGS).where(RATINGS.c[Col.USER] == user_id))
            record_erasure(conn, pseudonym, check, reason, int(deleted), watermark)
        _LOG.info("deleted %d feedback events and %d served lists of user %s", deleted, served, pseudonym)
        if not self._postgres:  # one try: the erasure job's store step retries until it is done
            with contextlib.suppress(FeedbackUnavailableError):
                self.compact(tries=1)
        return int(deleted)

    def audit_log(self) -> list[AuditRecord]:
        """Every audit record, oldest first."""
        columns = [
            AUDIT.c[name]
            for name in (ACTION_COLUMN, PSEUDONYM_COLUMN, Col.COUNT, Col.TIMESTAMP, REASON_COLUMN)
        ]
        with self._guard("reading the audit log"), self._engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).order_by(AUDIT.c[ID_COLUMN])).all()
        return [AuditRecord(*row) for row in rows]

    def _wait_for_writers(self, conn: Connection) -> None:
        # PostgreSQL hands out ids before commit, so a writer holding id 10 may commit after one holding
        # id 11; a reader that saw 11 would then skip 10 for ever. SHARE mode waits for every in-flight
        # insert. SQLite needs nothing: its writers are serialised, so ids commit in order.
        if self._postgres:
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_EXPORT_LOCK_TIMEOUT}'"))
            conn.execute(sa.text(f"LOCK TABLE {EVENTS.name} IN SHARE MODE"))

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError) as err:
            raise FeedbackUnavailableError(
                f"feedback store {self.url} unavailable while {action}: {_first_line(err)}"
            ) from err


def _insert_skipping_known(postgres: bool) -> sa.Insert:
    insert = postgresql.insert if postgres else sqlite.insert
    # RETURNING yields a row per inserted event and none per skipped duplicate. Executed with a list of
    # rows, SQLAlchemy batches them into multi-row INSERTs compiled once ("insertmanyvalues").
    return (
        insert(EVENTS)
        .on_conflict_do_nothing(index_elements=[EVENTS.c[Col.USER], EVENTS.c[Col.EVENT_ID]])
        .returning(EVENTS.c[Col.EVENT_ID])
    )


def _unique_rows(events: Sequence[FeedbackEvent]) -> list[dict[str, Any]]:
    first: dict[tuple[str, str], FeedbackEvent] = {}
    for event in events:
        first.setdefault((event.user_id, event.event_id), event)  # the first wins, as against stored rows
    return [event.model_dump() for event in first.values()]


def _to_event(row: RowMapping) -> FeedbackEvent:
    return FeedbackEvent.model_validate({name: row[name] for name in FEEDBACK_COLUMNS})


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
