"""Online experiments: a challenger beside the champion on live traffic, measured and decided.

Modules
-------
design
    The three designs (shadow, A/B, interleaving), their settings and the listener's arm.
report
    An experiment measured from the feedback store, with its decision (wins, loses, needs traffic).
replay
    A challenger's like rate estimated from the exploring service's log (IPS, SNIPS), without showing it.
simulation
    Simulated listeners replaying their held-out future: the power of a design before it runs.

The service's side is :mod:`recsys.serving.experiment`; the decision runs in :mod:`flows.experiment`.
"""

__all__ = [
    "design",
    "replay",
    "report",
    "simulation",
]
