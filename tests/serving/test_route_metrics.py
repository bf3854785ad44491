"""Request metrics labelled by route: no raw path (user id) in a label, a bounded set of series."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import prometheus_client
from bentoml._internal.context import server_context
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from recsys.serving.app import create_app
from recsys.serving.route_metrics import BENTOML_PATHS, UNMATCHED, EndpointLabels, route_metrics
from tests.helpers import PROJECT_ROOT

LABELS = EndpointLabels(create_app().routes)


def test_paths_are_labelled_by_their_route() -> None:
    assert LABELS("/recommend") == "/recommend"
    assert LABELS("/users/listener-42/feedback") == "/users/{user_id}/feedback"
    assert LABELS("/static/app.js") == "/static"
    assert all(LABELS(path) == path for path in BENTOML_PATHS)


def test_paths_no_route_serves_share_one_label() -> None:
    unserved = ("/users/a/feedback/more", "/staticfiles", "/recommend/", "/wp-login.php", "/users/feedback")
    for path in unserved:
        assert LABELS(path) == UNMATCHED, path


@given(st.text(max_size=40).map(lambda tail: "/" + tail))
def test_any_path_gets_one_of_a_fixed_set_of_labels(path: str) -> None:
    assert LABELS(path) in LABELS.labels | {UNMATCHED}


class _Client:
    """BentoML's metrics client, on a registry of the test's own (the global one is BentoML's)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()

    def _make(self, kind: Any, **kwargs: Any) -> Any:
        kwargs.pop("multiprocess_mode", None)
        return kind(**kwargs, registry=self.registry)

    def Histogram(self, **kwargs: Any) -> Any:
        return self._make(prometheus_client.Histogram, **kwargs)

    def Counter(self, **kwargs: Any) -> Any:
        return self._make(prometheus_client.Counter, **kwargs)

    def Gauge(self, **kwargs: Any) -> Any:
        return self._make(prometheus_client.Gauge, **kwargs)

    def Summary(self, **kwargs: Any) -> Any:
        return self._make(prometheus_client.Summary, **kwargs)


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    status = 404 if scope["path"].startswith("/nothing") else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _request(app: Any, path: str) -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    scope = {"type": "http", "method": "DELETE", "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))


def test_requests_are_counted_timed_and_tracked_under_their_route() -> None:
    client = _Client()
    middleware = route_metrics(create_app().routes)(_answer, namespace="t", skip_paths=["/livez"])
    middleware._setup(metrics_client=client, duration_buckets=(0.1, 1.0))
    for user in ("alice", "bob", "carol"):
        _request(middleware, f"/users/{user}/feedback")
    _request(middleware, "/nothing/here")
    _request(middleware, "/nothing/else")

    def sample(name: str, **labels: str) -> float | None:
        service = {
            "service_name": str(server_context.bento_name),
            "service_version": str(server_context.bento_version),
            "runner_name": str(server_context.service_name),
        }
        value = client.registry.get_sample_value(f"t_{name}", service | labels)
        return None if value is None else float(value)

    route = {"endpoint": "/users/{user_id}/feedback", "http_response_code": "200"}
    assert sample("request_total", **route) == 3
    assert sample("request_duration_seconds_count", **route) == 3
    assert sample("request_total", endpoint=UNMATCHED, http_response_code="404") == 2
    assert sample("request_in_progress", endpoint="/users/{user_id}/feedback") == 0
    exposed = prometheus_client.generate_latest(client.registry).decode()
    assert "alice" not in exposed and "/nothing" not in exposed


BUILT_METRICS = """
from _bentoml_impl.server.app import ServiceAppFactory
from recsys.serving.service import Recommender
Recommender.inject_config()
for m in ServiceAppFactory(Recommender).middlewares:
    excluded = m.kwargs.get("excluded_urls")
    untraced = [p for p in ("/users/u1/feedback", "/feedback") if excluded and excluded.url_disabled(p)]
    print(m.cls.__module__, m.cls.__name__, *untraced)
"""


def test_bentoml_builds_the_service_with_route_metrics_and_untraced_erasures() -> None:
    # In a child process: building the app loads BentoML's global configuration for the service.
    built = subprocess.run(
        [sys.executable, "-c", BUILT_METRICS], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    ).stdout.splitlines()
    modules = [line.split()[0] for line in built]
    assert modules.count("recsys.serving.route_metrics") == 1, built
    assert "bentoml._internal.server.http.instruments" not in modules, built
    tracing = next(line.split()[2:] for line in built if line.startswith("opentelemetry"))
    assert tracing == ["/users/u1/feedback"], built  # erasures untraced, feedback still traced
