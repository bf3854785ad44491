"""HTTP plumbing of the service's handlers: errors as answers, JSON in and out, the runtime, admin checks.

Security: admin endpoints compare the ``X-Admin-Token`` header with ``RECSYS_ADMIN_TOKEN`` in constant
time; bodies over :data:`MAX_BODY_BYTES` are refused with 413 before they are read in full; requests from
another origin than the page's own (or ``RECSYS_ALLOWED_ORIGINS``) are refused with 403.
"""

from __future__ import annotations

import hmac
import logging
import math
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from recsys.serving.limits import TokenBucket
from recsys.serving.runtime import Runtime
from recsys.serving.state import ServingState

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (64 KiB): a full batch of 500 feedback events fits while their ids are
short (about 130 bytes an event); clients with long ids send smaller batches."""
_LOG = logging.getLogger(__name__)
RETRY_AFTER_S = "5"
ADMIN_HEADER = "x-admin-token"

M = TypeVar("M", bound=BaseModel)


class HTTPError(Exception):
    """An answer other than 200: status, message, offending fields and extra headers."""

    def __init__(
        self,
        status: int,
        error: str,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.fields, self.headers = status, error, fields or [], headers or {}


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An ``application/json`` response serialised by orjson."""
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def runtime_of(request: Request) -> Runtime:
    """The worker's runtime, or 503 while the service is starting."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPError(503, "the service is starting", headers={"Retry-After": RETRY_AFTER_S})
    return runtime


def state_of(runtime: Runtime) -> ServingState:
    """The model being served, or 503 when none is loaded yet."""
    state = runtime.models.state
    if state is None:
        detail = f": {runtime.models.error}" if runtime.models.error else ""
        raise HTTPError(503, f"no model is loaded yet{detail}", headers={"Retry-After": RETRY_AFTER_S})
    return state


def field_errors(err: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "events.2.event", "message": ...}]`` from a pydantic error (``(body)`` for bad JSON)."""
    return [
        {"field": ".".join(str(part) for part in e["loc"]) or "(body)", "message": e["msg"]}
        for e in err.errors()
    ]


def invalid(err: ValidationError) -> HTTPError:
    """A 422 naming every offending field in its message and its ``fields``."""
    fields = field_errors(err)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return HTTPError(422, f"invalid request: {summary}", fields)


def check_origin(request: Request, runtime: Runtime) -> None:
    """Refuse (403) a browser request sent from another origin than the page's own."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin.rstrip("/") != own and origin.rstrip("/") not in runtime.settings.allowed_origins:
        raise HTTPError(403, f"cross-origin requests from {origin} are not allowed")


async def parse_body(request: Request, model: type[M], runtime: Runtime) -> M:
    """Validate a JSON body against ``model`` (413 when too large, 415 when not JSON, 422 when invalid)."""
    check_origin(request, runtime)
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPError(415, f"content-type must be application/json, got {media!r}")
    body = await read_limited(request, MAX_BODY_BYTES)
    try:
        # Strict: the documented types only (no `true` for an integer, no number for a timestamp).
        return model.model_validate_json(body, strict=True)
    except ValidationError as err:
        raise invalid(err) from err


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as its declared or streamed size exceeds ``limit`` bytes.

    A chunked body (no ``Content-Length``) is counted while it streams in, so an oversized one is never
    held in memory in full.
    """
    too_large = HTTPError(413, f"request body must be at most {limit} bytes")
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > limit):
        raise too_large
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def require_admin(request: Request, runtime: Runtime) -> None:
    """401 without ``X-Admin-Token``, 403 when it is wrong or admin endpoints are disabled.

    The token is compared with :func:`hmac.compare_digest`, whose time does not depend on where the
    given token first differs from the expected one.
    """
    check_origin(request, runtime)
    expected = runtime.settings.admin_token
    if not expected:
        raise HTTPError(403, "admin endpoints are disabled: set RECSYS_ADMIN_TOKEN to enable them")
    given = request.headers.get(ADMIN_HEADER)
    if not given:
        raise HTTPError(401, f"missing {ADMIN_HEADER} header", headers={"WWW-Authenticate": "Token"})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPError(403, f"wrong {ADMIN_HEADER}")


def store_unavailable(err: Exception, what: str) -> HTTPError:
    """The 503 (with Retry-After) for a request the feedback store could not take; logged as ``what``."""
    _LOG.warning("%s refused: %s", what, err)
    return HTTPError(
        503, "the feedback store is unavailable; retry later", headers={"Retry-After": RETRY_AFTER_S}
    )


def rate_limited(bucket: TokenBucket, n: float, what: str) -> None:
    """429 with ``Retry-After`` when ``bucket`` cannot grant ``n`` now (nothing is taken then)."""
    wait = bucket.take(n)
    if wait > 0:
        raise HTTPError(
            429,
            f"too many anonymous {what} on this worker: retry later",
            headers={"Retry-After": str(max(1, math.ceil(min(wait, 3600.0))))},
        )
