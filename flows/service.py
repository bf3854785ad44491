"""The flows' calls to the running services: announce a new champion to every replica, reload one service
after a promotion, stop an experiment.

The admin token never travels as a flow parameter (Prefect stores parameters in its database and shows them
in its UI): a task reads it when it calls, from a Prefect ``Secret`` block named by the flow's
``admin_token_block`` parameter (a name, not a secret), else from ``RECSYS_ADMIN_TOKEN`` in the environment
of the process running the flow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from recsys.errors import RecsysError

ADMIN_TOKEN_ENV = "RECSYS_ADMIN_TOKEN"
TIMEOUT_S = 30.0


def admin_token(block: str | None = None) -> str | None:
    """The admin token: the value of the Prefect ``Secret`` block ``block``, else ``$RECSYS_ADMIN_TOKEN``."""
    if block:
        from prefect.blocks.system import Secret

        secret: Secret[str] = Secret.load(block)  # type: ignore[assignment]
        return str(secret.get())
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def _headers(block: str | None) -> dict[str, str]:
    token = admin_token(block)
    return {"X-Admin-Token": token} if token else {}


@task(name="reload-service", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def reload_service(service_url: str, admin_token_block: str | None = None) -> int:
    """``POST {service_url}/admin/reload`` with the admin token; returns the HTTP status."""
    response = httpx.post(
        f"{service_url.rstrip('/')}/admin/reload", headers=_headers(admin_token_block), timeout=TIMEOUT_S
    )
    if response.status_code >= 400:
        raise RecsysError(
            f"{service_url} refused the reload: HTTP {response.status_code} {response.text[:200]}"
        )
    return response.status_code


@task(name="stop-experiment", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def stop_experiment(service_url: str, admin_token_block: str | None = None) -> int:
    """``POST {service_url}/admin/experiment`` with mode off; fails on a 4xx/5xx answer."""
    url = f"{service_url.rstrip('/')}/admin/experiment"
    answer = httpx.post(url, json={"mode": "off"}, headers=_headers(admin_token_block), timeout=TIMEOUT_S)
    answer.raise_for_status()
    return answer.status_code


@task(name="publish-champion", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish(
    tag: str, feedback_url: str, dataset: str | None = None, exchange: str | None = None
) -> dict[str, Any]:
    """Export the new champion into the model exchange (several hosts) and announce it in the feedback
    database, so every replica on every host loads it without a call (:mod:`recsys.loop.publishing`)."""
    from recsys.loop.publishing import publish_champion

    return publish_champion(tag, feedback_url, dataset, Path(exchange) if exchange else None)
