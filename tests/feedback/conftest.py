"""Fixtures of the feedback-loop tests: an empty feedback store of each backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from recsys.feedback.store import FeedbackStore
from tests.feedback.feedback_pg import INSTALL_HINT, postgres_bindir, start_postgres


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server: RECSYS_TEST_POSTGRES_URL, else a throwaway one started for this session."""
    configured = os.environ.get("RECSYS_TEST_POSTGRES_URL", "").strip()
    if configured:
        yield configured
        return
    if os.environ.get("RECSYS_SKIP_POSTGRES") == "1":
        pytest.skip("RECSYS_SKIP_POSTGRES=1: the PostgreSQL backend is not tested")
    if postgres_bindir() is None:
        pytest.fail(f"PostgreSQL server binaries not found: {INSTALL_HINT}", pytrace=False)
    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()


def _fresh_schema(server_url: str) -> Iterator[str]:
    """A URL whose connections live in a new, empty schema (dropped afterwards), so tests never share rows."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin_dsn = sa.make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield (
            sa.make_url(server_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback' / 'feedback.db'}"
    else:
        yield from _fresh_schema(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[FeedbackStore]:
    with FeedbackStore(store_url) as opened:
        yield opened
