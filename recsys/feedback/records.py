"""The service's records beside the feedback events, kept by :class:`recsys.feedback.store.FeedbackStore`:
the recommendation lists it answered (for monitoring and online experiments) and the listeners' 1-5
ratings of their lists (for the usability report).

Both are mixins of the store: they reach the database through the store's engine and its guard, which
turns an unreachable database into :class:`recsys.feedback.store.FeedbackUnavailableError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recsys.columns import Col
from recsys.feedback.events import InvalidFeedbackError, utc_now
from recsys.feedback.tables import (
    ID_COLUMN,
    RATING_COLUMN,
    RATINGS,
    SERVED,
    SERVED_COLUMNS,
    Served,
    ServedRecommendation,
    served_row,
)


class _Stored:
    """What the mixins need of the store."""

    _engine: Engine
    _postgres: bool

    def _guard(self, action: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def pseudonym(self, user_id: str) -> str:
        raise NotImplementedError

    def _erased_served(self, conn: Connection, rows: Sequence[tuple[int, str | None, datetime]]) -> list[int]:
        raise NotImplementedError


class ServedLists(_Stored):
    """The log of served recommendation lists (best-effort: sampled, batched by the service)."""

    def add_served(self, records: Sequence[ServedRecommendation]) -> int:
        """Insert served recommendation lists in one transaction; return how many were stored.

        Lists of a listener erased at or after the moment they were served (queued in a worker's memory
        while the erasure ran) are dropped here, not stored.

        Raises
        ------
        InvalidFeedbackError
            When a record names an endpoint other than :data:`SERVED_ENDPOINTS` (nothing is stored).
        """
        rows = [served_row(record) for record in records]
        if not rows:
            return 0
        returning = (SERVED.c[ID_COLUMN], SERVED.c[Served.USER], SERVED.c[Served.SERVED_AT])
        with self._guard("logging served recommendations"), self._engine.begin() as conn:
            # Inserted first, then checked in the same transaction: an erasure that committed before this
            # insert could write is seen, and one that commits later deletes these rows itself.
            inserted = conn.execute(sa.insert(SERVED).returning(*returning), rows).all()
            erased = self._erased_served(conn, [tuple(row) for row in inserted])
            if erased:
                conn.execute(sa.delete(SERVED).where(SERVED.c[ID_COLUMN].in_(erased)))
        return len(inserted) - len(erased)

    def served_frame(
        self, since: datetime | None = None, until: datetime | None = None, *, limit: int | None = None
    ) -> pd.DataFrame:
        """Served lists with ``since < served_at <= until`` (either bound optional), in the order stored.

        Parameters
        ----------
        since, until : datetime, optional
            Timezone-aware bounds of the window.
        limit : int, optional
            Keep only the ``limit`` most recently stored lists of the window (the monitoring flow's cap).

        Returns
        -------
        pandas.DataFrame
            :data:`SERVED_COLUMNS`; ``served_at`` is ``datetime64[ns, UTC]`` and ``items`` holds lists of
            item ids in ranked order.
        """
        with self._guard("reading served recommendations"), self._engine.connect() as conn:
            # A store created before the served log, opened without create, has no such table yet; one made
            # before a column (arm, propensities, ...) lacks it until a writer opens it: those read as None.
            inspector = sa.inspect(conn)
            present = (
                {column["name"] for column in inspector.get_columns(SERVED.name)}
                if inspector.has_table(SERVED.name)
                else set()
            )
            columns = [name for name in SERVED_COLUMNS if name in present]
            query = sa.select(*(SERVED.c[name] for name in columns)).order_by(SERVED.c[ID_COLUMN].desc())
            if since is not None:
                query = query.where(SERVED.c[Served.SERVED_AT] > since)
            if until is not None:
                query = query.where(SERVED.c[Served.SERVED_AT] <= until)
            if limit is not None:
                query = query.limit(limit)
            rows = conn.execute(query).all() if present else []
        frame = pd.DataFrame(rows[::-1], columns=columns)
        for name in SERVED_COLUMNS:
            if name not in frame:
                frame[name] = pd.Series([None] * len(frame), dtype=object)
        frame = frame[list(SERVED_COLUMNS)]
        frame[Served.SERVED_AT] = pd.to_datetime(frame[Served.SERVED_AT], utc=True)
        frame[Served.ITEMS] = [json.loads(items) for items in frame[Served.ITEMS]]
        for column in (Served.CREDITS, Served.PROPENSITIES, Served.EXPLORED):
            frame[column] = [json.loads(value) if value else None for value in frame[column]]
        frame[Served.COLD_START] = frame[Served.COLD_START].astype(bool)
        frame[Served.BIAS_STRENGTH] = frame[Served.BIAS_STRENGTH].astype(np.float64)
        return frame

    def count_served(self) -> int:
        """Number of stored served lists."""
        with self._guard("counting served recommendations"), self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(SERVED)).scalar_one())

    def delete_served_before(self, cutoff: datetime) -> int:
        """Delete the served lists logged at or before ``cutoff`` (retention); return how many went."""
        query = sa.delete(SERVED).where(SERVED.c[Served.SERVED_AT] <= cutoff)
        with self._guard("pruning served recommendations"), self._engine.begin() as conn:
            return int(conn.execute(query).rowcount)


class Ratings(_Stored):
    """Listeners' 1-5 ratings of the lists they were shown."""

    def add_rating(
        self, user_id: str, rating: int, model_version: str | None, at: datetime | None = None
    ) -> None:
        """Store a listener's 1-5 rating of the recommendations they were shown (by ``model_version``).

        A listener has one rating per model version: a new one replaces the last, so the table grows with
        listeners and versions, not with how often a page (or a loop) sends one.
        """
        if not 1 <= rating <= 5:
            raise InvalidFeedbackError(f"rating must be 1-5, got {rating}")
        row = {
            Col.USER: user_id,
            RATING_COLUMN: rating,
            Served.MODEL_VERSION: model_version,
            Col.TIMESTAMP: at or utc_now(),
        }
        version = RATINGS.c[Served.MODEL_VERSION]
        same = sa.and_(
            RATINGS.c[Col.USER] == user_id,
            version.is_(None) if model_version is None else version == model_version,
        )
        with self._guard("storing a rating"), self._engine.begin() as conn:
            conn.execute(sa.delete(RATINGS).where(same))
            conn.execute(sa.insert(RATINGS).values(**row))

    def user_ratings(self, user_id: str) -> list[dict[str, Any]]:
        """``user_id``'s ratings, newest first: ``rating`` and ``timestamp`` (ISO 8601)."""
        query = (
            sa.select(RATINGS.c[RATING_COLUMN], RATINGS.c[Col.TIMESTAMP])
            .where(RATINGS.c[Col.USER] == user_id)
            .order_by(RATINGS.c[ID_COLUMN].desc())
        )
        with self._guard("reading a listener's ratings"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{"rating": int(rating), "timestamp": stamp.isoformat()} for rating, stamp in rows]

    def ratings_frame(self) -> pd.DataFrame:
        """Every stored rating: ``timestamp`` (UTC), ``rating`` and ``model_version`` (no user ids)."""
        columns = (RATINGS.c[Col.TIMESTAMP], RATINGS.c[RATING_COLUMN], RATINGS.c[Served.MODEL_VERSION])
        with self._guard("reading ratings"), self._engine.connect() as conn:
            # A store made before ratings, opened without create, has no such table yet.
            query = sa.select(*columns).order_by(RATINGS.c[ID_COLUMN])
            rows = conn.execute(query).all() if sa.inspect(conn).has_table(RATINGS.name) else []
        frame = pd.DataFrame(rows, columns=[Col.TIMESTAMP, RATING_COLUMN, Served.MODEL_VERSION])
        frame[Col.TIMESTAMP] = pd.to_datetime(frame[Col.TIMESTAMP], utc=True)
        return frame
