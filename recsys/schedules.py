"""The deployments' names and schedules (cron expressions in UTC), read by :mod:`flows.deployments` and by the
reference topology (:mod:`recsys.cluster.services`), which registers the same deployments on its worker."""

from __future__ import annotations

NIGHTLY_CRON = "0 2 * * *"
HOURLY_CRON = "0 * * * *"
FEEDBACK_CRON = "30 1 * * *"
SEARCH_CRON = "0 4 * * *"
TRAINING_DEPLOYMENT = "nightly-retraining"
MONITORING_DEPLOYMENT = "hourly-monitoring"
FEEDBACK_DEPLOYMENT = "nightly-feedback-retraining"
SEARCH_DEPLOYMENT = "nightly-tuning"
RETRAIN_DEBOUNCE_S = 3600
"""A burst of monitoring events (several runs, several thresholds) starts one retraining per hour at most: the
trigger fires on the first event and ignores the rest of this window (Prefect's eager debouncing)."""
