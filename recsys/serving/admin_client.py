"""The one client of the service's admin API (``X-Admin-Token``): the flows and the command lines call
through it, so every caller sends the token the same way and reports a refusal the same way.

>>> AdminClient("http://127.0.0.1:3000/", token=None).url("reload")
'http://127.0.0.1:3000/admin/reload'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from recsys.errors import RecsysError
from recsys.serving.settings import ADMIN_TOKEN_ENV

ADMIN_HEADER = "X-Admin-Token"


@dataclass(frozen=True)
class AdminAnswer:
    """A 2xx answer of the admin API: its HTTP status and JSON body (empty when it has none)."""

    status: int
    body: dict[str, Any]


class AdminClient:
    """``POST {service_url}/admin/...`` with the admin token (``$RECSYS_ADMIN_TOKEN`` when not given).

    A service that does not answer, or answers 4xx/5xx, raises :class:`RecsysError` naming the service,
    the HTTP status and the start of its answer.
    """

    def __init__(self, service_url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.service_url = service_url.rstrip("/")
        self.token = token if token is not None else (os.environ.get(ADMIN_TOKEN_ENV) or None)
        self.timeout_s = timeout_s

    def url(self, route: str) -> str:
        """The address of the admin ``route``."""
        return f"{self.service_url}/admin/{route}"

    def post(self, route: str, body: dict[str, Any] | None = None, what: str = "the call") -> AdminAnswer:
        """``POST /admin/<route>`` with ``body``; the answer's status and JSON body."""
        import httpx

        headers = {ADMIN_HEADER: self.token} if self.token else {}
        try:
            answer = httpx.post(self.url(route), json=body, headers=headers, timeout=self.timeout_s)
        except httpx.TransportError as err:
            raise RecsysError(f"{self.service_url}: the service does not answer ({err})") from err
        if answer.status_code >= 400:
            raise RecsysError(
                f"{self.service_url} refused {what}: HTTP {answer.status_code} {answer.text[:300]}"
            )
        try:
            payload = answer.json()
        except ValueError:
            payload = None
        return AdminAnswer(answer.status_code, dict(payload) if isinstance(payload, dict) else {})

    def reload(self) -> AdminAnswer:
        """Load the registry's champion now (``POST /admin/reload``)."""
        return self.post("reload", what="the reload")

    def experiment(self, design: dict[str, Any]) -> AdminAnswer:
        """Start, change or stop (``{"mode": "off"}``) the online experiment (``POST /admin/experiment``)."""
        return self.post("experiment", design, what="the experiment")

    def stop_experiment(self) -> AdminAnswer:
        """Stop the running experiment."""
        return self.experiment({"mode": "off"})
