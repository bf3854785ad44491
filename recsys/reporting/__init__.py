"""Reporting: documents for people, rendered from the pipeline's outputs (never an input to a stage).

Modules
-------
eda
    The ``eda`` stage: plots, CSV curves, HTML and bias signals of the prepared tables.
eda_stats
    The analysis's numbers (long tail, Gini, mainstreaminess, tags, audio, joins).
eda_plots
    Pure plotting functions.
model_card
    ``docs/model_card.md`` from ``metrics/`` and ``params.yaml`` (``recsys model-card``).
card_sections
    The card's result, fairness and mitigation sections.
song_card
    The song catalogue's own card sections (intended use, data, limitations) and wording.
formatting
    Names, number formats, tables and metrics-file readers shared by the card and the report.
catalogue_map
    A map of the catalogue: learned embeddings in two dimensions, by popularity.
html_parts
    Pieces of the self-contained HTML documents: inline figures, tables, the page style.
ratings
    The listeners' 1-5 ratings of their lists, by week.
slides
    ``recsys report --slides``: the latest run as a self-contained HTML deck.
stakeholder
    The self-contained stakeholder HTML page (``recsys report``).
run_summary
    A training run's report paths and closing paragraph.
"""

__all__ = [
    "card_sections",
    "catalogue_map",
    "eda",
    "eda_plots",
    "eda_stats",
    "formatting",
    "html_parts",
    "model_card",
    "ratings",
    "run_summary",
    "slides",
    "song_card",
    "stakeholder",
]
