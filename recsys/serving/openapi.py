"""OpenAPI 3.1 description of the HTTP API, built from the pydantic schemas, and the /docs page.

The /docs page is Swagger UI from the copy BentoML ships and serves at ``/static_content``: nothing is
fetched from the internet.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from recsys.serving import schemas as s

_REF = "#/components/schemas/{model}"
# (method, path, summary, request model, response model, error statuses)
_OPERATIONS: tuple[tuple[str, str, str, type[BaseModel] | None, type[BaseModel], tuple[int, ...]], ...] = (
    (
        "post",
        "/recommend",
        "Recommendations for a listener (cold start if unknown)",
        s.RecommendRequest,
        s.RecommendResponse,
        (415, 422, 503),
    ),
    (
        "post",
        "/recommend/new-listener",
        "Recommendations from favourite artists",
        s.NewListenerRequest,
        s.RecommendResponse,
        (415, 422, 503),
    ),
    (
        "post",
        "/similar",
        "Artists similar to one artist",
        s.SimilarRequest,
        s.SimilarResponse,
        (404, 422, 503),
    ),
    ("get", "/search", "Artist search by name (prefix and fuzzy)", None, s.SearchResponse, (422, 503)),
    (
        "post",
        "/feedback",
        "Store feedback events durably (idempotent by event_id)",
        s.FeedbackRequest,
        s.FeedbackResponse,
        (415, 422, 503),
    ),
    (
        "post",
        "/admin/reload",
        "Load the registry's champion and swap it in (X-Admin-Token)",
        None,
        s.ReloadResponse,
        (401, 403, 409),
    ),
)
_STATUS_TEXT = {
    401: "Missing admin token",
    403: "Forbidden (wrong token, admin disabled, or another origin)",
    404: "Unknown artist",
    409: "The champion could not be loaded; the previous model is still served",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Invalid request: `fields` names each offending field",
    503: "No model loaded yet, or the feedback store is unavailable (see Retry-After)",
}


@functools.cache
def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document of every endpoint of :mod:`recsys.serving.app`."""
    models = {m for op in _OPERATIONS for m in (op[3], op[4]) if m is not None} | {s.ErrorResponse}
    _, definitions = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=_REF
    )
    paths: dict[str, Any] = {}
    for method, path, summary, request, response, errors in _OPERATIONS:
        paths.setdefault(path, {})[method] = _operation(summary, request, response, errors)
    paths["/search"]["get"]["parameters"] = _query_parameters(s.SearchQuery)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Music recommender", "version": "1"},
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {})},
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


def _operation(
    summary: str, request: type[BaseModel] | None, response: type[BaseModel], errors: tuple[int, ...]
) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}}
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=response.__name__)}}},
            },
            **{str(code): {"description": _STATUS_TEXT[code], **error} for code in errors},
        },
    }
    if request is not None:
        schema = {"$ref": _REF.format(model=request.__name__)}
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return operation


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]
