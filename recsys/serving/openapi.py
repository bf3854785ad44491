"""OpenAPI 3.1 description of the HTTP API, built from the pydantic schemas, and the /docs page.

The /docs page is Swagger UI from the copy BentoML ships and serves at ``/static_content``: nothing is
fetched from the internet.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from recsys.loop.experiments import Experiment
from recsys.serving import schemas as s

_REF = "#/components/schemas/{model}"
_BODY_ERRORS = (413, 415, 422, 503)
_ADMIN_SCHEME = "adminToken"


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
    # Statuses other than 200 that answer with the response model rather than an ErrorResponse.
    partial: tuple[int, ...] = ()


_OPERATIONS: tuple[_Op, ...] = (
    _Op(
        "post",
        "/recommend",
        "Recommendations for a listener (cold start if unknown)",
        s.RecommendResponse,
        _BODY_ERRORS,
        request=s.RecommendRequest,
    ),
    _Op(
        "post",
        "/recommend/new-listener",
        "Recommendations from favourite artists",
        s.RecommendResponse,
        _BODY_ERRORS,
        request=s.NewListenerRequest,
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
        (422, 503),
        query=s.SearchQuery,
    ),
    _Op(
        "post",
        "/feedback",
        "Store feedback events durably (idempotent by event_id)",
        s.FeedbackResponse,
        _BODY_ERRORS,
        request=s.FeedbackRequest,
    ),
    _Op(
        "post",
        "/ratings",
        "Store a listener's 1-5 rating of the recommendations they were shown (optional for them)",
        s.RatingResponse,
        _BODY_ERRORS,
        request=s.RatingRequest,
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
        "A listener's stored feedback events (X-Admin-Token; none needed for the page's own web- ids)",
        s.UserFeedbackResponse,
        (401, 403, 422, 503),
        path_params=s.UserPath,
        admin=True,
    ),
    _Op(
        "delete",
        "/users/{user_id}/feedback",
        "Erase every feedback event of a listener, audited under a pseudonym (X-Admin-Token; none needed "
        "for the page's own web- ids)",
        s.DeletionResponse,
        (401, 403, 422, 503),
        query=s.DeleteQuery,
        path_params=s.UserPath,
        admin=True,
    ),
)
_STATUS_TEXT = {
    401: "Missing admin token",
    403: "Forbidden (wrong token, admin disabled, or another origin)",
    404: "Unknown artist",
    409: "The champion (or the experiment's challenger) could not be loaded; nothing changed",
    413: "Body larger than 64 KiB",
    415: "Body is not JSON",
    422: "Invalid request: `fields` names each offending field",
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
    return {
        "openapi": "3.1.0",
        "info": {"title": "Music recommender", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {_ADMIN_SCHEME: scheme},
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
    return operation


def _parameters(model: type[BaseModel], location: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": location, "required": location == "path" or name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]
