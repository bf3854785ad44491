"""The service's settings, read once from the environment (``ServingSettings.from_env``)."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from recsys import registry
from recsys.feedback.store import feedback_url
from recsys.registry.exchange import exchange_from_env
from recsys.serving.exploration import EXPLORE_SHARE_ENV

ADMIN_TOKEN_ENV = "RECSYS_ADMIN_TOKEN"
CLIENT_TOKENS_ENV = "RECSYS_CLIENT_TOKENS"
"""Comma-separated tokens of the platform's backends (``X-Client-Token``): several, so one can be rotated."""
RUNTIME_DIR_ENV = "RECSYS_RUNTIME_DIR"
ORIGINS_ENV = "RECSYS_ALLOWED_ORIGINS"
SERVED_LOG_MAX_PER_S_ENV = "RECSYS_SERVED_LOG_MAX_PER_S"
"""Most served lists a worker logs per second (float > 0, default 50)."""
SERVED_LOG_SAMPLE_ENV = "RECSYS_SERVED_LOG_SAMPLE"
"""Share of answered recommendation requests logged to the store (float 0-1, default 1; 0 turns it off)."""


class ServingSettings(BaseModel):
    """Settings of one service process, read from the environment when the service starts."""

    model_config = ConfigDict(frozen=True)

    home: Path
    feedback_url: str
    admin_token: str | None
    runtime_dir: Path
    client_tokens: tuple[str, ...] = ()
    model_exchange: Path | None = None
    dataset: str = registry.DEFAULT_DATASET
    allowed_origins: tuple[str, ...] = ()
    dislike_sync_s: float = Field(5.0, gt=0.0)
    dislike_full_sync_s: float = Field(600.0, gt=0.0)
    session_window_h: float = Field(168.0, gt=0.0)
    """How far back a worker reads listeners' events for their sessions (a full read every
    ``dislike_full_sync_s``); events older than the served model never count anyway."""
    feedback_retry_s: float = 5.0
    served_log_sample: float = Field(1.0, ge=0.0, le=1.0)
    served_log_flush_s: float = Field(1.0, gt=0.0)
    served_log_capacity: int = Field(20_000, ge=1)
    served_log_max_per_s: float = Field(50.0, gt=0.0)
    explore_share: float | None = Field(None, ge=0.0, le=1.0)
    """Share of known listeners' lists that explore (``RECSYS_EXPLORE_SHARE``); None: the model's own."""

    @classmethod
    def from_env(cls) -> ServingSettings:
        """``BENTOML_HOME``, ``RECSYS_FEEDBACK_URL``, ``RECSYS_DATASET``, ``RECSYS_ADMIN_TOKEN``,
        ``RECSYS_CLIENT_TOKENS``, ``RECSYS_RUNTIME_DIR``, ``RECSYS_MODEL_EXCHANGE`` (several hosts), ...

        The runtime folder defaults to one per (model store, feedback store, data set) and user under the temp
        folder, so the workers of one service share it and two other services (the artist and the song service
        of one project, say) do not; it is private to the user
        (:func:`recsys.serving.signals.private_folder`).
        """
        home = registry.bentoml_home()
        url = feedback_url()
        dataset = os.environ.get(registry.DATASET_ENV, "").strip() or registry.DEFAULT_DATASET
        digest = hashlib.sha256(f"{home}\n{url}\n{dataset}".encode()).hexdigest()[:16]
        runtime = os.environ.get(RUNTIME_DIR_ENV, "").strip() or os.path.join(
            tempfile.gettempdir(), f"recsys-serving-{os.getuid()}-{digest}"
        )
        origins = tuple(
            o.strip().rstrip("/") for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip()
        )
        token = os.environ.get(ADMIN_TOKEN_ENV) or None
        clients = tuple(t.strip() for t in os.environ.get(CLIENT_TOKENS_ENV, "").split(",") if t.strip())
        return cls(
            home=home,
            feedback_url=url,
            dataset=dataset,
            admin_token=token,
            client_tokens=clients,
            runtime_dir=Path(runtime),
            model_exchange=exchange_from_env(),
            allowed_origins=origins,
            served_log_sample=served_log_sample_from_env(),
            served_log_max_per_s=served_log_max_per_s_from_env(),
            explore_share=share_from_env(EXPLORE_SHARE_ENV),
        )


def share_from_env(name: str) -> float | None:
    """The share (a number between 0 and 1) in the environment variable ``name``; None when unset or blank.

    Raises
    ------
    ValueError
        When the value is not a number between 0 and 1.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        share = float(raw)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:  # also refuses nan
        raise ValueError(f"{name} must be a number between 0 and 1, got {raw!r}")
    return share


def served_log_sample_from_env() -> float:
    """The sampling rate in ``RECSYS_SERVED_LOG_SAMPLE`` (1 when unset or blank; :func:`share_from_env`)."""
    rate = share_from_env(SERVED_LOG_SAMPLE_ENV)
    return 1.0 if rate is None else rate


def served_log_max_per_s_from_env() -> float:
    """The cap in ``RECSYS_SERVED_LOG_MAX_PER_S`` (lists per second and worker; 50 when unset or blank).

    Raises
    ------
    ValueError
        When the value is not a positive number.
    """
    raw = os.environ.get(SERVED_LOG_MAX_PER_S_ENV, "").strip()
    try:
        cap = float(raw) if raw else 50.0
    except ValueError:
        cap = math.nan
    if not cap > 0:  # also refuses nan
        raise ValueError(f"{SERVED_LOG_MAX_PER_S_ENV} must be a positive number, got {raw!r}")
    return cap
