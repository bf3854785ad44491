"""The lean Starlette app behind every endpoint; the BentoML service mounts it at ``/``.

BentoML's own ``@api`` machinery costs several times the model's work per request, so the hot paths
are plain Starlette handlers: the body is validated with pydantic straight from JSON bytes, the answer
is serialised with orjson, and the model's structures are precomputed in a :class:`ServingState`.

Security (:mod:`recsys.serving.http`): admin endpoints check ``X-Admin-Token`` in constant time, large
bodies get 413 and foreign origins 403; nothing logged here names a raw user id (see
:meth:`recsys.feedback.store.FeedbackStore.pseudonym`).

Every answered recommendation is handed to :class:`recsys.serving.served_log.ServedLog` after the response
is built: an in-memory append, written to the feedback store by a background thread started and
flushed by the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from recsys.config import item_kind
from recsys.experiments.design import Experiment
from recsys.feedback.store import FeedbackUnavailableError
from recsys.serving import experiment, logic, user_data
from recsys.serving.access import Caller, authorize_listener
from recsys.serving.http import (
    HTTPError,
    invalid,
    json_response,
    parse_body,
    rate_limited,
    require_admin,
    runtime_of,
    state_of,
    store_unavailable,
)
from recsys.serving.openapi import docs_page, openapi_spec
from recsys.serving.runtime import Runtime
from recsys.serving.schemas import (
    FeedbackRequest,
    NewListenerRequest,
    RatingRequest,
    RecommendRequest,
    SearchQuery,
    SimilarRequest,
)
from recsys.serving.session import SessionEvent
from recsys.serving.state import ServingState

_LOG = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
POLL_S = 1.0
SEARCH_WAIT_S = 1.0
RETRY_LOAD_S = 5.0
Handler = Callable[[Request], Awaitable[Response]]


async def dislikes(runtime: Runtime, user_id: str | None) -> frozenset[str]:
    """The listener's disliked items from the worker's index, synced first if another worker signalled a
    dislike or an erasure (which is honoured before this answer too)."""
    if user_id is None:
        return frozenset()
    if runtime.feedback.signalled():
        await anyio.to_thread.run_sync(runtime.feedback.sync_signalled)
        await anyio.to_thread.run_sync(runtime.honour_erasures)
    found = runtime.feedback.dislikes(user_id)
    if found is None:  # the index is full and does not hold this listener
        return await anyio.to_thread.run_sync(runtime.feedback.read_dislikes, user_id)
    return found


async def session_events(runtime: Runtime, user_id: str | None) -> tuple[SessionEvent, ...]:
    """The listener's newest events from the worker's session index, read first when another worker stored
    one (call after :func:`dislikes`, which syncs everything when a dislike or erasure was signalled)."""
    if user_id is None:
        return ()
    if runtime.feedback.session_signalled():  # a like, play or skip stored through another worker
        await anyio.to_thread.run_sync(runtime.feedback.sync_sessions)
    found = runtime.feedback.session(user_id)
    if found is None:  # the index is full and does not hold this listener
        return await anyio.to_thread.run_sync(runtime.feedback.read_session, user_id)
    return found


async def recommend(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await parse_body(request, RecommendRequest, runtime)
    authorize_listener(request, runtime, [body.user_id])
    state = state_of(runtime)
    disliked = await dislikes(runtime, body.user_id)
    events = await session_events(runtime, body.user_id)
    running = await experiment_of(runtime, state)
    seed = runtime.experiments.next_seed(body.user_id) if running.active else 0
    answer, shadow = experiment.recommend(running, state, body, disliked, seed, events, runtime.explorer)
    runtime.count("recommend", answer["cold_start"])
    response = json_response(answer)
    challenger = running.design.challenger if running.active else None
    strength = experiment.strength(running, state, answer)
    runtime.served.record("recommend", body.user_id, answer, strength, challenger)
    if shadow is not None:  # made and logged after the response is sent: no time taken from the listener
        response.background = BackgroundTask(_log_shadow, runtime, body.user_id, shadow, challenger)
    return response


def _log_shadow(runtime: Runtime, user_id: str, shadow: experiment.Shadow, challenger: str | None) -> None:
    answer, strength = shadow()
    runtime.served.record("recommend", user_id, answer, strength, challenger)


async def new_listener(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await parse_body(request, NewListenerRequest, runtime)
    authorize_listener(request, runtime, [body.user_id])
    state = state_of(runtime)
    disliked = await dislikes(runtime, body.user_id)
    answer = logic.new_listener(state, body, disliked, await session_events(runtime, body.user_id))
    runtime.count("new_listener", False)
    response = json_response(answer)
    runtime.served.record("new-listener", body.user_id, answer, state.bias_strength)
    return response


async def similar(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await parse_body(request, SimilarRequest, runtime)
    return json_response(logic.similar(state_of(runtime), body))


async def search(request: Request) -> Response:
    """Name search, a step at a time on the event loop (:meth:`NameIndex.search_steps`): a long scan of a
    large catalogue lets the requests behind it through between steps; at most ``SEARCHES_IN_FLIGHT`` run
    at once in a worker, the others wait :data:`SEARCH_WAIT_S` for a turn or get 429."""
    runtime = runtime_of(request)
    try:
        query = SearchQuery.model_validate(dict(request.query_params))
    except ValidationError as err:
        raise invalid(err) from err
    state = state_of(runtime)
    try:
        await asyncio.wait_for(runtime.searches.acquire(), SEARCH_WAIT_S)
    except TimeoutError as err:
        raise HTTPError(
            429, "too many searches in flight on this worker", headers={"Retry-After": "1"}
        ) from err
    try:
        steps = state.names_index.search_steps(query.q, query.limit)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return json_response(logic.search_answer(state, done.value))
            await asyncio.sleep(0)
    finally:
        runtime.searches.release()


async def feedback(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await parse_body(request, FeedbackRequest, runtime)
    if authorize_listener(request, runtime, [event.user_id for event in body.events]) is Caller.ANONYMOUS:
        anonymous_writes(runtime, len(body.events))
    await synced_experiment(runtime)
    events = experiment.with_arms(runtime.experiments.running.design, list(body.events))
    try:
        result = await anyio.to_thread.run_sync(runtime.feedback.add, events)
    except FeedbackUnavailableError as err:
        raise store_unavailable(err, "feedback") from err
    return json_response({"inserted": result.inserted, "duplicates": result.duplicates})


async def rating(request: Request) -> Response:
    """Store a listener's 1-5 rating of the list they were shown."""
    runtime = runtime_of(request)
    body = await parse_body(request, RatingRequest, runtime)
    if authorize_listener(request, runtime, [body.user_id]) is Caller.ANONYMOUS:
        anonymous_writes(runtime, 1)
    try:
        await anyio.to_thread.run_sync(
            lambda: runtime.feedback.store().add_rating(body.user_id, body.rating, body.model_version)
        )
    except FeedbackUnavailableError as err:
        raise store_unavailable(err, "rating") from err
    return json_response({"stored": True})


