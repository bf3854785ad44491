"""The feedback database: its tables (events, erasure audit, settings, served lists) and engines.

One schema for SQLite and PostgreSQL (SQLAlchemy Core); :class:`recsys.feedback.store.FeedbackStore` is the
only code that reads or writes these tables.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from recsys.columns import FEEDBACK_EVENTS, Col
from recsys.errors import ConfigError
from recsys.feedback.events import MAX_ID_LENGTH, MAX_REASON_LENGTH, InvalidFeedbackError

_LOG = logging.getLogger(__name__)

SALT_SETTING = "pseudonym_salt"
"""Name of the store's secret salt in its ``store_settings`` table."""
ID_COLUMN = "id"  # surrogate key: the export cursor
ACTION_COLUMN = "action"
PSEUDONYM_COLUMN = "user_pseudonym"
REASON_COLUMN = "reason"


class Served:
    """Columns of the ``served_recommendations`` table and of :meth:`FeedbackStore.served_frame`."""

    SERVED_AT = "served_at"
    USER = Col.USER  # raw, as in the events table; None for anonymous new-listener requests
    ENDPOINT = "endpoint"
    MODEL_VERSION = "model_version"
    COLD_START = "cold_start"
    ITEMS = "items"  # the ranked item ids (a JSON array in the table, a list in the frame)
    BIAS_STRENGTH = "bias_strength"
    # Experiments: the arm that answered (champion, challenger, shadow or interleave), an interleaved list's
    # model per slot (a JSON array in the table, a list in the frame) and the challenger's model version
    # (the experiment's identity); all None outside an experiment.
    ARM = "arm"
    CREDITS = "credits"
    CHALLENGER = "challenger"
    # Exploration (recsys.serving.exploration): each shown item's probability of being shown (a JSON array
    # in the table, a list in the frame) and the explored places (0-based); None for a list that could not
    # explore (cold start, interleaved, or a service without exploration).
    PROPENSITIES = "propensities"
    EXPLORED = "explored"


SERVED_COLUMNS: tuple[str, ...] = (
    Served.SERVED_AT,
    Served.USER,
    Served.ENDPOINT,
    Served.MODEL_VERSION,
    Served.COLD_START,
    Served.ITEMS,
    Served.BIAS_STRENGTH,
    Served.ARM,
    Served.CREDITS,
    Served.CHALLENGER,
    Served.PROPENSITIES,
    Served.EXPLORED,
)
SERVED_ENDPOINTS: tuple[str, ...] = ("recommend", "new-listener")
MAX_VERSION_LENGTH = 200
# One encoder for every row: json.dumps with non-default separators builds a new one per call.
_ITEMS_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class _UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite keeps no offset, so store UTC wall time)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


EVENT_KEY = "uq_feedback_events_user_event"
_GLOBAL_EVENT_KEY = "uq_feedback_events_event_id"  # what stores made before event ids were per listener have

