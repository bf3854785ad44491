"""The open-loop pacer: percentiles, per-run figures, and a real run against a loopback server."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from benchmarks import pacer
from benchmarks.pacer import percentile_ms, summarize


def test_percentile_ms_converts_seconds_and_is_nan_when_empty() -> None:
    assert percentile_ms([0.001, 0.002, 0.003], 50) == 2.0
    assert percentile_ms(np.array([0.010] * 99 + [1.0]), 100) == 1000.0
    assert np.isnan(percentile_ms([], 99))


def test_summarize_splits_halves_and_windows_by_due_time_and_counts_unanswered() -> None:
    rate = 2.0  # 5 s windows of 10 requests each
    latency = np.array([0.001] * 10 + [0.100] * 9 + [np.nan])
    lag = np.zeros(20)
    figures = summarize(latency, lag, Counter({"200": 18, "503": 1}), rate, elapsed=10.0)
    assert figures["requests"] == 20
    assert figures["errors"] == 2  # one 503, one never answered
    assert figures["outcomes"]["unanswered"] == 1
    assert figures["achieved_rps"] == 1.9
    assert figures["p50_first_half_ms"] == pytest.approx(1.0)
    assert figures["p50_second_half_ms"] == pytest.approx(100.0)
    assert figures["p99_by_window_ms"] == [pytest.approx(1.0), pytest.approx(100.0)]


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs, 40 ms a request

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"items": []}' if self.path == "/recommend" else b"no"
        self.send_response(200 if self.path == "/recommend" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _AnswerOnce(_Answer):
    protocol_version = "HTTP/1.0"  # closes the connection after each answer


@pytest.mark.parametrize("handler", [_Answer, _AnswerOnce], ids=["keep-alive", "closing"])
def test_the_pacer_answers_every_request_and_reconnects_when_closed(
    handler: type[BaseHTTPRequestHandler],
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        figures = asyncio.run(pacer._pace(url, [b'{"user_id": "1"}'], rate=200.0, seconds=0.5, connections=2))
    finally:
        server.shutdown()
        server.server_close()
    assert figures["requests"] == 100
    assert figures["outcomes"] == {"200": 100}
    assert figures["errors"] == 0


class _Transport:
    def __init__(self) -> None:
        self.closed, self.sent = False, []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", False),
    ],
)
def test_a_connection_the_server_will_close_never_carries_the_next_request(
    head: bytes, reusable: bool
) -> None:
    """No race with the server's close: a closing answer retires the connection (deterministic, no timing)."""
    connects: list[int] = []
    pace = pacer._Pacer([b"req"], rate=1000.0, total=2, connect=lambda: connects.append(1))
    client = pacer._Client(pace)
    transport = _Transport()
    client.connection_made(transport)  # type: ignore[arg-type]
    pace.release(2)  # both due: the first goes out at once, the second waits for an idle connection
    assert transport.sent == [b"req"]
    client.data_received(head + b"{}")
    assert pace.outcomes == Counter({"200": 1})
    assert transport.closed is not reusable
    assert len(transport.sent) == (2 if reusable else 1)  # the second request only on a kept connection
    if not reusable:
        client.connection_lost(None)  # the close completes: no request lost, a new connection asked for
        assert pace.outcomes == Counter({"200": 1}) and connects == [1]
