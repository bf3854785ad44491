"""Fixtures for the data tests. Names start with ``sources_`` (other test modules add their own)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from recsys.config import DATA_DIR_ENV


@dataclass
class SourcesServerState:
    """What the loopback server does per URL path, and what it saw."""

    fail_first: dict[str, int] = field(default_factory=dict)  # path -> number of 503 answers first
    stall_first: dict[str, float] = field(default_factory=dict)  # path -> seconds to stall the 1st request
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _StatefulServer(ThreadingHTTPServer):
    daemon_threads = True
    state: SourcesServerState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a download timeout test) leaves a handler writing to a closed socket,
        # possibly after its test ended: socketserver would print the traceback to stderr, in the middle
        # of whatever test is capturing output then. Only a disconnect is silenced.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(SimpleHTTPRequestHandler):
    server: _StatefulServer

    def do_GET(self) -> None:
        state, path = self.server.state, urlsplit(self.path).path
        with state.lock:
            state.hits[path] += 1
            hit = state.hits[path]
        if hit <= state.fail_first.get(path, 0):
            self.send_error(503, "try again later")
            return
        if hit == 1 and path in state.stall_first:
            time.sleep(state.stall_first[path])
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@dataclass
class SourcesServer:
    """A loopback HTTP server serving ``root``, laid out like the canonical URL paths."""

    root: Path
    base_url: str
    state: SourcesServerState

    def put(self, url_path: str, content: bytes) -> Path:
        """Serve ``content`` at ``url_path`` (e.g. ``/datasets/x.zip``)."""
        target = self.root / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target


@pytest.fixture
def sources_server(tmp_path: Path) -> Iterator[SourcesServer]:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> in a thread, serving ``tmp_path/served``."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = _StatefulServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    httpd.state = SourcesServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield SourcesServer(root, f"http://{host!s}:{port}", httpd.state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def sources_refused_url() -> str:
    """A loopback URL on a port nobody listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def sources_real_dir() -> Path:
    """The real data folder named by RECSYS_DATA_DIR; skips when the variable is unset."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    if not value:
        pytest.skip(f"{DATA_DIR_ENV} is unset: the real data sets are needed for this test")
    return Path(value)
