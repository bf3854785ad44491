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

from prefect import task
from prefect.cache_policies import NO_CACHE

from recsys.serving.admin_client import AdminClient
from recsys.serving.settings import ADMIN_TOKEN_ENV

TIMEOUT_S = 30.0


def admin_token(block: str | None = None) -> str | None:
    """The admin token: the value of the Prefect ``Secret`` block ``block``, else ``$RECSYS_ADMIN_TOKEN``."""
    if block:
        from prefect.blocks.system import Secret

        secret: Secret[str] = Secret.load(block)  # type: ignore[assignment]
        return str(secret.get())
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def _client(service_url: str, block: str | None) -> AdminClient:
    return AdminClient(service_url, admin_token(block) or "", timeout_s=TIMEOUT_S)


@task(name="reload-service", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def reload_service(service_url: str, admin_token_block: str | None = None) -> int:
    """``POST {service_url}/admin/reload`` with the admin token; returns the HTTP status (a refusal
    raises, naming it)."""
    return _client(service_url, admin_token_block).reload().status


@task(name="stop-experiment", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def stop_experiment(service_url: str, admin_token_block: str | None = None) -> int:
    """``POST {service_url}/admin/experiment`` with mode off; fails on a 4xx/5xx answer."""
    return _client(service_url, admin_token_block).stop_experiment().status


@task(name="publish-champion", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish(
    tag: str, feedback_url: str, dataset: str | None = None, exchange: str | None = None
) -> dict[str, Any]:
    """Export the new champion into the model exchange (several hosts) and announce it in the feedback
    database, so every replica on every host loads it without a call (:mod:`recsys.registry.publishing`)."""
    from recsys.registry.publishing import publish_champion

    return publish_champion(tag, feedback_url, dataset, Path(exchange) if exchange else None)
