"""What the service stores about a listener, shown to them and erased on request.

``GET /users/{user_id}/feedback`` lists a listener's stored events and ratings; ``DELETE`` erases them all
(audited under a pseudonym, forgotten by every worker:
:meth:`recsys.serving.feedback_follower.FeedbackFollower.delete_user`).
Who may call them is :mod:`recsys.serving.access`: the listener's own page for its anonymous id, the
platform's backend (client token) or the admin for any id. Anonymous erasures are rate-limited per worker.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from recsys.feedback.events import InvalidFeedbackError
from recsys.feedback.store import FeedbackUnavailableError
from recsys.serving.access import Caller, authorize_listener
from recsys.serving.http import HTTPError, invalid, json_response, rate_limited, runtime_of, store_unavailable
from recsys.serving.runtime import Runtime
from recsys.serving.schemas import DeleteQuery, UserPath

_LOG = logging.getLogger(__name__)
OWN_REASON = "the listener's own request from the page"
MAX_LISTED = 1000


def owner_or_admin(request: Request, runtime: Runtime) -> tuple[str, Caller]:
    """The path's user id and the caller, once they may act on it (:func:`authorize_listener`)."""
    try:
        user_id = UserPath.model_validate(request.path_params).user_id
    except ValidationError as err:
        raise invalid(err) from err
    return user_id, authorize_listener(request, runtime, [user_id])


async def user_feedback(request: Request) -> Response:
    """The listener's stored events, newest first (at most :data:`MAX_LISTED`), with item names."""
    runtime = runtime_of(request)
    user_id, _ = owner_or_admin(request, runtime)

    def read() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        store = runtime.feedback.store()
        return store.user_events(user_id, MAX_LISTED), store.user_ratings(user_id)

    try:
        events, ratings = await anyio.to_thread.run_sync(read)
    except FeedbackUnavailableError as err:
        raise store_unavailable(err, "listener data request") from err
    state = runtime.models.state
    listed: list[dict[str, str | None]] = []
    for event in events:
        index = state.item_index.get(event["item_id"]) if state is not None else None
        entry: dict[str, str | None] = dict(event)
        entry["name"] = state.names[index] if state is not None and index is not None else None
        listed.append(entry)
    answer = {"user_id": user_id, "n_events": len(listed), "events": listed, "ratings": ratings}
    return json_response(answer)


async def delete_user_feedback(request: Request) -> Response:
    """Erase every feedback event of one listener; the store keeps a pseudonymous audit row."""
    runtime = runtime_of(request)
    user_id, who = owner_or_admin(request, runtime)
    params: dict[str, Any] = dict(request.query_params)
    if who is Caller.ANONYMOUS:
        params.setdefault("reason", OWN_REASON)
    try:
        query = DeleteQuery.model_validate(params)
    except ValidationError as err:
        raise invalid(err) from err
    if who is Caller.ANONYMOUS:
        rate_limited(runtime.limits.erasures, 1, "erasures")
    try:
        deleted = await anyio.to_thread.run_sync(runtime.feedback.delete_user, user_id, query.reason)
        runtime.forget_session(user_id)
        await anyio.to_thread.run_sync(runtime.honour_erasures)
    except FeedbackUnavailableError as err:
        raise store_unavailable(err, "erasure") from err
    except InvalidFeedbackError as err:
        raise HTTPError(422, f"invalid request: {err}", [{"field": "reason", "message": str(err)}]) from err
    pseudonym = await anyio.to_thread.run_sync(runtime.feedback.store().pseudonym, user_id)
    return json_response({"deleted": deleted, "user_pseudonym": pseudonym})
