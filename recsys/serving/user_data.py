"""What the service stores about a listener, shown to them and erased on request.

``GET /users/{user_id}/feedback`` lists a listener's stored events and ratings; ``DELETE`` erases them all
(audited under a pseudonym, forgotten by every worker: :meth:`recsys.serving.dislikes.Feedback.delete_user`).
Both are the admin's (``X-Admin-Token``) for any listener, and the listener's own, without a token, for the
anonymous ids the web page makes (:data:`ANONYMOUS_ID`: ``web-`` and a random UUID held only in that
browser): knowing one is the proof of being its listener, and no one can guess another's. Other ids (a
team's own user ids, often guessable) need the admin.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from recsys.loop.events import InvalidFeedbackError
from recsys.loop.feedback import FeedbackUnavailableError
from recsys.serving.http import (
    ADMIN_HEADER,
    HTTPError,
    check_origin,
    invalid,
    json_response,
    require_admin,
    runtime_of,
    store_unavailable,
)
from recsys.serving.runtime import Runtime
from recsys.serving.schemas import DeleteQuery, UserPath

_LOG = logging.getLogger(__name__)
ANONYMOUS_ID = re.compile(r"web-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The listener ids the web page makes (``web-`` and a random version-4 UUID, lower case)."""
OWN_REASON = "the listener's own request from the page"
MAX_LISTED = 1000


def owner_or_admin(request: Request, runtime: Runtime) -> str:
    """The path's user id once the caller may act on it: the admin (a valid token), or the listener of an
    anonymous page id (from the page's own origin); else 401 (no token for another id) or 403."""
    try:
        user_id = UserPath.model_validate(request.path_params).user_id
    except ValidationError as err:
        raise invalid(err) from err
    if request.headers.get(ADMIN_HEADER) or not ANONYMOUS_ID.fullmatch(user_id):
        require_admin(request, runtime)
    else:
        check_origin(request, runtime)
    return user_id


async def user_feedback(request: Request) -> Response:
    """The listener's stored events, newest first (at most :data:`MAX_LISTED`), with item names."""
    runtime = runtime_of(request)
    user_id = owner_or_admin(request, runtime)

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
    user_id = owner_or_admin(request, runtime)
    params: dict[str, Any] = dict(request.query_params)
    if not request.headers.get(ADMIN_HEADER):
        params.setdefault("reason", OWN_REASON)
    try:
        query = DeleteQuery.model_validate(params)
    except ValidationError as err:
        raise invalid(err) from err
    try:
        deleted = await anyio.to_thread.run_sync(runtime.feedback.delete_user, user_id, query.reason)
    except FeedbackUnavailableError as err:
        raise store_unavailable(err, "erasure") from err
    except InvalidFeedbackError as err:
        raise HTTPError(422, f"invalid request: {err}", [{"field": "reason", "message": str(err)}]) from err
    pseudonym = await anyio.to_thread.run_sync(runtime.feedback.store().pseudonym, user_id)
    return json_response({"deleted": deleted, "user_pseudonym": pseudonym})