def anonymous_writes(runtime: Runtime, n: int) -> None:
    """Take ``n`` anonymous writes from the worker's bucket (422 above a burst, 429 when spent)."""
    burst = runtime.limits.writes.burst
    if n > burst:
        raise HTTPError(422, f"anonymous callers send at most {burst:g} events a request; got {n}")
    rate_limited(runtime.limits.writes, n, "writes")


async def reload(request: Request) -> Response:
    runtime = runtime_of(request)
    require_admin(request, runtime)
    previous, error = await anyio.to_thread.run_sync(lambda: runtime.models.reload(announce=True))
    state = runtime.models.state
    answer = {
        "reloaded": error is None,
        "model_version": state.version if state is not None else None,
        "previous_version": previous,
        "error": error,
    }
    return json_response(answer, status=200 if error is None else 409)


async def experiment_of(runtime: Runtime, state: ServingState) -> experiment.Running:
    """The experiment for a request, synced first when another worker announced a change: every request
    after ``POST /admin/experiment`` returns sees the new design, on any worker (a worker that has not loaded
    the new challenger yet loads it first, usually done by its once-a-second poll before a request comes)."""
    await synced_experiment(runtime)
    return runtime.experiments.for_request(state)


async def synced_experiment(runtime: Runtime) -> None:
    """Load the experiment another worker announced, if any (a ``stat`` when none was)."""
    if runtime.experiments.needs_sync():
        await anyio.to_thread.run_sync(runtime.experiments.sync)


async def experiment_info(request: Request) -> Response:
    runtime = runtime_of(request)
    require_admin(request, runtime)
    await synced_experiment(runtime)
    return json_response(_experiment_answer(runtime))


async def start_experiment(request: Request) -> Response:
    """Load the challenger and run the experiment in every worker (409 if the challenger cannot load)."""
    runtime = runtime_of(request)
    require_admin(request, runtime)
    design = await parse_body(request, Experiment, runtime)
    try:
        await anyio.to_thread.run_sync(runtime.experiments.start, design)
    except FeedbackUnavailableError as err:  # not announced: nothing changed anywhere
        raise HTTPError(503, f"the experiment could not be announced to every replica: {err}") from err
    except Exception as err:  # the running experiment is untouched
        message = f"challenger {design.challenger!r} could not be loaded: {type(err).__name__}: {err}"
        raise HTTPError(409, message, [{"field": "challenger", "message": message}]) from err
    return json_response(_experiment_answer(runtime))


def _experiment_answer(runtime: Runtime) -> dict[str, Any]:
    state = runtime.models.state
    design = runtime.experiments.running.design
    champion = state.version if state is not None else None
    return design.model_dump() | {"champion": champion, "error": runtime.experiments.error}


