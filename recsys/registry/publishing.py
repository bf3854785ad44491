"""After a promotion: make the new champion reach every service replica, on every host, without a call to
each (:mod:`recsys.serving.signals`).

On several hosts (``RECSYS_MODEL_EXCHANGE`` set) the champion is first exported into the model exchange
(:mod:`recsys.registry.exchange`); then its tag is announced in the feedback database every replica follows.
Each replica loads the announced tag within about a second (importing it from the exchange first), so a
replica that missed the moment, or was down, serves the champion as soon as it looks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recsys import registry
from recsys.feedback.announcements import RELOAD, announcement_key
from recsys.feedback.store import FeedbackStore
from recsys.feedback.tables import store_exists
from recsys.registry import exchange as model_exchange

_LOG = logging.getLogger(__name__)


def publish_champion(
    tag: str,
    feedback_url: str,
    dataset: str | None = None,
    exchange: Path | None = None,
    home: str | Path | None = None,
) -> dict[str, Any]:
    """Export ``tag`` into ``exchange`` (default ``$RECSYS_MODEL_EXCHANGE``; none: one host) and announce it
    as the model to serve in the store at ``feedback_url``. ``home``: the model store (default
    ``$BENTOML_HOME``).

    A SQLite store that does not exist yet is left alone: no service has used it, so none needs telling
    (and a training run must not create it).

    Returns
    -------
    dict
        ``{"tag", "exchange" (the archive, or None), "announced" (the announcement's version, or None)}``.

    Raises
    ------
    FeedbackUnavailableError
        The database cannot be reached: the replicas keep their model until the next announcement (the
        promotion itself stands; rerun, or ``POST /admin/reload`` on each replica).
    """
    exchange = exchange if exchange is not None else model_exchange.exchange_from_env()
    archive = model_exchange.push(tag, exchange, home, dataset) if exchange is not None else None
    if not store_exists(feedback_url):
        return {"tag": tag, "exchange": str(archive) if archive else None, "announced": None}
    with FeedbackStore(feedback_url, timeout_s=5.0, query_timeout_s=10.0) as store:
        version = store.announce(announcement_key(registry.model_name(dataset), RELOAD), tag)
    _LOG.info("announced %s as the model to serve (announcement %d)", tag, version)
    return {"tag": tag, "exchange": str(archive) if archive else None, "announced": version}
