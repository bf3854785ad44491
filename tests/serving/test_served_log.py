"""The served-recommendation log: the in-memory batch writer, and the real service filling the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.feedback.store import FeedbackStore, FeedbackUnavailableError
from recsys.feedback.tables import Served, ServedRecommendation
from recsys.serving.served_log import QUEUE_FULL, STORE_UNAVAILABLE, ServedLog
from recsys.serving.settings import (
    SERVED_LOG_MAX_PER_S_ENV,
    SERVED_LOG_SAMPLE_ENV,
    served_log_max_per_s_from_env,
    served_log_sample_from_env,
)
from tests.helpers import ADMIN_TOKEN, Server, free_port, start_server, stop_server, wait_for

ANSWER = {"items": [{"item_id": "a03"}, {"item_id": "a01"}], "cold_start": False, "model_version": "m:1"}


class FakeStore:
    """Collects written batches; raises :class:`FeedbackUnavailableError` while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[ServedRecommendation]] = []
        self.down = False

    def write(self, records: Sequence[ServedRecommendation]) -> int:
        if self.down:
            raise FeedbackUnavailableError("feedback store sqlite:///x unavailable: disk I/O error")
        self.batches.append(list(records))
        return len(records)

    @property
    def records(self) -> list[ServedRecommendation]:
        return [record for batch in self.batches for record in batch]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def served_log(store: FakeStore, clock: Callable[[], float] = time.monotonic, **options: Any) -> ServedLog:
    settings: dict[str, Any] = {"sample": 1.0, "capacity": 100, "flush_s": 0.05, "retry_s": 5.0} | options
    return ServedLog(store.write, clock=clock, **settings)


def test_records_carry_the_answer_and_cold_lists_are_logged_unmitigated() -> None:
    store = FakeStore()
    log = served_log(store)

    log.record("recommend", "u1", ANSWER, bias_strength=0.3)
    log.record("recommend", "stranger", {**ANSWER, "cold_start": True}, bias_strength=0.3)
    log.record("new-listener", None, ANSWER, bias_strength=0.3)

    assert log.flush() == 3 and log.queued == 0 and log.written == 3
    first, cold, anonymous = store.records
    assert first.items == ("a03", "a01") and first.model_version == "m:1" and first.bias_strength == 0.3
    assert first.served_at.tzinfo is not None and first.endpoint == "recommend" and not first.cold_start
    assert cold.cold_start and cold.bias_strength == 0.0
    assert anonymous.user_id is None and anonymous.endpoint == "new-listener"


def test_sampling_keeps_the_given_share_and_zero_turns_logging_off() -> None:
    draws = iter([0.1, 0.7, 0.29, 0.31])
    store = FakeStore()
    sampled = served_log(store, sample=0.3, rng=lambda: next(draws))
    for _ in range(4):
        sampled.record("recommend", "u1", ANSWER, 0.0)
    assert sampled.queued == 2

    off = served_log(FakeStore(), sample=0.0, rng=lambda: pytest.fail("sampling 0 draws nothing"))
    off.record("recommend", "u1", ANSWER, 0.0)
    assert not off.enabled and off.queued == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        served_log(store, sample=1.5)


def test_the_rate_cap_bounds_what_is_logged_per_second_without_counting_drops() -> None:
    store, clock = FakeStore(), Clock()
    log = served_log(store, clock=clock, max_per_s=10.0)
    for _ in range(25):  # a burst: one second's worth gets through
        log.record("recommend", "u1", ANSWER, 0.0)
    assert log.queued == 10 and log.rate_limited == 15 and log.dropped == {QUEUE_FULL: 0}
    clock.now += 0.5  # half a second refills five
    for _ in range(8):
        log.record("recommend", "u1", ANSWER, 0.0)
    assert log.queued == 15 and log.rate_limited == 18
    clock.now += 100.0  # an idle spell never banks more than one second's worth
    for _ in range(12):
        log.record("recommend", "u1", ANSWER, 0.0)
    assert log.queued == 25
    with pytest.raises(ValueError, match="positive"):
        served_log(store, max_per_s=0.0)


def test_a_full_queue_drops_and_counts_without_raising() -> None:
    store, reported = FakeStore(), list[tuple[str, int]]()
    log = served_log(store, capacity=3)
    log.start(on_drop=lambda reason, n: reported.append((reason, n)))
    try:
        for _ in range(5):
            log.record("recommend", "u1", ANSWER, 0.0)
        assert log.dropped[QUEUE_FULL] == 2
    finally:
        log.stop()
    assert len(store.records) == 3 and (QUEUE_FULL, 2) in reported


def test_store_outage_drops_the_batch_pauses_then_recovers() -> None:
    store, clock, reported = FakeStore(), Clock(), list[tuple[str, int]]()
    log = served_log(
        store, clock=clock, capacity=4, retry_s=5.0, on_drop=lambda reason, n: reported.append((reason, n))
    )
    store.down = True
    for _ in range(3):
        log.record("recommend", "u1", ANSWER, 0.0)

    assert log.flush() == 0 and log.dropped[STORE_UNAVAILABLE] == 3
    assert reported == [(STORE_UNAVAILABLE, 3)]

    store.down = False
    for _ in range(6):  # paused: nothing is written, the queue fills and then drops
        log.record("recommend", "u1", ANSWER, 0.0)
    assert log.flush() == 0 and log.queued == 4 and log.dropped[QUEUE_FULL] == 2

    clock.now += 5.0
    assert log.flush() == 4 and len(store.records) == 4
    assert (QUEUE_FULL, 2) in reported