async def model_info(request: Request) -> Response:
    state = state_of(runtime_of(request))
    metrics = state.metadata.get("metrics", {})
    kind = item_kind(state.metadata.get("params") or {})
    return json_response(
        {
            "model_version": state.version,
            # Which model ranks known listeners: the hybrid, or the two-stage ranker packaged over it.
            "served_model": state.served_model,
            "n_items": state.n_items,
            "item_kind": kind,
            "metrics": metrics,
            # What listeners get: the packaged strength (the metrics were measured at it) unless overridden.
            "bias_strength": state.bias_strength,
            "bias_strength_source": state.bias_source,
            # Lists keeping each listener's genre mix (packaged with the model; None: not calibrated).
            "calibration": state.calibration.metadata() if state.calibration is not None else None,
        }
    )


async def index(request: Request) -> Response:
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type="text/html; charset=utf-8")


async def favicon(request: Request) -> Response:
    """The page's icon at the address browsers and bookmarks ask for (the page links the same SVG)."""
    return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml")


async def openapi(request: Request) -> Response:
    return json_response(openapi_spec())


async def docs(request: Request) -> Response:
    return Response(docs_page("/openapi.json"), media_type="text/html; charset=utf-8")


def guarded(handler: Handler) -> Handler:
    """Turn :class:`HTTPError` and :class:`logic.FieldError` into JSON answers; anything else into a 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPError as err:
            body = {"error": err.error, "fields": err.fields}
            return json_response(body, status=err.status, headers=err.headers)
        except logic.FieldError as err:
            fields = [{"field": err.field, "message": str(err)}]
            return json_response({"error": f"{err.field}: {err}", "fields": fields}, status=err.status)
        except Exception:
            # The handler's name, not the path: a path may hold a raw user id.
            _LOG.exception("unexpected error in %s %s", request.method, handler.__name__)
            return json_response({"error": "internal error", "fields": []}, status=500)

    return endpoint


async def follow_changes(runtime: Runtime) -> None:
    """Follow reloads announced by other workers, keep trying while no model is loaded, sync dislikes,
    erasures and revocations and act on them."""
    last_try = 0.0
    while True:
        await asyncio.sleep(POLL_S)
        await anyio.to_thread.run_sync(runtime.signals.refresh)  # changes made on other hosts
        if runtime.feedback.due():
            try:
                await anyio.to_thread.run_sync(runtime.feedback.sync)
                await anyio.to_thread.run_sync(runtime.honour_erasures)
            except Exception:  # a bug in the sync must not stop this loop from following reloads
                _LOG.exception("feedback sync failed")
        now = asyncio.get_running_loop().time()
        if runtime.models.state is None and now - last_try < RETRY_LOAD_S:
            continue
        if runtime.experiments.needs_sync():
            await anyio.to_thread.run_sync(runtime.experiments.sync)
        if runtime.models.needs_reload():
            last_try = now
            await anyio.to_thread.run_sync(lambda: runtime.models.reload(follow=True))
            await anyio.to_thread.run_sync(runtime.honour_erasures)


class AnyPath(PathConvertor):
    """Starlette's ``path`` convertor, line breaks included: its ``.*`` stops at one, so a user id holding
    one (sent as %0A) matched neither this app's routes nor BentoML's mount of the app (a plain-text 404)."""

    regex = r"[\s\S]*"


def create_app() -> Starlette:
    """The app; the service sets ``app.state.runtime`` before the first request.

    Registers :class:`AnyPath` as Starlette's ``path`` convertor for the whole process, before BentoML
    builds the mount that serves this app (importing the service module does both in that order).
    """
    register_url_convertor("path", AnyPath())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        task = asyncio.create_task(follow_changes(runtime)) if runtime is not None else None
        if runtime is not None:
            runtime.start_served_log()
            runtime.start_listener()
        yield
        if task is not None:
            task.cancel()
        if runtime is not None:
            runtime.stop_listener()
            # BentoML closes the store after this (on_shutdown), so what is queued is written first.
            await anyio.to_thread.run_sync(runtime.served.stop)

    routes = [
        Route("/", guarded(index), methods=["GET"]),
        Route("/favicon.ico", guarded(favicon), methods=["GET"]),
        Route("/recommend", guarded(recommend), methods=["POST"]),
        Route("/recommend/new-listener", guarded(new_listener), methods=["POST"]),
        Route("/similar", guarded(similar), methods=["POST"]),
        Route("/search", guarded(search), methods=["GET"]),
        Route("/feedback", guarded(feedback), methods=["POST"]),
        Route("/ratings", guarded(rating), methods=["POST"]),
        Route("/admin/reload", guarded(reload), methods=["POST"]),
        Route("/admin/experiment", guarded(experiment_info), methods=["GET"]),
        Route("/admin/experiment", guarded(start_experiment), methods=["POST"]),
        # An id may hold "/" (sent as %2F) or any other character: the listener must still reach their data.
        Route("/users/{user_id:path}/feedback", guarded(user_data.user_feedback), methods=["GET"]),
        Route("/users/{user_id:path}/feedback", guarded(user_data.delete_user_feedback), methods=["DELETE"]),
        Route("/model", guarded(model_info), methods=["GET"]),
        Route("/openapi.json", guarded(openapi), methods=["GET"]),
        Route("/docs", guarded(docs), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
