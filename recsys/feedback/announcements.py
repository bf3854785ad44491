"""Announcements every service replica follows, kept in the feedback store that all of them share.

A replica on another host shares no folder with the one that handled a change, but it shares the feedback
database. Each kind of change (the model to serve, the running experiment, dislikes and erasures) has one
row in ``service_announcements``: a version bumped by every change and the change's value (the model tag,
the experiment's design as JSON). A replica reads the whole table (a handful of rows) once a second, and on
PostgreSQL also listens on :data:`CHANNEL`, which the same transaction notifies, so it usually learns of a
change within milliseconds; the poll is the fallback when a notification is lost (a dropped connection).
A replica that was down reads the rows when it starts, so it catches up with what it missed.

A mixin of :class:`recsys.feedback.store.FeedbackStore`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from recsys.columns import Col
from recsys.feedback.events import utc_now
from recsys.feedback.records import _Stored
from recsys.feedback.tables import ANNOUNCEMENTS, parse_url

CHANNEL = "recsys_announcements"
"""The PostgreSQL notification channel of :meth:`Announcements.announce`."""


class Announcement(NamedTuple):
    """One kind of change as last announced: its version (0: never) and value."""

    version: int
    value: str | None


NEVER = Announcement(0, None)
RELOAD = "reload"
"""The announcement naming the model every replica of a data set's service serves (its value: the tag)."""


def announcement_key(scope: str, name: str) -> str:
    """The row of announcement ``name`` of the service of ``scope`` (its model name)."""
    return f"{scope}/{name}" if scope else name


class Announcements(_Stored):
    """The ``service_announcements`` table of a feedback store."""

    def announce(self, name: str, value: str | None = None) -> int:
        """Record one more change of ``name`` (with ``value``, which replaces the last one) and return its
        version; committed before this returns, and notified on :data:`CHANNEL` on PostgreSQL.

        Raises
        ------
        FeedbackUnavailableError
            The database cannot be reached: nothing was announced.
        """
        insert = (postgresql.insert if self._postgres else sqlite.insert)(ANNOUNCEMENTS)
        now = utc_now()
        statement = (
            insert.values(name=name, version=1, value=value, **{Col.TIMESTAMP: now})
            .on_conflict_do_update(
                index_elements=[ANNOUNCEMENTS.c.name],
                set_={
                    "version": ANNOUNCEMENTS.c.version + 1,
                    "value": insert.excluded.value,
                    Col.TIMESTAMP: insert.excluded[Col.TIMESTAMP],
                },
            )
            .returning(ANNOUNCEMENTS.c.version)
        )
        with self._guard(f"announcing {name}"), self._engine.begin() as conn:
            version = int(conn.execute(statement).scalar_one())
            if self._postgres:
                conn.execute(sa.select(sa.func.pg_notify(CHANNEL, name)))
        return version

    def announcements(self) -> dict[str, Announcement]:
        """Every announcement's version and value, by name."""
        query = sa.select(ANNOUNCEMENTS.c.name, ANNOUNCEMENTS.c.version, ANNOUNCEMENTS.c.value)
        with self._guard("reading announcements"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {name: Announcement(int(version), value) for name, version, value in rows}


def listening_connection(url: str) -> Any:
    """A psycopg connection to the PostgreSQL store at ``url`` in autocommit mode, for ``LISTEN`` (outside the
    store's pool: it stays open for as long as the listener runs)."""
    import psycopg

    parsed = parse_url(url)
    options: dict[str, Any] = {key: str(value) for key, value in parsed.query.items()}
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        connect_timeout=2,
        autocommit=True,
        **options,
    )
