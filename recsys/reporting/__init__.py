"""Reporting: documents for people, rendered from the pipeline's outputs (never an input to a stage).

Modules
-------
eda
    Exploratory analysis of the prepared tables (``eda`` stage): plots, HTML, bias signals.
model_card
    ``docs/model_card.md`` from ``metrics/`` and ``params.yaml`` (``recsys model-card``).
stakeholder
    The self-contained stakeholder HTML page (``recsys report``).
"""

__all__ = ["eda", "model_card", "stakeholder"]
