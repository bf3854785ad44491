"""Every call to a PostgreSQL feedback store ends, whatever the database does: a server that accepts
connections and never answers, and a server paused (SIGSTOP) while the store holds open connections.

Before the bounds, a frozen connection hung a query for about fifteen minutes (the kernel's TCP
retransmissions) while the worker held its dislike lock. The calls here run in threads joined with a
generous limit, so a hang fails the test instead of the suite; no test measures how fast the bound is.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.feedback.events import FeedbackEvent
from recsys.feedback.store import FeedbackStore, FeedbackUnavailableError
from recsys.serving.feedback_follower import FeedbackFollower
from recsys.serving.settings import ServingSettings
from recsys.serving.signals import DISLIKE_SIGNAL, Signals
from tests.feedback.feedback_pg import ThrowawayPostgres, postgres_bindir, start_postgres

pytestmark = pytest.mark.slow
HANG_LIMIT_S = 60.0  # far above every bound (2-5 s), far below the old hang (~15 minutes)


def _outcome(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a thread; its result or exception, or fail the test when it does not return."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as err:
            result.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT_S)
    if thread.is_alive():
        pytest.fail(f"the call did not return within {HANG_LIMIT_S:g} s")
    return result[0]


def _event(n: int) -> FeedbackEvent:
    return FeedbackEvent(user_id="u1", item_id=f"a{n}", event="dislike", event_id=f"e{n}-{time.time_ns()}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    if postgres_bindir() is None:
        pytest.fail("PostgreSQL server binaries not found: run scripts/postgres.sh install", pytrace=False)
    server = start_postgres()
    yield server
    server.stop()


def test_a_server_that_accepts_and_never_answers_is_unavailable_not_a_hang() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts; nobody ever reads or writes
    port = silent.getsockname()[1]
    try:
        store = FeedbackStore(
            f"postgresql+psycopg://u:p@127.0.0.1:{port}/feedback",
            create=False,
            timeout_s=2.0,
            query_timeout_s=2.0,
        )
        assert _outcome(store.ping) is False
        assert isinstance(_outcome(lambda: store.add_events([_event(1)])), FeedbackUnavailableError)
        store.close()
    finally:
        silent.close()


def test_a_paused_server_makes_calls_fail_and_the_store_recovers_when_it_resumes(
    postgres: ThrowawayPostgres,
) -> None:
    store = FeedbackStore(postgres.url, timeout_s=2.0, query_timeout_s=2.0)
    assert store.add_events([_event(1)]).inserted == 1  # a pooled connection is open

    with postgres.paused():
        failed = _outcome(lambda: store.add_events([_event(2)]))
        down = _outcome(store.ping)

    assert isinstance(failed, FeedbackUnavailableError)
    assert down is False
    assert store.add_events([_event(3)]).inserted == 1  # the closed connection was replaced
    store.close()


def test_a_worker_answers_with_its_dislikes_while_the_database_is_paused(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    settings = ServingSettings(
        home=tmp_path, feedback_url=postgres.url, admin_token=None, runtime_dir=tmp_path / "rt"
    )
    worker = FeedbackFollower(settings, Signals(settings.runtime_dir))
    worker.add([_event(10)])
    assert "a10" in worker.dislikes("u1")
    worker.signals.bump(DISLIKE_SIGNAL)  # another worker announced a dislike: answers sync first

    with postgres.paused():
        syncing = threading.Thread(target=worker.sync, daemon=True)
        syncing.start()  # the poll's sync, stuck until the query bound ends it
        time.sleep(0.5)
        answered = _outcome(lambda: (worker.sync_signalled(), worker.dislikes("u1"))[1])
        still_syncing = syncing.is_alive()
        syncing.join(HANG_LIMIT_S)

    # The request did not wait for the stuck sync: it answered with the index as it was.
    assert "a10" in answered and still_syncing
    assert not syncing.is_alive()
    worker.sync()
    assert "a10" in worker.dislikes("u1")
    worker.close()
