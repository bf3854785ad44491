"""Who may call what: the service's callers, the policy of every route, and the one place rights are checked.

Callers (``docs/security.md`` has the threat model):

- **anonymous**: anyone who reaches the port, the listeners' web page among them. Public routes, and a
  listener's own routes only for an *anonymous page id* (:data:`ANONYMOUS_ID`: ``web-`` and a random UUID the
  page makes and keeps in that browser): holding one is the proof of being its listener, and nobody can
  guess another's. Anonymous writes are rate-limited per worker (:mod:`recsys.serving.limits`).
- **client**: the platform's backend, which knows its users and holds a client token (``X-Client-Token``, one
  of ``RECSYS_CLIENT_TOKENS``): a listener's routes for any user id.
- **admin**: the operator (``X-Admin-Token`` = ``RECSYS_ADMIN_TOKEN``): everything, the admin routes
  included.

A wrong token is refused (403), never taken as anonymous. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from enum import StrEnum

from starlette.requests import Request

from recsys.serving.http import ADMIN_HEADER, HTTPError, check_origin
from recsys.serving.runtime import Runtime

CLIENT_HEADER = "x-client-token"
ANONYMOUS_ID = re.compile(r"web-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The listener ids the web page makes (``web-`` and a random version-4 UUID, lower case)."""


class Access(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"
    """Anyone: nothing about a listener is read or written."""
    LISTENER = "listener"
    """A listener's own data: an anonymous page id without a token, any id with a client or admin token."""
    ADMIN = "admin"
    """The operator only (admin token)."""


class Caller(StrEnum):
    """Who is calling, by the token they hold."""

    ANONYMOUS = "anonymous"
    CLIENT = "client"
    ADMIN = "admin"


ROUTES: dict[tuple[str, str], Access] = {
    ("GET", "/"): Access.PUBLIC,
    ("GET", "/static"): Access.PUBLIC,
    ("GET", "/favicon.ico"): Access.PUBLIC,
    ("GET", "/openapi.json"): Access.PUBLIC,
    ("GET", "/docs"): Access.PUBLIC,
    ("GET", "/model"): Access.PUBLIC,
    ("GET", "/search"): Access.PUBLIC,
    ("POST", "/similar"): Access.PUBLIC,
    ("POST", "/recommend"): Access.LISTENER,
    ("POST", "/recommend/new-listener"): Access.LISTENER,
    ("POST", "/feedback"): Access.LISTENER,
    ("POST", "/ratings"): Access.LISTENER,
    ("GET", "/users/{user_id}/feedback"): Access.LISTENER,
    ("DELETE", "/users/{user_id}/feedback"): Access.LISTENER,
    ("POST", "/admin/reload"): Access.ADMIN,
    ("GET", "/admin/experiment"): Access.ADMIN,
    ("POST", "/admin/experiment"): Access.ADMIN,
}
"""The policy of every route of the app (a test checks that no route is missing). BentoML's own ``/livez``,
``/readyz`` and ``/metrics`` are public: probes, and counters labelled by route template, never by user."""


def caller(request: Request, runtime: Runtime) -> Caller:
    """Who is calling, by their token.

    Raises
    ------
    HTTPError
        403 when a token is given but wrong (or admin endpoints are disabled and the admin header is sent).
    """
    admin = request.headers.get(ADMIN_HEADER)
    if admin is not None:
        expected = runtime.settings.admin_token
        if not expected or not hmac.compare_digest(admin.encode(), expected.encode()):
            raise HTTPError(403, f"wrong {ADMIN_HEADER}")
        return Caller.ADMIN
    client = request.headers.get(CLIENT_HEADER)
    if client is not None:
        if not any(
            hmac.compare_digest(client.encode(), token.encode()) for token in runtime.settings.client_tokens
        ):
            raise HTTPError(403, f"wrong {CLIENT_HEADER}")
        return Caller.CLIENT
    return Caller.ANONYMOUS


def authorize_listener(request: Request, runtime: Runtime, user_ids: Iterable[str | None]) -> Caller:
    """The caller, once they may act for every one of ``user_ids`` (None: no listener named).

    Raises
    ------
    HTTPError
        401 when an anonymous caller names a user id that is not an anonymous page id (naming the id's
        position, never echoing other ids), 403 for a wrong token or a foreign origin.
    """
    check_origin(request, runtime)
    who = caller(request, runtime)
    if who is not Caller.ANONYMOUS:
        return who
    for user in user_ids:
        if user is not None and not ANONYMOUS_ID.fullmatch(user):
            raise HTTPError(
                401,
                "only an anonymous page id (web-<uuid>) may be used without a token: acting for another "
                f"listener needs the platform's {CLIENT_HEADER} (or the {ADMIN_HEADER})",
                [{"field": "user_id", "message": "not an anonymous page id"}],
                {"WWW-Authenticate": "Token"},
            )
    return who
