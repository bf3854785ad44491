"""Retraining on listener feedback: a challenger from the champion's data plus what listeners did since.

Modules
-------
merge
    Feedback events -> training weights; warm-start or full retraining.
challenger
    A challenger from feedback, measured fairly: split alignment, holdout, protected test pairs.
promotion
    The feedback gate with the erasure override, and packaging the winner from the objects in memory.
run
    One run's record (``RetrainingRun``): the export, the erasure steps, the challenger, the decision.
closed_loop
    Simulated listeners against the running service: the closed loop measured.

Nothing here imports Prefect or BentoML; :mod:`flows.retraining` wires these together.
"""

__all__ = [
    "challenger",
    "closed_loop",
    "merge",
    "promotion",
    "run",
]
