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
    Change counters the workers share (reload, dislike): a local folder and the store's announcements.
feedback_follower
    Each worker's view of the feedback store: every listener's dislikes in memory, erasures, revocations.
session
    Within the session: each listener's newest events in memory; their vector moved by them on the next list.
exploration
    A share of lists shows long-tail artists the model would not; every shown item's propensity is logged.
served_log
    The sampled, batched log of served lists.
schemas, openapi
    Request and response models; the OpenAPI document.
name_search
    Fuzzy name search over the catalogue.
experiment
    The experiment a service runs: the challenger beside the champion, each listener's arm.
admin_client
    The one client of the admin API (reload, experiment), for the flows and the command lines.
http
    HTTP plumbing of the handlers: errors as answers, JSON in and out, admin checks.
user_data
    What the service stores about a listener, shown to them and erased on request.
route_metrics, timeout
    Request metrics labelled by route; a request timeout that cancels its timer.
"""

__all__ = [
    "access",
    "admin_client",
    "app",
    "experiment",
    "exploration",
    "feedback_follower",
    "http",
    "limits",
    "loading",
    "logic",
    "name_search",
    "openapi",
    "route_metrics",
    "runtime",
    "schemas",
    "served_log",
    "service",
    "session",
    "settings",
    "signals",
    "state",
    "timeout",
    "user_data",
]
