"""The plots of the exploratory analysis: pure functions that take DataFrames and return
:class:`matplotlib.figure.Figure` objects built without ``pyplot`` (no global figure registry, GUI backend
or ``plt.close``)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from recsys.columns import AUDIO_FEATURES, Col
from recsys.reporting.eda_stats import (
    TOP_FRACTION,
    audio_correlations,
    gini,
    join_coverage,
    lorenz_curve,
    mainstreaminess_histogram,
    rank_frequency,
    top_share,
    top_tags,
    user_mainstreaminess,
)

_DPI = 110


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_long_tail(interactions: pd.DataFrame) -> Figure:
    """Log-log rank-frequency plot of interactions per artist and per user."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for by, label in ((Col.ITEM, "artists (listeners each)"), (Col.USER, "users (artists each)")):
        freq = rank_frequency(interactions, by)
        ax.loglog(freq["rank"], freq["count"], label=label, linewidth=1.5)
    n_items = interactions[Col.ITEM].nunique()
    if n_items:
        ax.axvline(max(1, math.ceil(TOP_FRACTION * n_items)), color="grey", linestyle=":", label="top 1 %")
    ax.set_xlabel("rank")
    ax.set_ylabel("interactions")
    ax.set_title("Long tail: interactions per artist and per user")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    return fig


def plot_listen_counts(interactions: pd.DataFrame, bins: int = 50) -> Figure:
    """Histogram of listen counts per (user, artist) pair on log-spaced bins and log axes."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    plays = interactions[Col.PLAYS].to_numpy(np.float64)
    plays = plays[plays > 0]
    if len(plays):
        edges = np.geomspace(plays.min(), max(plays.max(), plays.min() * 10), bins + 1)
        ax.hist(plays, bins=edges.tolist(), color="tab:blue", alpha=0.8)
        median = float(np.median(plays))
        ax.axvline(median, color="black", linestyle="--", label=f"median {median:,.0f}")
        ax.legend()
        ax.set_yscale("log")
    else:
        _empty(ax, "no listen counts")
    ax.set_xscale("log")
    ax.set_xlabel("listen count per (user, artist)")
    ax.set_ylabel("pairs")
    ax.set_title("Listen-count distribution")
    return fig


def plot_top_tags(item_tags: pd.DataFrame, n: int = 20) -> Figure:
    """Horizontal bars of the ``n`` tags applied to the most artists."""
    fig = Figure(figsize=(7, 0.28 * n + 1.5), layout="constrained")
    ax = fig.add_subplot()
    top = top_tags(item_tags, n)
    if len(top):
        ax.barh(top[Col.TAG].astype(str)[::-1], top["n_artists"][::-1], color="tab:green")
    else:
        _empty(ax, "no tags")
    ax.set_xlabel("artists")
    ax.set_ylabel("tag")
    ax.set_title(f"Top {n} tags by number of artists")
    return fig


def plot_audio_distributions(items: pd.DataFrame, bins: int = 30) -> Figure:
    """Small multiples: one histogram per audio feature over the artists that have a Spotify profile."""
    ncols = 5
    nrows = math.ceil(len(AUDIO_FEATURES) / ncols)
    fig = Figure(figsize=(3 * ncols, 2.4 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, AUDIO_FEATURES, strict=False):
        values = items[name].to_numpy(np.float64) if name in items.columns else np.array([])
        values = values[np.isfinite(values)]
        if len(values):
            ax.hist(values, bins=bins, color="tab:purple", alpha=0.8)
        else:
            _empty(ax, "no data")
        ax.set_title(name)
        ax.set_ylabel("artists")
    for ax in axes[len(AUDIO_FEATURES) :]:
        ax.set_visible(False)
    has_audio = items[[n for n in AUDIO_FEATURES if n in items.columns]].notna().any(axis=1).sum()
    fig.suptitle(f"Audio-feature distributions ({has_audio:,} of {len(items):,} artists have a profile)")
    return fig


def plot_audio_correlations(items: pd.DataFrame) -> Figure:
    """Heatmap of the Pearson correlations between audio features, annotated with the values."""
    corr = audio_correlations(items)
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="Pearson r")
    ax.set_xticks(range(len(corr.columns)), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(corr.index)), corr.index)
    for (i, j), value in np.ndenumerate(corr.to_numpy()):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    if not np.isfinite(corr.to_numpy()).any():
        _empty(ax, "not enough artists with audio features")
    ax.set_title("Audio-feature correlations (artist profiles)")
    return fig


def plot_join_coverage(joins: Mapping[str, Any]) -> Figure:
    """Bars of the share matched by each join in the quality report, labelled ``matched / total``."""
    table = join_coverage(joins)
    fig = Figure(figsize=(8, 0.5 * max(len(table), 2) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    if len(table):
        shares = table["share"].fillna(0.0) * 100
        ax.barh(table["join"][::-1], shares[::-1], color="tab:orange")
        for pos, row in enumerate(table.iloc[::-1].itertuples(index=False)):
            known = np.isfinite(row.total)
            label = f"{row.matched:,.0f} / {row.total:,.0f}" if known else f"{row.matched:,.0f} (no total)"
            ax.text((row.share * 100 if known else 0) + 1, pos, label, va="center", fontsize=8)
    else:
        _empty(ax, "no join counts in quality.json")
    ax.set_xlim(0, 115)
    ax.set_xlabel("matched (%)")
    ax.set_title("Join coverage")
    return fig


def plot_lorenz(interactions: pd.DataFrame) -> Figure:
    """Lorenz curves of artist popularity (listeners and plays) with their Gini coefficients."""
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.add_subplot()
    popularity = interactions.groupby(Col.ITEM).size().to_numpy(np.float64)
    plays = interactions.groupby(Col.ITEM)[Col.PLAYS].sum().to_numpy(np.float64)
    for values, label in ((popularity, "interactions"), (plays, "plays")):
        x, y = lorenz_curve(values)
        ax.plot(x, y, label=f"{label} (Gini {gini(values):.3f}, top 1 % hold {top_share(values):.1%})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="equality")
    ax.set_xlabel("share of artists (least to most popular)")
    ax.set_ylabel("cumulative share")
    ax.set_title("Popularity concentration (Lorenz curve)")
    ax.legend(loc="upper left")
    return fig


def plot_mainstreaminess(interactions: pd.DataFrame, bins: int = 20) -> Figure:
    """Histogram of user mainstreaminess (mean popularity percentile of each user's artists)."""
    scores = user_mainstreaminess(interactions)
    hist = mainstreaminess_histogram(scores, bins)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(hist["mainstreaminess"], hist["users"], width=1.0 / bins, color="tab:red", alpha=0.8)
    finite = scores[np.isfinite(scores)]
    if len(finite):
        median = float(np.median(finite))
        ax.axvline(median, color="black", linestyle="--", label=f"median {median:.2f}")
        ax.legend()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mainstreaminess (mean popularity percentile of a user's artists)")
    ax.set_ylabel("users")
    ax.set_title("User mainstreaminess")
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()