def test_the_writer_thread_writes_in_the_background_and_stop_flushes() -> None:
    store, written = FakeStore(), list[int]()
    log = served_log(store, flush_s=0.05)
    log.start(on_write=written.append)
    try:
        log.record("recommend", "u1", ANSWER, 0.0)
        assert wait_for(lambda: len(store.records) == 1, timeout_s=5.0)
        log.flush_s = 3600.0  # the thread is sleeping now: only stop() can write the next one
        time.sleep(0.1)
        log.record("recommend", "u2", ANSWER, 0.0)
    finally:
        log.stop()
    assert [r.user_id for r in store.records] == ["u1", "u2"] and sum(written) == 2


@pytest.mark.parametrize("raw", ["-0.1", "1.01", "often", "nan"])
def test_sample_rate_from_env_refuses_bad_values(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(SERVED_LOG_SAMPLE_ENV, raw)
    with pytest.raises(ValueError, match=SERVED_LOG_SAMPLE_ENV):
        served_log_sample_from_env()


def test_sample_rate_from_env_defaults_to_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVED_LOG_SAMPLE_ENV, raising=False)
    assert served_log_sample_from_env() == 1.0
    monkeypatch.setenv(SERVED_LOG_SAMPLE_ENV, " 0.25 ")
    assert served_log_sample_from_env() == 0.25


@pytest.mark.parametrize("raw", ["0", "-5", "fast", "nan"])
def test_rate_cap_from_env_refuses_bad_values_and_defaults_to_fifty(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv(SERVED_LOG_MAX_PER_S_ENV, raw)
    with pytest.raises(ValueError, match=SERVED_LOG_MAX_PER_S_ENV):
        served_log_max_per_s_from_env()
    monkeypatch.setenv(SERVED_LOG_MAX_PER_S_ENV, "")
    assert served_log_max_per_s_from_env() == 50.0


# --- the real service -------------------------------------------------------------------------------


def _served(server: Server) -> pd.DataFrame:
    """Every served list in the server's SQLite store."""
    with FeedbackStore(f"sqlite:///{server.log.parent / 'feedback.db'}", create=False) as store:
        return store.served_frame()


@pytest.mark.slow
def test_answered_recommendations_are_logged_in_the_store(
    server: Server, champion_home: tuple[Path, str]
) -> None:
    answers = {
        user: server.client.post("/recommend", json={"user_id": user, "k": 4}).json()
        for user in ("u00", "u01", "served-log-stranger")
    }
    fresh = server.client.post("/recommend/new-listener", json={"favourites": ["Radiohead"], "k": 3}).json()
    assert server.client.post("/recommend", json={"user_id": "u00", "k": 0}).status_code == 422

    assert wait_for(lambda: len(_served(server)) >= 4), server.output()

    rows = _served(server)
    mine = rows[rows[Served.USER].isin(answers) | rows[Served.USER].isna()]
    assert set(mine[Served.MODEL_VERSION]) == {champion_home[1]}
    for user, answer in answers.items():
        logged = mine[mine[Served.USER] == user]
        assert len(logged) == 1, user
        assert logged[Served.ITEMS].iloc[0] == [item["item_id"] for item in answer["items"]]
        assert logged[Served.ENDPOINT].iloc[0] == "recommend"
        assert bool(logged[Served.COLD_START].iloc[0]) == answer["cold_start"]
    anonymous = mine[mine[Served.USER].isna()]
    assert [item["item_id"] for item in fresh["items"]] in anonymous[Served.ITEMS].tolist()
    assert set(anonymous[Served.ENDPOINT]) == {"new-listener"}


@pytest.mark.slow
def test_erasing_a_listener_also_erases_their_served_lists(server: Server) -> None:
    user = "served-log-leaver-0042"
    assert server.client.post("/recommend", json={"user_id": user, "k": 2}).status_code == 200
    assert wait_for(lambda: user in set(_served(server)[Served.USER])), server.output()

    erased = server.client.delete(
        f"/users/{user}/feedback", params={"reason": "erasure"}, headers={"X-Admin-Token": ADMIN_TOKEN}
    )

    assert erased.status_code == 200
    assert user not in set(_served(server)[Served.USER])


@pytest.mark.slow
def test_a_down_store_drops_and_counts_while_recommendations_are_served(
    champion_home: tuple[Path, str], tmp_path: Path
) -> None:
    closed = f"postgresql+psycopg://nobody:secret@127.0.0.1:{free_port()}/feedback"
    server = start_server(champion_home[0], tmp_path, {"RECSYS_FEEDBACK_URL": closed})
    try:
        for user in ("u00", "u01", "stranger", "u02"):
            answer = server.client.post("/recommend", json={"user_id": user, "k": 3})
            assert answer.status_code == 200 and len(answer.json()["items"]) == 3

        def counted() -> bool:
            metrics = server.client.get("/metrics").text
            return f'recsys_served_log_dropped_total{{reason="{STORE_UNAVAILABLE}"}}' in metrics

        assert wait_for(counted, timeout_s=15.0), server.client.get("/metrics").text[-3000:]
        assert "secret" not in server.output()
    finally:
        stop_server(server)
