"""The BentoML service: ``bentoml serve recsys.serving.service:Recommender`` (or ``bentoml serve .``).

The endpoints live in the lean Starlette app of :mod:`recsys.serving.app`, mounted at ``/``; BentoML
runs the worker processes and gives liveness (``/livez``), readiness (``/readyz``: ready once a model
is loaded) and Prometheus metrics (``/metrics``). Settings come from the environment when a worker
starts (see :class:`recsys.serving.settings.ServingSettings`); ``workers`` and ``traffic`` can be
overridden with BentoML's configuration (``BENTOML_CONFIG_OPTIONS='services.Recommender.workers=4'``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import bentoml

from recsys.serving.app import create_app
from recsys.serving.route_metrics import use_route_metrics
from recsys.serving.runtime import Runtime
from recsys.serving.settings import ServingSettings
from recsys.serving.timeout import use_request_timeout

_LOG = logging.getLogger(__name__)

app = create_app()
# Before BentoML builds the worker's app: its own timeout middleware keeps a timer alive per answered
# request, and the garbage collector's pauses over them were the soak's p99 (see recsys.serving.timeout).
use_request_timeout()
# BentoML's metrics would label each series with the raw path: raw user ids in /metrics and a new
# series for every made-up path (see recsys.serving.route_metrics).
use_route_metrics(app.routes)


@bentoml.service(
    name="Recommender",
    # One worker per core: the handlers are CPU-bound and never block on I/O in the event loop.
    workers=2,
    # The request timeout, in seconds: a request whose answer has not started by then gets a 504, so a
    # stuck handler cannot hold a client forever (recsys.serving.timeout.RequestTimeout). Override with
    # BENTOML_CONFIG_OPTIONS='services.Recommender.traffic.timeout=10'.
    traffic={"timeout": 30},
    # Per-request access logs cost more than the model's work, and would carry the paths of
    # DELETE /users/{user_id}/feedback (raw user ids); Prometheus metrics still count requests.
    logging={"access": {"enabled": False}},
    # No CORS headers at all: browsers then let only the page's own origin read answers, and the app
    # refuses (403) requests whose Origin is foreign (see recsys.serving.app.check_origin).
    http={"cors": {"enabled": False}},
    # Tracing middleware costs a third of the throughput even when nothing is sampled (the default);
    # the read-only hot paths skip it, feedback and reload calls stay traced. Erasures are not traced:
    # their path holds the raw user id (they are audited under a pseudonym instead).
    tracing={"excluded_urls": ["/recommend", "/similar", "/search", "/static", "/model", "/users/"]},
)
@bentoml.asgi_app(app, path="/")
class Recommender:
    """Loads the registry's champion at startup and hands it to the mounted app."""

    def __init__(self) -> None:
        _single_threaded_blas()
        # BentoML leaves non-BentoML loggers at WARNING; model swaps and erasures (logged under a
        # pseudonym, never a raw user id) belong in the service log.
        logging.getLogger("recsys").setLevel(logging.INFO)
        self.runtime = Runtime(ServingSettings.from_env(), counter=_request_counter())
        app.state.runtime = self.runtime
        self.runtime.feedback.sync()  # the revocations first: a revoked champion is never loaded
        _, error = self.runtime.models.reload()
        if error is not None:
            _LOG.error("no model served until a champion loads: %s", error)
        self.runtime.experiments.sync()  # an experiment the workers ran before a restart (unless revoked)
        self.runtime.honour_erasures()

    async def __is_ready__(self) -> bool:
        """Ready only once a model is loaded."""
        return self.runtime.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        """Close the feedback store's connections."""
        self.runtime.feedback.close()


def _single_threaded_blas() -> None:
    # A top-k is one small matrix-vector product: BLAS threads would only fight the other worker.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _request_counter() -> Callable[[str, bool], None]:
    # prometheus_client is imported here, after BentoML has set PROMETHEUS_MULTIPROC_DIR for the worker.
    import prometheus_client

    counter = prometheus_client.Counter(
        "recsys_recommendations",
        "Recommendation requests answered, by endpoint and cold start",
        labelnames=["endpoint", "cold_start"],
    )
    children = {
        (endpoint, cold): counter.labels(endpoint=endpoint, cold_start=str(cold).lower())
        for endpoint in ("recommend", "new_listener")
        for cold in (False, True)
    }

    def count(endpoint: str, cold_start: bool) -> None:
        children[(endpoint, cold_start)].inc()

    return count
