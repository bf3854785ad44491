"""The closed-loop simulation's pieces: held-out future listens, reactions, hit rates, a session's client."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from recsys.columns import Col
from recsys.retraining import closed_loop as simulation


def _interactions(n_users: int = 6, per_user: int = 10) -> pd.DataFrame:
    users = np.repeat([f"u{i}" for i in range(n_users)], per_user)
    items = [f"a{j}" for _ in range(n_users) for j in range(per_user)]
    return pd.DataFrame({Col.USER: users, Col.ITEM: items, Col.WEIGHT: 1.0})


def test_future_listens_partition_the_drawn_users_listens() -> None:
    frame = pd.concat([_interactions(), _interactions(2, 3).assign(**{Col.USER: ["s0"] * 3 + ["s1"] * 3})])
    frame = frame.reset_index(drop=True)
    present, future = simulation.hold_out_future(frame, n_listeners=4, fraction=0.3, min_listens=5, seed=1)
    assert len(present) + len(future) == len(frame)
    assert not set(present.index) & set(future.index)
    drawn = set(future[Col.USER])
    assert len(drawn) == 4 and not drawn & {"s0", "s1"}  # too few listens to be drawn
    assert (future.groupby(Col.USER).size() == 3).all()  # 30 % of 10
    assert set(present[Col.USER]) == set(frame[Col.USER])  # every listener keeps a profile


def test_the_draw_is_seeded() -> None:
    frame = _interactions()
    first = simulation.hold_out_future(frame, 3, 0.5, 2, seed=7)[1]
    again = simulation.hold_out_future(frame, 3, 0.5, 2, seed=7)[1]
    other = simulation.hold_out_future(frame, 3, 0.5, 2, seed=8)[1]
    pd.testing.assert_frame_equal(first, again)
    assert not first.index.equals(other.index)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_a_fraction_outside_zero_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        simulation.hold_out_future(_interactions(), 2, fraction, 2, seed=0)


def test_reactions_hit_rates_and_repeats() -> None:
    assert simulation.react(["a", "b"], {"b"}) == [("a", "skip"), ("b", "like")]
    lists = {"u1": ["a", "b", "c", "d"], "u2": ["e", "f", "g", "h"]}
    targets = {"u1": {"b", "c"}, "u2": {"x"}}
    assert simulation.hit_rate(lists, targets) == 0.5
    assert simulation.precision(lists, targets, k=4) == pytest.approx((2 / 4 + 0) / 2)
    assert simulation.repeated_share(lists, {"u1": {"a"}, "u2": {"e", "f"}}) == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        simulation.hit_rate({}, targets)


class _Service:
    """An httpx transport answering /recommend from fixed lists and acknowledging /feedback."""

    def __init__(self, lists: dict[str, list[str]], acknowledge: bool = True) -> None:
        self.lists, self.acknowledge = lists, acknowledge
        self.feedback: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/recommend":
            items = self.lists[body["user_id"]][: body["k"]]
            payload = {"items": [{"item_id": item} for item in items], "model_version": "m:1"}
            return httpx.Response(200, json=payload)
        self.feedback += body["events"]
        inserted = len(body["events"]) if self.acknowledge else 0
        return httpx.Response(200, json={"inserted": inserted, "duplicates": 0})


def test_a_session_reacts_hides_and_counts_acknowledged_events() -> None:
    service = _Service({"u1": ["a", "b", "c", "d"], "u2": ["c", "e", "f", "g"]})
    with httpx.Client(transport=httpx.MockTransport(service), base_url="http://sim") as client:
        session = simulation.run_session(client, {"u1": {"b"}, "u2": {"x"}}, 2, feedback=True, session_id="s")
        assert session.lists == {"u1": ["a", "b"], "u2": ["c", "e"]}
        assert session.acknowledged == 4 == len(service.feedback)
        assert simulation.liked(session) == {"u1": {"b"}}
        assert simulation.unrevealed({"u1": {"b", "z"}}, session) == {"u1": {"z"}}
        assert {event["event_id"] for event in service.feedback} >= {"s:u1:a", "s:u2:e"}
        again = simulation.run_session(
            client,
            {"u1": set(), "u2": set()},
            2,
            feedback=False,
            session_id="t",
            hide=simulation.shown(session),
        )
        assert again.lists == {"u1": ["c", "d"], "u2": ["f", "g"]}


def test_a_session_fails_loudly_when_feedback_is_not_acknowledged() -> None:
    service = _Service({"u1": ["a"]}, acknowledge=False)
    client = httpx.Client(transport=httpx.MockTransport(service), base_url="http://sim")
    with client, pytest.raises(RuntimeError, match="/feedback for u1"):
        simulation.run_session(client, {"u1": {"a"}}, 1, feedback=True, session_id="s")
