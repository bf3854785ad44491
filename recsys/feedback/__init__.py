"""The feedback store: what listeners did and were shown, their pseudonyms, exports and erasures.

Modules
-------
events
    The feedback event contract (``FeedbackEvent``, ``parse_events``, ``events_to_frame``).
store
    The durable feedback store (SQLite WAL or PostgreSQL): events, served lists, erasure audit;
    ``feedback_url`` (the store's one default URL).
tables
    The store's tables and engines.
records
    The store's served-list log and listeners' ratings.
announcements
    Changes every replica follows (reload tag, experiment, dislike counter), with PostgreSQL NOTIFY.
pseudonyms
    Keyed-hash pseudonyms that stand for user ids in logs, reports and audit rows.
exports
    The export cursor and the ``events-*.parquet`` files each retraining run wrote.
erasure_jobs
    The store's erasure jobs (pending until no copy is left) and model revocations.
erasure_steps
    Erasure jobs honoured on the retraining path: exports, cached copies, every model version, verified.

Nothing here imports Prefect or BentoML.
"""

__all__ = [
    "announcements",
    "erasure_jobs",
    "erasure_steps",
    "events",
    "exports",
    "pseudonyms",
    "records",
    "store",
    "tables",
]
