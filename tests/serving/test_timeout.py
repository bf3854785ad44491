"""The request timeout: 504 on time, nothing cut off once started, and no timer left per answered request."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
import threading
from typing import Any

import anyio
import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware as BentoTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.serving.timeout import RequestTimeout
from tests.helpers import PROJECT_ROOT

GENEROUS_S = 10.0  # bounds a wait that must not hang; never a timing assertion


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: ASGIApp, scope_type: str = "http") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": scope_type, "method": "GET", "path": "/", "headers": []}
    await asyncio.wait_for(app(scope, receive, send), GENEROUS_S)
    return sent


def _status(sent: list[Message]) -> int:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, f"expected one response start, got {sent}"
    return int(starts[0]["status"])


def _live_timers() -> int:
    """Timers scheduled on this thread's running loop (other threads' loops, Prefect's say, come and go)."""
    loop = asyncio.get_running_loop()
    return sum(
        isinstance(o, asyncio.TimerHandle) and not o.cancelled() and getattr(o, "_loop", None) is loop
        for o in gc.get_objects()
    )


def test_answered_requests_leave_no_timer_scheduled() -> None:
    async def many(app: ASGIApp) -> int:
        before = _live_timers()
        for _ in range(200):
            assert _status(await _call(app)) == 200
        return _live_timers() - before

    assert asyncio.run(many(RequestTimeout(_ok, timeout=30))) == 0


def test_bentoml_own_timeout_leaves_a_timer_per_request() -> None:
    # Why RequestTimeout replaces BentoML's: if this starts failing, BentoML has fixed its middleware
    # and recsys.serving.timeout.use_request_timeout can go.
    async def many() -> int:
        before = _live_timers()
        for _ in range(200):
            await _call(BentoTimeout(_ok, timeout=30))
        return _live_timers() - before

    assert asyncio.run(many()) >= 200


def _slow_handler(cancelled: list[bool]) -> ASGIApp:
    """A handler that never answers in time and records its cancellation in ``cancelled``."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.sleep(GENEROUS_S * 10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    return slow


def test_a_slow_handler_gets_504_and_is_cancelled() -> None:
    cancelled: list[bool] = []
    slow = _slow_handler(cancelled)

    async def run() -> list[Message]:
        sent = await _call(RequestTimeout(slow, timeout=0.05))
        await asyncio.sleep(0)  # the cancelled handler unwinds on the next turn
        return sent

    sent = asyncio.run(run())
    assert _status(sent) == 504
    assert "request timeout of 0.05 s" in json.loads(sent[-1]["body"])["error"]
    assert cancelled == [True]


def test_a_handler_stuck_in_a_thread_does_not_hold_back_the_504() -> None:
    release = threading.Event()

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.to_thread.run_sync(release.wait)
        await _ok(scope, receive, send)

    async def run() -> list[Message]:
        try:
            return await _call(RequestTimeout(stuck, timeout=0.05))  # would hang if it waited
        finally:
            release.set()

    assert _status(asyncio.run(run())) == 504


def test_a_started_response_is_never_cut_off() -> None:
    async def slow_body(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)  # well past the timeout
        await send({"type": "http.response.body", "body": b"late but whole"})

    sent = asyncio.run(_call(RequestTimeout(slow_body, timeout=0.01)))
    assert _status(sent) == 200
    assert sent[-1]["body"] == b"late but whole"


def test_a_cancelled_request_cancels_its_handler() -> None:
    # The server cancels the request's task when the client leaves or on shutdown.
    cancelled: list[bool] = []
    slow = _slow_handler(cancelled)

    async def run() -> list[bool]:
        request = asyncio.ensure_future(_call(RequestTimeout(slow, timeout=30)))
        await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.sleep(0)
        return list(cancelled)  # read before asyncio.run cancels whatever is left at its end

    assert asyncio.run(run()) == [True]


def test_a_handler_error_reaches_the_server_unchanged() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("handler bug")

    with pytest.raises(ValueError, match="handler bug"):
        asyncio.run(_call(RequestTimeout(broken, timeout=30)))


def test_an_error_raised_after_the_timeout_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_while_unwinding(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.sleep(GENEROUS_S * 10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def run() -> list[Message]:
        sent = await _call(RequestTimeout(fails_while_unwinding, timeout=0.05))
        for _ in range(3):
            await asyncio.sleep(0)
        return sent

    with caplog.at_level(logging.ERROR, logger="recsys.serving.timeout"):
        sent = asyncio.run(run())
    assert _status(sent) == 504
    assert any("after its timeout" in r.message and r.exc_info for r in caplog.records)


def test_non_http_scopes_pass_straight_through() -> None:
    seen = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    assert asyncio.run(_call(RequestTimeout(lifespan_app, timeout=30), scope_type="lifespan")) == []
    assert seen == ["lifespan"]


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_a_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        RequestTimeout(_ok, timeout=timeout)


BUILT_MIDDLEWARE = """
from _bentoml_impl.server.app import ServiceAppFactory
from recsys.serving.service import Recommender
Recommender.inject_config()
for m in ServiceAppFactory(Recommender).middlewares:
    print(m.cls.__module__, m.cls.__name__, m.kwargs.get("timeout"))
"""


def test_bentoml_builds_the_service_with_request_timeout() -> None:
    # In a child process: building the app loads BentoML's global configuration for the service.
    built = subprocess.run(
        [sys.executable, "-c", BUILT_MIDDLEWARE], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    ).stdout.splitlines()
    assert "recsys.serving.timeout RequestTimeout 30" in built
    assert not any(line.endswith("traffic TimeoutMiddleware 30") for line in built), built
