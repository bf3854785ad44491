"""OpenAPI 3.1 description of the HTTP API, built from the pydantic schemas, and the /docs page.

The /docs page is Swagger UI from the copy BentoML ships and serves at ``/static_content``: nothing is
fetched from the internet.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from recsys.experiments.design import Experiment
from recsys.serving import schemas as s

_REF = "#/components/schemas/{model}"
_BODY_ERRORS = (413, 415, 422, 503)
# A listener's routes: a token is needed for ids other than the page's anonymous ones; anonymous writes
# are rate-limited (recsys.serving.access, recsys.serving.limits).
_LISTENER_ERRORS = (401, 403, 429, *_BODY_ERRORS)
_ADMIN_SCHEME = "adminToken"
_CLIENT_SCHEME = "clientToken"


class _Op(NamedTuple):
    method: str
    path: str
    summary: str
    response: type[BaseModel]
    errors: tuple[int, ...]
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    admin: bool = False
    listener: bool = False
    # Statuses other than 200 that answer with the response model rather than an ErrorResponse.
    partial: tuple[int, ...] = ()


_OPERATIONS: tuple[_Op, ...] = (
    _Op(
        "post",
        "/recommend",
        "Recommendations for a listener (cold start if unknown; X-Client-Token unless a page's web- id)",
        s.RecommendResponse,
        _LISTENER_ERRORS,
        request=s.RecommendRequest,
        listener=True,
    ),
    _Op(
        "post",
        "/recommend/new-listener",
        "Recommendations from favourite artists",
        s.RecommendResponse,
        _LISTENER_ERRORS,
        request=s.NewListenerRequest,
        listener=True,
    ),
    _Op(
        "post",
        "/similar",
        "Artists similar to one artist",
        s.SimilarResponse,
        (404, *_BODY_ERRORS),
        request=s.SimilarRequest,
    ),
    _Op(
        "get",
        "/search",
        "Artist search by name (prefix and fuzzy)",
        s.SearchResponse,
        (422, 429, 503),
        query=s.SearchQuery,
    ),
    _Op(
        "post",
        "/feedback",
        "Store feedback events durably (idempotent by each listener's event_id)",
        s.FeedbackResponse,
        _LISTENER_ERRORS,
        request=s.FeedbackRequest,
        listener=True,
    ),
    _Op(
        "post",
        "/ratings",
        "Store a listener's 1-5 rating of the recommendations they were shown (optional for them)",
        s.RatingResponse,
        _LISTENER_ERRORS,
        request=s.RatingRequest,
        listener=True,
    ),
    _Op("get", "/model", "The model being served and its offline metrics", s.ModelInfoResponse, (503,)),
    _Op(
        "post",
        "/admin/reload",
        "Load the registry's champion and swap it in (X-Admin-Token)",
        s.ReloadResponse,
        (401, 403, 409, 503),
        admin=True,
        partial=(409,),
    ),
    _Op(
        "get",
        "/admin/experiment",
        "The running experiment (X-Admin-Token)",
        s.ExperimentResponse,
        (401, 403, 503),
        admin=True,
    ),
    _Op(
        "post",
        "/admin/experiment",
        "Run a shadow, A/B or interleaving experiment with a challenger; mode off stops it (X-Admin-Token)",
        s.ExperimentResponse,
        (401, 403, 409, 422, 503),
        request=Experiment,
        admin=True,
    ),
    _Op(
        "get",
        "/users/{user_id}/feedback",
        "A listener's stored feedback events (X-Client-Token or X-Admin-Token; none for a page's web- id)",
        s.UserFeedbackResponse,
        (401, 403, 422, 503),
        path_params=s.UserPath,
        listener=True,
    ),
    _Op(
        "delete",
        "/users/{user_id}/feedback",
        "Erase everything stored of a listener, audited under a pseudonym (X-Client-Token or X-Admin-Token; "
        "none for a page's web- id)",
        s.DeletionResponse,
        (401, 403, 422, 429, 503),
        query=s.DeleteQuery,
        path_params=s.UserPath,
        listener=True,
    ),
)
_STATUS_TEXT = {
    401: "Missing token: the admin's, or on a listener's route the client token (for any id but a page's)",
    403: "Forbidden (wrong token, admin disabled, or another origin)",
    404: "Unknown artist",
    409: "The champion (or the experiment's challenger) could not be loaded; nothing changed",
    413: "Body larger than 64 KiB",
    415: "Body is not JSON",
    422: "Invalid request: `fields` names each offending field",
    429: "Too many anonymous writes, erasures or searches on this worker (see Retry-After)",
    503: "No model loaded yet, or the feedback store is unavailable (see Retry-After)",
}


@functools.cache
def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document of every endpoint of :mod:`recsys.serving.app`."""
    models = {m for op in _OPERATIONS for m in (op.request, op.response) if m is not None}
    _, definitions = models_json_schema(
        [(m, "validation") for m in sorted(models | {s.ErrorResponse}, key=lambda m: m.__name__)],
        ref_template=_REF,
    )
    paths: dict[str, Any] = {}
    for op in _OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    scheme = {"type": "apiKey", "in": "header", "name": "X-Admin-Token"}
    client = {"type": "apiKey", "in": "header", "name": "X-Client-Token"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Music recommender", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {_ADMIN_SCHEME: scheme, _CLIENT_SCHEME: client},
        },
    }


def docs_page(spec_url: str) -> str:
    """Swagger UI over ``spec_url``, using BentoML's bundled assets."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Music recommender API</title>
<link rel="stylesheet" href="/static_content/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "{spec_url}", dom_id: "#swagger-ui"}});</script>
</body></html>"""


def _operation(op: _Op) -> dict[str, Any]:
    def content(model: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}

    responses = {"200": {"description": "OK", **content(op.response.__name__)}}
    for code in op.errors:
        model = op.response.__name__ if code in op.partial else "ErrorResponse"
        responses[str(code)] = {"description": _STATUS_TEXT[code], **content(model)}
    operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if op.request is not None:
        operation["requestBody"] = {"required": True, **content(op.request.__name__)}
    parameters = [
        *(_parameters(op.path_params, "path") if op.path_params is not None else []),
        *(_parameters(op.query, "query") if op.query is not None else []),
    ]
    if parameters:
        operation["parameters"] = parameters
    if op.admin:
        operation["security"] = [{_ADMIN_SCHEME: []}]
    elif op.listener:  # a client or the admin token, or none for an anonymous page id
        operation["security"] = [{_CLIENT_SCHEME: []}, {_ADMIN_SCHEME: []}, {}]
    return operation


def _parameters(model: type[BaseModel], location: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": location, "required": location == "path" or name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]