# On SQLite only INTEGER PRIMARY KEY becomes the auto-incrementing rowid.
_SURROGATE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
METADATA = sa.MetaData()
EVENTS = sa.Table(
    "feedback_events",
    METADATA,
    sa.Column(ID_COLUMN, _SURROGATE, primary_key=True, autoincrement=True),
    sa.Column(Col.EVENT_ID, sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column(Col.USER, sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column(Col.ITEM, sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column(Col.EVENT, sa.String(16), nullable=False),
    sa.Column(Col.TIMESTAMP, _UTCDateTime(), nullable=False),
    sa.Column(Col.ARM, sa.String(16), nullable=True),
    # Idempotency is per listener: two clients that both number their events "e-1" never collide.
    sa.UniqueConstraint(Col.USER, Col.EVENT_ID, name=EVENT_KEY),
    sa.CheckConstraint(sa.column(Col.EVENT).in_(FEEDBACK_EVENTS), name="ck_feedback_events_event"),
    sa.Index("ix_feedback_events_user_event", Col.USER, Col.EVENT),
    # AUTOINCREMENT stops SQLite reusing the ids of deleted newest rows, which would hide new events
    # from an export cursor that has already passed them.
    sqlite_autoincrement=True,
)
AUDIT = sa.Table(
    "feedback_audit",
    METADATA,
    sa.Column(ID_COLUMN, _SURROGATE, primary_key=True, autoincrement=True),
    sa.Column(ACTION_COLUMN, sa.String(32), nullable=False),
    sa.Column(PSEUDONYM_COLUMN, sa.String(64), nullable=False),
    sa.Column(Col.COUNT, sa.Integer(), nullable=False),
    sa.Column(Col.TIMESTAMP, _UTCDateTime(), nullable=False),
    sa.Column(REASON_COLUMN, sa.String(MAX_REASON_LENGTH), nullable=False),
    sqlite_autoincrement=True,
)
SETTINGS = sa.Table(
    "store_settings",
    METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
SERVED = sa.Table(
    "served_recommendations",
    METADATA,
    sa.Column(ID_COLUMN, _SURROGATE, primary_key=True, autoincrement=True),
    sa.Column(Served.SERVED_AT, _UTCDateTime(), nullable=False),
    sa.Column(Served.USER, sa.String(MAX_ID_LENGTH), nullable=True),
    sa.Column(Served.ENDPOINT, sa.String(16), nullable=False),
    sa.Column(Served.MODEL_VERSION, sa.String(MAX_VERSION_LENGTH), nullable=False),
    sa.Column(Served.COLD_START, sa.Boolean(), nullable=False),
    sa.Column(Served.ITEMS, sa.Text(), nullable=False),
    sa.Column(Served.BIAS_STRENGTH, sa.Float(), nullable=False),
    sa.Column(Served.ARM, sa.String(16), nullable=True),
    sa.Column(Served.CREDITS, sa.Text(), nullable=True),
    sa.Column(Served.CHALLENGER, sa.String(MAX_VERSION_LENGTH), nullable=True),
    sa.Column(Served.PROPENSITIES, sa.Text(), nullable=True),
    sa.Column(Served.EXPLORED, sa.Text(), nullable=True),
    sa.CheckConstraint(sa.column(Served.ENDPOINT).in_(SERVED_ENDPOINTS), name="ck_served_endpoint"),
    sa.Index("ix_served_recommendations_served_at", Served.SERVED_AT),
    sa.Index("ix_served_recommendations_user", Served.USER),
    sqlite_autoincrement=True,
)

ERASURE_PENDING, ERASURE_DONE = "pending", "done"
ERASURES = sa.Table(
    "erasure_jobs",
    METADATA,
    sa.Column(ID_COLUMN, _SURROGATE, primary_key=True, autoincrement=True),
    sa.Column(PSEUDONYM_COLUMN, sa.String(64), nullable=False),
    # A keyed hash of the salt the pseudonym was made with (never the salt): a flow whose salt differs
    # refuses the job instead of matching nobody. None for a job made from an older store's audit row.
    sa.Column("salt_check", sa.String(32), nullable=True),
    sa.Column("requested_at", _UTCDateTime(), nullable=False),
    # The highest event id when the rows were deleted: later events of the same id are new feedback.
    sa.Column("event_watermark", sa.BigInteger(), nullable=False),
    sa.Column("audit_id", sa.BigInteger(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("steps", sa.Text(), nullable=False),  # JSON: each step's outcome, for the record and reruns
    sa.Column("completed_at", _UTCDateTime(), nullable=True),
    sa.UniqueConstraint("audit_id", name="uq_erasure_jobs_audit_id"),
    sa.CheckConstraint(
        sa.column("status").in_((ERASURE_PENDING, ERASURE_DONE)), name="ck_erasure_jobs_status"
    ),
    sa.Index("ix_erasure_jobs_status", "status"),
    sa.Index("ix_erasure_jobs_pseudonym", PSEUDONYM_COLUMN),
    sqlite_autoincrement=True,
)
"""One row per erasure request: a resumable job, pending until no copy of the listener's data is left."""
REVOCATIONS = sa.Table(
    "model_revocations",
    METADATA,
    sa.Column(ID_COLUMN, _SURROGATE, primary_key=True, autoincrement=True),
    sa.Column("model_tag", sa.String(MAX_VERSION_LENGTH), nullable=False),
    sa.Column(REASON_COLUMN, sa.String(MAX_REASON_LENGTH), nullable=False),
    sa.Column(Col.TIMESTAMP, _UTCDateTime(), nullable=False),
    sa.UniqueConstraint("model_tag", name="uq_model_revocations_tag"),
    sqlite_autoincrement=True,
)
"""Model versions that must never be served again (they hold an erased listener's feedback)."""

ANNOUNCEMENTS = sa.Table(
    "service_announcements",
    METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("value", sa.Text(), nullable=True),
    sa.Column(Col.TIMESTAMP, _UTCDateTime(), nullable=False),
)
"""What every service replica on every host must follow (:mod:`recsys.feedback.announcements`): one
row per kind of change (the model to serve, the experiment, dislikes and erasures), its version bumped by
each change."""

RATING_COLUMN = "rating"
RATINGS = sa.Table(
    "list_ratings",
    METADATA,
    sa.Column(ID_COLUMN, _SURROGATE, primary_key=True, autoincrement=True),
    sa.Column(Col.USER, sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column(RATING_COLUMN, sa.SmallInteger(), nullable=False),
    sa.Column(Served.MODEL_VERSION, sa.String(MAX_VERSION_LENGTH), nullable=True),
    sa.Column(Col.TIMESTAMP, _UTCDateTime(), nullable=False),
    sa.CheckConstraint(sa.column(RATING_COLUMN).between(1, 5), name="ck_list_ratings_rating"),
    sa.Index("ix_list_ratings_user", Col.USER),
    sqlite_autoincrement=True,
)
"""Listeners' answers to "How good are these recommendations?" (1-5), asked by the page, never required."""


@dataclass(frozen=True)
class AuditRecord:
    """One row of the ``feedback_audit`` table. It never holds a raw user id."""

    action: str
    user_pseudonym: str
    count: int
    timestamp: datetime
    reason: str


class ServedRecommendation(NamedTuple):
    """One answered recommendation request, as the service logs it (see :meth:`FeedbackStore.add_served`).

    A named tuple rather than a validated model: the service builds one per request on its hot path.
    ``user_id`` is the raw id (the store is the access-controlled place for it), None when anonymous.
    """

    served_at: datetime
    user_id: str | None
    endpoint: str
    model_version: str
    cold_start: bool
    items: tuple[str, ...]
    bias_strength: float
    arm: str | None = None
    credits: tuple[str, ...] | None = None
    challenger: str | None = None
    propensities: tuple[float, ...] | None = None
    explored: tuple[int, ...] | None = None


def served_row(record: ServedRecommendation) -> dict[str, Any]:
    if record.endpoint not in SERVED_ENDPOINTS:
        raise InvalidFeedbackError(
            f"served endpoint must be one of {', '.join(SERVED_ENDPOINTS)}; got {record.endpoint!r}"
        )
    return {
        Served.SERVED_AT: record.served_at,
        Served.USER: record.user_id or None,
        Served.ENDPOINT: record.endpoint,
        Served.MODEL_VERSION: record.model_version,
        Served.COLD_START: record.cold_start,
        Served.ITEMS: _ITEMS_JSON(list(record.items)),
        Served.BIAS_STRENGTH: float(record.bias_strength),
        Served.ARM: record.arm,
        Served.CREDITS: _ITEMS_JSON(list(record.credits)) if record.credits else None,
        Served.CHALLENGER: record.challenger,
        Served.PROPENSITIES: _ITEMS_JSON(list(record.propensities)) if record.propensities else None,
        Served.EXPLORED: _ITEMS_JSON(list(record.explored or ())) if record.propensities else None,
    }


def store_exists(url: str) -> bool:
    """False for an SQLite store whose file does not exist yet (nothing was ever stored), True otherwise: a
    PostgreSQL store is a server, asked when used. Readers that must not create a store check this first."""
    parsed = parse_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite":
        return True
    return database not in ("", ":memory:") and Path(database).exists()


def parse_url(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError as err:
        raise ConfigError(
            "feedback store URL is not a database URL; use sqlite:///path/feedback.db "
            "or postgresql+psycopg://user:password@host:5432/db"
        ) from err
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"feedback store supports sqlite and postgresql URLs, not {backend!r}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: sa.URL, timeout_s: float, query_timeout_s: float) -> Engine:
    """An engine whose every call is bounded: ``timeout_s`` to connect (or wait for a SQLite lock),
    ``query_timeout_s`` for a PostgreSQL statement to answer (see :func:`postgres_engine`)."""
    if url.get_backend_name() == "sqlite":
        return sqlite_engine(url, timeout_s)
    return postgres_engine(url, timeout_s, query_timeout_s)


def postgres_engine(url: sa.URL, timeout_s: float, query_timeout_s: float) -> Engine:
    """A PostgreSQL engine that never waits without bound, whatever the server or the network does.

    - connecting: ``connect_timeout`` (the whole handshake: a server that accepts and never answers too);
    - a live but slow server: ``statement_timeout`` and ``lock_timeout`` end the statement server-side,
      releasing its locks; ``idle_in_transaction_session_timeout`` ends a client gone mid-transaction;
    - a dead network: TCP keepalives and ``tcp_user_timeout`` drop the connection;
    - a server that keeps the connection but never answers (a paused process): no server-side timer runs
      and the kernel still acknowledges the packets, so only the client can tell. Every wait for an answer
      is bounded by ``query_timeout_s`` (:class:`BoundedConnection`); the connection is then closed.
    """
    ms = max(1, int(query_timeout_s * 1000))
    options = (
        f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={4 * ms}"
    )
    given = url.query.get("options")
    connect_args: dict[str, Any] = {
        "options": f"{given} {options}" if isinstance(given, str) else options,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 2 * ms,
    }
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = max(2, math.ceil(timeout_s))
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=timeout_s,
        connect_args=connect_args,
    )
    connection_class = bounded_connection_class(query_timeout_s)

    @sa.event.listens_for(engine, "do_connect")
    def _bounded(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        return connection_class.connect(*cargs, **cparams)

    return engine


def bounded_connection_class(wait_s: float) -> type[Any]:
    """A psycopg connection class whose every wait for the server ends after ``wait_s`` seconds.

    psycopg waits for an answer with no limit unless told one; past ``wait_s`` the connection's state is
    unknown, so it is closed and the call raises :class:`psycopg.OperationalError` (the store's guard turns
    that into "unavailable"; the pool replaces the connection).
    """
    import psycopg
    from psycopg import errors

    class BoundedConnection(psycopg.Connection):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            try:
                return super().wait(gen, interval=interval, timeout=wait_s if timeout is None else timeout)
            except errors._WaitTimeout:
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {wait_s:g} s; connection closed"
                ) from None

    return BoundedConnection


def sqlite_engine(url: sa.URL, timeout_s: float) -> Engine:
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"timeout": timeout_s})
    busy_ms = int(timeout_s * 1000)

    @sa.event.listens_for(engine, "connect")
    def _durable_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: acknowledged = on disk
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            # Deleted rows are overwritten with zeros, not left in free pages: an erased listener is gone
            # from the file once the WAL is checkpointed (FeedbackStore.compact).
            cursor.execute("PRAGMA secure_delete=ON")
        finally:
            cursor.close()

    return engine


def add_missing_columns(conn: Connection) -> None:
    """Add the nullable columns a store created by an older version lacks (e.g. the experiment ``arm``).

    A concurrent creator may add the column first: SQLite then reports a duplicate column, which is fine.
    (On PostgreSQL the schema lock of :meth:`FeedbackStore.create_schema` serialises creators.)
    """
    inspector = sa.inspect(conn)
    for table in METADATA.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            try:
                with conn.begin_nested():
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            except sa_exc.OperationalError as err:
                if "duplicate column" not in str(err):
                    raise
            _LOG.info("feedback store: added column %s.%s", table.name, column.name)


def scope_event_ids_per_user(conn: Connection) -> bool:
    """Make ``event_id`` unique per listener in a store made when it was unique across listeners; returns
    whether the store was changed. Rows, ids and the id sequence are kept (export cursors stay valid).

    PostgreSQL swaps the constraint; SQLite cannot drop one, so the table is rebuilt in the transaction.
    """
    if conn.dialect.name == "postgresql":
        found = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_constraint WHERE conname = :name AND conrelid = CAST(:table AS regclass)"
            ),
            {"name": _GLOBAL_EVENT_KEY, "table": EVENTS.name},
        ).first()
        if found is None:
            return False
        conn.execute(sa.text(f"ALTER TABLE {EVENTS.name} DROP CONSTRAINT {_GLOBAL_EVENT_KEY}"))
        conn.execute(
            sa.text(f"ALTER TABLE {EVENTS.name} ADD CONSTRAINT {EVENT_KEY} UNIQUE (user_id, event_id)")
        )
        return True
    ddl = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": EVENTS.name}
    ).scalar_one_or_none()
    if ddl is None or _GLOBAL_EVENT_KEY not in ddl:
        return False
    sequence = conn.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = :name"), {"name": EVENTS.name}
    ).scalar_one_or_none()
    old = f"{EVENTS.name}_global_ids"
    conn.execute(sa.text(f"ALTER TABLE {EVENTS.name} RENAME TO {old}"))
    for index in EVENTS.indexes:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {index.name}"))
    conn.execute(CreateTable(EVENTS))
    columns = ", ".join(f'"{column.name}"' for column in EVENTS.columns)
    conn.execute(sa.text(f"INSERT INTO {EVENTS.name} ({columns}) SELECT {columns} FROM {old}"))
    conn.execute(sa.text(f"DROP TABLE {old}"))
    for index in EVENTS.indexes:
        conn.execute(CreateIndex(index, if_not_exists=True))
    if sequence is not None:
        conn.execute(
            sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :seq) WHERE name = :name"),
            {"seq": int(sequence), "name": EVENTS.name},
        )
    _LOG.info("feedback store: event ids are now unique per listener")
    return True
