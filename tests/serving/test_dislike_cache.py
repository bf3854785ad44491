"""The worker's dislike cache: fresh within the TTL, and entries loaded together do not expire together."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsys.feedback import FeedbackEvent, FeedbackStore
from recsys.serving.runtime import Feedback, ServingSettings, Signals

TTL_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Feedback, Clock]:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with FeedbackStore(url) as store:
        store.add_events(
            [
                FeedbackEvent(
                    user_id=f"u{n}",
                    item_id="a1",
                    event="dislike",
                    timestamp=datetime.now(UTC),
                    event_id=f"e{n}",
                )
                for n in range(200)
            ]
        )
    settings = ServingSettings(
        home=tmp_path, feedback_url=url, admin_token=None, runtime_dir=tmp_path / "rt", dislike_ttl_s=TTL_S
    )
    clock = Clock()
    return Feedback(settings, Signals(tmp_path / "rt"), clock=clock, rng=random.Random(0)), clock


def _stale(feedback: Feedback, users: list[str]) -> int:
    return sum(feedback.cached_dislikes(user) is None for user in users)


def test_entries_loaded_together_expire_spread_over_the_second_half_of_the_ttl(
    cache: tuple[Feedback, Clock],
) -> None:
    feedback, clock = cache
    users = [f"u{n}" for n in range(200)]
    assert _stale(feedback, users) == 200  # nothing cached yet
    assert all(feedback.load_dislikes(user) == frozenset({"a1"}) for user in users)
    assert _stale(feedback, users) == 0
    clock.now += 0.5 * TTL_S - 0.01
    assert _stale(feedback, users) == 0  # every entry lives at least half the TTL
    clock.now += 0.25 * TTL_S
    assert 50 < _stale(feedback, users) < 150  # about half have expired by three quarters
    clock.now += 0.25 * TTL_S
    assert _stale(feedback, users) == 200  # and all by the full TTL
    feedback.close()
