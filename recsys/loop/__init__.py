"""The feedback loop: what listeners did, what they were shown, and how that reaches the next model.

Modules
-------
feedback
    The durable feedback store (SQLite WAL or PostgreSQL): events, served lists, erasure audit.
monitoring
    Evidently drift of listening and popularity bias of served lists; the trigger decision.
retrain
    Feedback events -> training weights; the recent-feedback holdout; warm-start retraining.
erasure
    A deleted listener's feedback kept out of exported files and models.
simulation
    Simulated listeners against the running service: the closed loop measured.

Nothing here imports Prefect or BentoML; the flows in ``flows/`` wire these together.
"""

__all__ = ["erasure", "feedback", "monitoring", "retrain", "simulation"]
