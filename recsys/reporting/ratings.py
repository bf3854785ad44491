"""The listeners' 1-5 ratings of their lists ("How good are these recommendations?"), by week, for the
stakeholder report and the deck."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from recsys.reporting.formatting import fmt
from recsys.reporting.html_parts import figure_html, figure_png, html_table


def weekly_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Ratings per ISO week (weeks starting Monday, UTC): ``week``, ``ratings``, ``mean``, ``good_share``
    (the share rated 4 or 5), oldest first."""
    stamps = pd.to_datetime(ratings["timestamp"], utc=True)
    week = (stamps.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time).dt.date
    grouped = ratings.assign(week=week, good=ratings["rating"] >= 4).groupby("week")
    table = grouped.agg(ratings=("rating", "size"), mean=("rating", "mean"), good_share=("good", "mean"))
    return table.reset_index().sort_values("week", ignore_index=True)


def ratings_figure(weekly: pd.DataFrame) -> Figure:
    """The weekly mean rating (1-5), each point labelled with its number of ratings."""
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.subplots()
    x = [str(week) for week in weekly["week"]]
    ax.plot(x, weekly["mean"], marker="o", color="#3b6ea5")
    for xi, mean, n in zip(x, weekly["mean"], weekly["ratings"], strict=True):
        ax.annotate(f"n={n}", (xi, mean), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_ylim(1, 5.4)
    ax.set_ylabel("mean rating (1-5)")
    ax.set_title("How good are these recommendations? Listeners' answers by week")
    return fig


def ratings_section(ratings: pd.DataFrame | None) -> str:
    title = "<h2>What listeners said</h2>"
    if ratings is None or ratings.empty:
        return title + (
            "<p class='muted'>No ratings yet: the page asks \"How good are these recommendations?\" (1-5) "
            "under each list, and answering is optional.</p>"
        )
    weekly = weekly_ratings(ratings)
    good = float((ratings["rating"] >= 4).mean())
    lead = (
        f"<p>{fmt(len(ratings))} ratings, mean {float(ratings['rating'].mean()):.2f} of 5; "
        f"{good:.0%} rated the list 4 or 5. Only listeners who chose to answer are counted.</p>"
    )
    rows = [
        [str(r.week), fmt(r.ratings), f"{float(r.mean):.2f}", f"{float(r.good_share):.0%}"]
        for r in weekly.itertuples()
    ]
    table = html_table(["week of", "ratings", "mean (1-5)", "rated 4-5"], rows)
    return title + lead + figure_html(figure_png(ratings_figure(weekly)), "Mean rating by week") + table
