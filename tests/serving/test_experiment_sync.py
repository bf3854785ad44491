"""A worker follows the experiment another worker announced, and no request sees the old one after it.

The challenger is stood in for by a marker object (loading a real model is covered over HTTP in
``test_experiments.py``); what is tested here is the ordering between the poll that loads it and requests.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from recsys.experiments.design import Experiment
from recsys.feedback.store import FeedbackStore
from recsys.serving import experiment
from recsys.serving.experiment import ExperimentHolder, Running
from recsys.serving.loading import ModelSource
from recsys.serving.signals import Signals


class SlowBuild:
    """Stands in for loading a challenger: each load waits until the test lets it finish."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.loads = 0

    def __call__(self, design: Experiment) -> Running:
        self.loads += 1
        if design.active:
            self.started.set()
            assert self.release.wait(10)
        return Running(design, object() if design.active else None)  # type: ignore[arg-type]


@pytest.fixture
def workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ExperimentHolder, ExperimentHolder, Any]:
    build = SlowBuild()
    monkeypatch.setattr(ExperimentHolder, "_build", lambda self, design: build(design))
    signals = Signals(tmp_path / "runtime")
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    signals.share(lambda: store)  # the design is announced in the feedback store
    source = ModelSource(tmp_path)
    return ExperimentHolder(source, signals), ExperimentHolder(source, signals), build


def test_a_request_during_the_other_workers_load_waits_for_the_new_design(
    workers: tuple[ExperimentHolder, ExperimentHolder, SlowBuild],
) -> None:
    announcer, follower, build = workers
    follower.sync()  # service start: nothing announced yet
    assert follower.running.design.mode == "off" and not follower.needs_sync()
    build.release.set()
    announcer.start(Experiment(mode="shadow", challenger="music_recommender:abc"))
    build.release.clear()
    build.started.clear()
    poll = threading.Thread(target=follower.sync)  # the once-a-second poll notices first
    poll.start()
    assert build.started.wait(10)
    # The poll is still loading the challenger: a request must not take the old design as current.
    assert follower.needs_sync()
    request = threading.Thread(target=follower.sync)  # what the request does when it needs a sync
    request.start()
    request.join(0.2)
    assert request.is_alive()  # waits for the poll's load instead of loading a second copy
    build.release.set()
    poll.join(10)
    request.join(10)
    assert follower.running.design.mode == "shadow" and follower.running.challenger is not None
    assert not follower.needs_sync() and build.loads == 2  # one load per worker


def test_a_failed_load_keeps_the_old_design_and_is_not_retried_until_the_next_announcement(
    workers: tuple[ExperimentHolder, ExperimentHolder, SlowBuild], monkeypatch: pytest.MonkeyPatch
) -> None:
    announcer, follower, build = workers
    build.release.set()
    follower.sync()
    board = announcer.signals._board
    assert board is not None
    board().announce(announcer.signals.key(experiment.EXPERIMENT_SIGNAL), "{not json")
    follower.sync()
    assert follower.running.design.mode == "off" and follower.error and "json" in follower.error.lower()
    assert not follower.needs_sync()
    announcer.start(Experiment(mode="ab", challenger="music_recommender:abc", share=0.5))
    assert follower.needs_sync()
    follower.sync()
    assert follower.running.design.mode == "ab" and follower.error is None
