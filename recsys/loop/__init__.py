"""The feedback loop: what listeners did, what they were shown, and how that reaches the next model.

Modules
-------
events
    The feedback event contract (``FeedbackEvent``, ``parse_events``, ``events_to_frame``).
feedback
    The durable feedback store (SQLite WAL or PostgreSQL): events, served lists, erasure audit;
    ``feedback_url`` (the store's one default URL).
feedback_db
    The store's tables and engines.
pseudonyms
    Keyed-hash pseudonyms that stand for user ids in logs, reports and audit rows.
exports
    The export cursor and the ``events-*.parquet`` files each retraining run wrote.
challenger
    A challenger from feedback, measured fairly: split alignment, holdout, protected test pairs.
retrain
    Feedback events -> training weights; warm-start or full retraining.
erasure
    Erasure jobs honoured on the retraining path: exports, cached copies, every model version, verified.
feedback_erasures
    The store's erasure jobs (pending until no copy is left) and model revocations.
feedback_records
    The store's served-list log and listeners' ratings.
drift
    Evidently drift of listening: the training reference against the current window.
served_bias
    Popularity bias of served lists and of the champion's own lists.
monitoring
    The trigger decision and the monitoring report.
simulation
    Simulated listeners against the running service: the closed loop measured.

Nothing here imports Prefect or BentoML; the flows in ``flows/`` wire these together.
"""

__all__ = [
    "challenger",
    "drift",
    "erasure",
    "events",
    "exports",
    "feedback",
    "feedback_db",
    "feedback_erasures",
    "feedback_records",
    "monitoring",
    "pseudonyms",
    "retrain",
    "served_bias",
    "simulation",
]
