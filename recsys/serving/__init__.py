"""Serving: the BentoML service, its lean Starlette app and the listener's web page.

Importing this package imports neither BentoML nor the model: ``recsys.serving.service`` does.

Modules
-------
service
    The BentoML service: lifecycle, metrics, timeouts; mounts the app.
app
    The Starlette routes (recommend, new listener, similar, feedback, search, model, admin, erasure).
access, limits
    Who may call each route (anonymous page ids, client and admin tokens); anonymous rate limits.
loading
    Which stored models a service may load: its data set's, never a revoked one.
logic
    What each route computes, from a ``ServingState``.
state
    The immutable ``ServingState`` built from the champion artifact (scorer, search, reasons).
runtime
    One worker's parts: settings, the swappable model (``ModelHolder``), feedback, served log.
settings
    ``ServingSettings`` from the environment.
signals
    Change counters the workers share (reload, dislike), in a folder private to the user.
dislikes
    Each worker's view of the feedback store: every listener's dislikes in memory, erasures, revocations.
served_log
    The sampled, batched log of served lists.
schemas, openapi
    Request and response models; the OpenAPI document.
search
    Fuzzy name search over the catalogue.
route_metrics, timeout
    Request metrics labelled by route; a request timeout that cancels its timer.
"""

__all__ = [
    "access",
    "app",
    "dislikes",
    "limits",
    "loading",
    "logic",
    "openapi",
    "route_metrics",
    "runtime",
    "schemas",
    "search",
    "served_log",
    "service",
    "settings",
    "signals",
    "state",
    "timeout",
]
