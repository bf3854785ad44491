"""BentoML's per-request Prometheus metrics, labelled by route instead of by raw path.

BentoML 1.4's traffic-metrics middleware labels every series with the request's raw path. For
``DELETE /users/{user_id}/feedback`` that puts each raw user id into ``/metrics`` (a report anyone
who can scrape the service reads), and every distinct path a client or a scanner makes up opens a new
series that each worker keeps in its multiprocess files until the service restarts: an
unbounded set of labels.
:class:`RouteMetrics` records the same series (same names, labels and buckets, so dashboards keep
working) with the route's template as the ``endpoint`` label (``/users/{user_id}/feedback``) and
:data:`UNMATCHED` for a path no route serves. It also looks each series' child up once instead of
four times per request. :func:`use_route_metrics` puts it in BentoML's place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from timeit import default_timer
from typing import Any

from bentoml._internal.context import server_context
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
"""The ``endpoint`` label of a request whose path no route serves (a 404)."""
BENTOML_PATHS = ("/livez", "/healthz", "/readyz", "/metrics", "/schema.json", "/docs.json")
"""The fixed paths BentoML serves itself, beside the mounted app."""


class EndpointLabels:
    """The metric label of a request path: its route's path template, from a fixed set.

    Parameters
    ----------
    routes : Iterable[BaseRoute]
        The app's routes: a plain route labels its own path, a route with parameters its template,
        a mount its prefix.
    fixed_paths : Iterable[str]
        Further exact paths served outside ``routes``.
    """

    def __init__(self, routes: Iterable[BaseRoute], fixed_paths: Iterable[str] = BENTOML_PATHS) -> None:
        self._exact = set(fixed_paths)
        self._templates: list[tuple[re.Pattern[str], str]] = []
        self._mounts: list[str] = []
        for route in routes:
            if isinstance(route, Route) and route.param_convertors:
                self._templates.append((route.path_regex, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)))
            elif isinstance(route, Route):
                self._exact.add(route.path)
            elif isinstance(route, Mount):
                self._mounts.append(route.path.rstrip("/"))

    @property
    def labels(self) -> frozenset[str]:
        """Every label :meth:`__call__` can return."""
        return frozenset(self._exact | {template for _, template in self._templates} | set(self._mounts))

    def __call__(self, path: str) -> str:
        """The label of ``path`` (:data:`UNMATCHED` when no route serves it)."""
        if path in self._exact:
            return path
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        for prefix in self._mounts:
            if path.startswith(prefix + "/"):
                return prefix
        return UNMATCHED


class RouteMetrics(RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics with :class:`EndpointLabels` as the ``endpoint`` label.

    HTTP requests only; anything else (websockets, lifespan) goes through BentoML's own handling.
    Call :func:`route_metrics` for a class bound to an app's routes: BentoML builds the middleware
    itself, with ``(app, namespace=..., skip_paths=...)``.
    """

    endpoint_labels: EndpointLabels = EndpointLabels(())

    def __init__(
        self, app: ASGIApp, namespace: str = "bentoml_service", skip_paths: Sequence[str] = ()
    ) -> None:
        super().__init__(app, namespace=namespace, skip_paths=skip_paths)
        self._skip = tuple(skip_paths)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, **labels: Any) -> Any:
        # labels() validates and locks on every call; the set of label values here is bounded.
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**_service_labels(), **labels)
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count, time and track the request under its route's label."""
        if not self._is_setup:
            self._setup()
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        path = scope["path"]
        if path == "/metrics":
            await self.app(scope, receive, send)
            return
        endpoint = self.endpoint_labels(path)
        if not path.startswith(self._skip):
            self._child(self.metrics_last_request_timestamp).set_to_current_time()
        start = default_timer()
        status = 0

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                labels = {"endpoint": endpoint, "http_response_code": status}
                self._child(self.metrics_request_total, **labels).inc()
                self._child(self.metrics_request_duration, **labels).observe(max(default_timer() - start, 0))
            await send(message)

        with self._child(self.metrics_request_in_progress, endpoint=endpoint).track_inprogress():
            await self.app(scope, receive, counted_send)


def _service_labels() -> dict[str, str | None]:
    return {
        "service_name": server_context.bento_name,
        "service_version": server_context.bento_version,
        "runner_name": server_context.service_name,
    }


def route_metrics(routes: Iterable[BaseRoute]) -> type[RouteMetrics]:
    """A :class:`RouteMetrics` class that labels requests by ``routes`` (plus BentoML's own paths)."""
    return type("RouteMetrics", (RouteMetrics,), {"endpoint_labels": EndpointLabels(routes)})


def use_route_metrics(routes: Iterable[BaseRoute]) -> None:
    """Make BentoML build its services with :func:`route_metrics` in place of its own metrics middleware.

    Call before BentoML builds the app (importing the service module does). BentoML looks the class up
    in its ``instruments`` module when it builds the middleware stack.
    """
    from bentoml._internal.server.http import instruments

    instruments.RunnerTrafficMetricsMiddleware = route_metrics(routes)  # type: ignore[misc]
