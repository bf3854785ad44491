"""Monitoring: how the listening drifted from training and how popular the served lists are.

Modules
-------
drift
    Evidently drift of listening: the training reference against the current window.
served_bias
    Popularity bias of served lists and of the champion's own lists.
decisions
    The trigger decision (drift share, popularity lift, new feedback) and the monitoring report.
workspace
    The Evidently workspace: every monitoring run's snapshot, for the monitoring UI.

Nothing here imports Prefect or BentoML; :mod:`flows.monitoring` wires these together.
"""

__all__ = [
    "decisions",
    "drift",
    "served_bias",
    "workspace",
]
