"""Changes announced through the feedback store reach the workers of another host (who share no folder)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recsys.feedback.announcements import NEVER, listening_connection
from recsys.feedback.store import FeedbackStore, FeedbackUnavailableError
from recsys.serving.signals import Listener, Signals


def _hosts(store: FeedbackStore, tmp_path: Path) -> tuple[Signals, Signals]:
    """Two hosts' workers: their own runtime folders, one shared store."""
    a, b = Signals(tmp_path / "host-a", scope="svc"), Signals(tmp_path / "host-b", scope="svc")
    a.share(lambda: store)
    b.share(lambda: store)
    return a, b


def test_a_change_on_one_host_reaches_the_other_at_its_next_refresh(
    store: FeedbackStore, tmp_path: Path
) -> None:
    a, b = _hosts(store, tmp_path)
    b.refresh()
    seen = b.version("experiment")
    a.announce("experiment", '{"mode": "ab"}')
    assert b.version("experiment") == seen  # no folder in common: the store is the only way
    assert b.refresh() and b.version("experiment") != seen and b.value("experiment") == '{"mode": "ab"}'
    seen = b.version("dislike")
    assert a.bump("dislike")
    b.refresh()
    assert b.version("dislike") != seen and b.value("dislike") is None
    # Versions count changes: a second announcement of the same value is still a change.
    a.announce("experiment", '{"mode": "ab"}')
    before = b.version("experiment")
    b.refresh()
    assert b.version("experiment") != before
    # Another service (scope) sharing the database sees none of it.
    other = Signals(tmp_path / "host-c", scope="other")
    other.share(lambda: store)
    other.refresh()
    assert other.value("experiment") is None and store.announcements()["svc/experiment"].version == 2


def test_a_replica_that_was_down_reads_what_it_missed_when_it_starts(
    store: FeedbackStore, tmp_path: Path
) -> None:
    a, _ = _hosts(store, tmp_path)
    a.announce("reload", "music_recommender:v2")
    late = Signals(tmp_path / "host-late", scope="svc")
    late.share(lambda: store)
    assert late.value("reload") is None and late.refresh() and late.value("reload") == "music_recommender:v2"


class _Down:
    def announce(self, name: str, value: str | None = None) -> int:
        raise FeedbackUnavailableError("database down")

    def announcements(self) -> dict[str, object]:
        raise FeedbackUnavailableError("database down")


def test_with_the_store_down_this_hosts_workers_still_see_changes_and_announcing_a_value_fails(
    tmp_path: Path,
) -> None:
    signals = Signals(tmp_path / "rt", scope="svc", clock=lambda: 0.0)
    signals.share(lambda: _Down())  # type: ignore[arg-type, return-value]
    before = signals.version("dislike")
    assert signals.bump("dislike") is False  # logged, not raised: the dislike itself is already stored
    assert signals.version("dislike") != before  # the local fast path still works
    with pytest.raises(FeedbackUnavailableError):
        signals.announce("experiment", "{}")
    assert signals.refresh() is False and signals.value("experiment") is None


@pytest.mark.slow
def test_postgres_notifies_the_other_host_without_waiting_for_its_poll(
    postgres_url: str, tmp_path: Path
) -> None:
    with FeedbackStore(postgres_url) as store:
        a, b = _hosts(store, tmp_path)
        listener = Listener(b, lambda: listening_connection(postgres_url))
        listener.start()
        try:
            time.sleep(0.5)  # LISTEN registered
            delays = []
            for change in range(20):
                started = time.perf_counter()
                a.announce("reload", f"music_recommender:v{change}")
                while b.value("reload") != f"music_recommender:v{change}":
                    assert time.perf_counter() - started < 2.0, "not notified within 2 s"
                    time.sleep(0.002)
                delays.append(time.perf_counter() - started)
        finally:
            listener.stop()
    assert b._shared.get("svc/reload", NEVER).version >= 20 and max(delays) < 2.0
