"""Exploratory analysis of the prepared tables: long tail, listen counts, tags, audio, joins and bias.

The plotting functions are pure: they take DataFrames and return :class:`matplotlib.figure.Figure`
objects built without ``pyplot``, so no global figure registry, GUI backend or ``plt.close`` is involved.
:func:`write_eda` is the stage entry point; it is the only function that reads or writes files.
Lyrics text never leaves this module: only counts and lengths of it are reported.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from recsys.columns import AUDIO_FEATURES, Col
from recsys.errors import DataError
from recsys.io import atomic_path, write_json, write_text
from recsys.offline.popularity import item_popularity, mainstreaminess

TOP_FRACTION = 0.01
"""The head whose share of listens is reported: the top 1 % of artists."""
LYRICS_CHARS = "lyrics_chars"
"""Derived column of the Evidently item summary: length of an artist's lyrics text (never the text)."""
HAS_LYRICS = "has_lyrics"
"""Boolean column of tracks.parquet (not in :class:`~recsys.columns.Col`)."""
MAINSTREAM_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_DPI = 110


# ---------------------------------------------------------------------------------------------- numbers
def user_item_matrix(interactions: pd.DataFrame) -> sp.csr_matrix:
    """Binary user x item CSR matrix; rows and columns follow the sorted external ids."""
    users, _ = pd.factorize(interactions[Col.USER], sort=True)
    items, _ = pd.factorize(interactions[Col.ITEM], sort=True)
    shape = (int(users.max()) + 1 if len(users) else 0, int(items.max()) + 1 if len(items) else 0)
    ones = np.ones(len(users), dtype=np.float64)
    return sp.csr_matrix((ones, (users, items)), shape=shape)


def rank_frequency(interactions: pd.DataFrame, by: str) -> pd.DataFrame:
    """Interactions per ``by`` (``Col.ITEM`` or ``Col.USER``) sorted descending, with ``rank`` from 1."""
    counts = interactions.groupby(by, sort=True).size().sort_values(ascending=False, kind="stable")
    return pd.DataFrame({"rank": np.arange(1, len(counts) + 1), "count": counts.to_numpy(np.int64)})


def lorenz_curve(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve: cumulative share of items (least to most) vs cumulative share of ``values``."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    total = ordered.sum()
    x = np.arange(len(ordered) + 1, dtype=np.float64) / max(len(ordered), 1)
    y = np.concatenate([[0.0], np.cumsum(ordered) / total]) if total > 0 else x.copy()
    return x, y


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values``: 0 = all equal, towards 1 = one item holds everything.

    Examples
    --------
    >>> gini(np.array([1, 1, 1, 1]))
    0.0
    >>> round(gini(np.array([0, 0, 0, 4])), 2)
    0.75
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(ordered), ordered.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2.0 * (ranks @ ordered) / (n * total) - (n + 1) / n)


def top_share(values: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the total held by the ``ceil(fraction * n)`` largest values (at least one)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    total = ordered.sum()
    if total <= 0:
        return 0.0
    k = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[:k].sum() / total)


def user_mainstreaminess(interactions: pd.DataFrame) -> np.ndarray:
    """Per user (sorted ids): mean popularity percentile of their artists (see recsys.offline.popularity)."""
    return mainstreaminess(user_item_matrix(interactions))


def bias_signals(interactions: pd.DataFrame, fraction: float = TOP_FRACTION) -> dict[str, float | int]:
    """Popularity-bias numbers of the interactions, as JSON-able scalars.

    Each share ranks artists by its own measure: plays for the play share, distinct listeners for the
    interaction share. The Gini coefficients are over artists.

    Parameters
    ----------
    interactions
        Prepared interactions with ``Col.USER``, ``Col.ITEM`` and ``Col.PLAYS``.
    fraction
        Size of the head as a fraction of all artists (rounded up to whole artists).

    Returns
    -------
    dict
        ``top1pct_play_share``, ``top1pct_interaction_share``, ``gini_item_popularity``,
        ``gini_item_plays``, ``mainstreaminess_mean`` and ``mainstreaminess_pXX`` quantiles, and counts.
    """
    matrix = user_item_matrix(interactions)
    popularity = item_popularity(matrix)
    plays = interactions.groupby(Col.ITEM, sort=True)[Col.PLAYS].sum().to_numpy(np.float64)
    scores = mainstreaminess(matrix)
    scores = scores[~np.isnan(scores)]
    signals: dict[str, float | int] = {
        "n_users": int(matrix.shape[0]),
        "n_items": int(matrix.shape[1]),
        "n_interactions": len(interactions),
        "total_plays": int(plays.sum()),
        "top1pct_n_items": max(1, math.ceil(fraction * matrix.shape[1])) if matrix.shape[1] else 0,
        "top1pct_play_share": top_share(plays, fraction),
        "top1pct_interaction_share": top_share(popularity, fraction),
        "gini_item_popularity": gini(popularity),
        "gini_item_plays": gini(plays),
        "mainstreaminess_mean": float(scores.mean()) if len(scores) else float("nan"),
    }
    for q in MAINSTREAM_QUANTILES:
        value = float(np.quantile(scores, q)) if len(scores) else float("nan")
        signals[f"mainstreaminess_p{round(q * 100):02d}"] = value
    return signals


def top_tags(item_tags: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` tags applied to the most artists: columns ``tag``, ``n_artists``, ``n_users``."""
    grouped = item_tags.groupby(Col.TAG, sort=True).agg(
        n_artists=(Col.ITEM, "nunique"), n_users=(Col.COUNT, "sum")
    )
    ordered = grouped.sort_values(["n_artists", "n_users"], ascending=False, kind="stable")
    return ordered.head(n).reset_index()


def audio_correlations(items: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlations between the audio features present in ``items`` (pairwise complete)."""
    present = [name for name in AUDIO_FEATURES if name in items.columns]
    return items[present].astype(np.float64).corr(min_periods=2)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def join_coverage(joins: Mapping[str, Any]) -> pd.DataFrame:
    """Match counts of ``quality.json["joins"]`` paired with their totals.

    A key ``X_matched`` or ``X_with_Y`` is a match count whose total is the key ``X`` (missing totals
    give NaN shares). Returns columns ``join``, ``matched``, ``total``, ``share``.
    """
    rows = []
    for key, value in joins.items():
        matched = _number(value)
        if matched is None:
            continue
        if key.endswith("_matched"):
            base = key.removesuffix("_matched")
        elif "_with_" in key:
            base = key.split("_with_", 1)[0]
        else:
            continue
        total = _number(joins.get(base))
        total = total if total is not None and total > 0 else np.nan
        rows.append(
            {"join": key.replace("_", " "), "matched": matched, "total": total, "share": matched / total}
        )
    return pd.DataFrame(rows, columns=["join", "matched", "total", "share"])


def mainstreaminess_histogram(scores: np.ndarray, bins: int = 20) -> pd.DataFrame:
    """Users per mainstreaminess bin on [0, 1]: columns ``mainstreaminess`` (bin centre) and ``users``."""
    counts, edges = np.histogram(scores[~np.isnan(scores)], bins=bins, range=(0.0, 1.0))
    return pd.DataFrame({"mainstreaminess": (edges[:-1] + edges[1:]) / 2, "users": counts})


# ---------------------------------------------------------------------------------------------- plots
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


# ---------------------------------------------------------------------------------------------- stage
_CAPTIONS = {
    "long_tail": "Interactions per artist and per user by rank (log-log); the dotted line is the top 1 %.",
    "listen_counts": "Listen counts per (user, artist) pair on log-spaced bins.",
    "top_tags": "The 20 tags applied to the most artists.",
    "audio_distributions": "Spotify audio features of the artists that matched Spotify tracks.",
    "audio_correlations": "Pearson correlations between the artists' audio features.",
    "join_coverage": "Share of rows matched by each join (from quality.json).",
    "lorenz": "How concentrated listens are on few artists; Gini 0 = equal, 1 = one artist.",
    "mainstreaminess": "Each user's mean popularity percentile of their artists (1 = only the most popular).",
}


def _read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.exists():
        raise DataError("prepared table not found (run the prepare stage first)", file=str(path))
    frame = pd.read_parquet(path)
    for column in required:
        if column not in frame.columns:
            raise DataError("required column is missing", file=str(path), column=column)
    return frame


def _read_joins(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        joins = json.loads(path.read_text(encoding="utf-8")).get("joins", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"not a JSON object with a 'joins' object: {exc}", file=str(path)) from exc
    return joins if isinstance(joins, dict) else {}


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _write_bytes(path: Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def lorenz_table(interactions: pd.DataFrame, points: int = 1001) -> pd.DataFrame:
    """Lorenz curves of plays and interactions per artist, thinned to about ``points`` rows for plotting."""
    x, by_interactions = lorenz_curve(interactions.groupby(Col.ITEM).size().to_numpy(np.float64))
    _, by_plays = lorenz_curve(interactions.groupby(Col.ITEM)[Col.PLAYS].sum().to_numpy(np.float64))
    keep = np.unique(np.linspace(0, len(x) - 1, min(points, len(x))).round().astype(int))
    return pd.DataFrame(
        {"artist_share": x[keep], "interaction_share": by_interactions[keep], "play_share": by_plays[keep]}
    )


def item_summary_frame(items: pd.DataFrame) -> pd.DataFrame:
    """The item columns fit for a data summary: counts, audio features, genres and lyrics length (no text)."""
    numeric = [Col.N_LISTENERS, Col.TOTAL_PLAYS, Col.N_TRACKS, *AUDIO_FEATURES, Col.N_LYRICS]
    frame = items[[c for c in (*numeric, Col.GENRE, Col.GENRES) if c in items.columns]].copy()
    if Col.LYRICS in items.columns:
        frame[LYRICS_CHARS] = items[Col.LYRICS].fillna("").str.len()
    return frame


def write_items_summary(items: pd.DataFrame, html_path: Path, json_path: Path) -> None:
    """Evidently data summary of :func:`item_summary_frame` saved as HTML and JSON (atomic)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    frame = item_summary_frame(items)
    categorical = [c for c in (Col.GENRE, Col.GENRES) if c in frame.columns]
    numeric = [c for c in frame.columns if c not in categorical]
    frame[numeric] = frame[numeric].astype(np.float64)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    # Columns with no values (audio features before any Spotify match) make Evidently divide 0 by 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        snapshot = Report([DataSummaryPreset()]).run(
            current_data=Dataset.from_pandas(frame, data_definition=definition)
        )
    # Snapshot.save_* silently ignore anything but a str path.
    with atomic_path(html_path) as tmp:
        snapshot.save_html(str(tmp))
    with atomic_path(json_path) as tmp:
        snapshot.save_json(str(tmp))


def _overview(
    interactions: pd.DataFrame, items: pd.DataFrame, item_tags: pd.DataFrame, tracks: pd.DataFrame | None
) -> dict[str, int]:
    overview = {
        "interactions": len(interactions),
        "users": int(interactions[Col.USER].nunique()),
        "artists (items table)": len(items),
        "artists with tags": int(item_tags[Col.ITEM].nunique()),
        "distinct tags": int(item_tags[Col.TAG].nunique()),
    }
    if Col.N_TRACKS in items.columns:
        overview["artists with Spotify tracks"] = int((items[Col.N_TRACKS] > 0).sum())
    if Col.N_LYRICS in items.columns:
        overview["artists with lyrics"] = int((items[Col.N_LYRICS] > 0).sum())
    if tracks is not None:
        overview["Spotify tracks"] = len(tracks)
        overview["tracks with lyrics"] = int(tracks[HAS_LYRICS].fillna(False).astype(bool).sum())
    return overview


def render_html(
    pngs: Mapping[str, bytes], bias: Mapping[str, float | int], overview: Mapping[str, int]
) -> str:
    """One self-contained HTML page: overview and bias tables, then each PNG embedded as base64."""

    def table(rows: Mapping[str, float | int]) -> str:
        cells = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{v:,.4f}</td></tr>"
            if isinstance(v, float)
            else f"<tr><th>{html.escape(k)}</th><td>{v:,}</td></tr>"
            for k, v in rows.items()
        )
        return f"<table>{cells}</table>"

    figures = "".join(
        f'<figure id="{name}"><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}"><figcaption>{html.escape(_CAPTIONS.get(name, name))}'
        "</figcaption></figure>"
        for name, png in pngs.items()
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin-bottom:1em}th,td{border:1px solid #ccc;padding:3px 8px}"
        "th{text-align:left;font-weight:normal}td{text-align:right}img{max-width:100%}"
        "figure{margin:2em 0}figcaption{color:#444}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Exploratory analysis</title>'
        f"<style>{style}</style></head><body><h1>Exploratory analysis of the prepared data</h1>"
        f"<h2>Tables</h2>{table(overview)}<h2>Popularity bias</h2>{table(bias)}"
        '<p>Item table summary: <a href="items_summary.html">items_summary.html</a> (Evidently). '
        "Lyrics appear only as counts and lengths.</p>"
        f"<h2>Plots</h2>{figures}</body></html>"
    )


def _figures(
    interactions: pd.DataFrame, items: pd.DataFrame, item_tags: pd.DataFrame, joins: Mapping[str, Any]
) -> dict[str, Figure]:
    return {
        "long_tail": plot_long_tail(interactions),
        "listen_counts": plot_listen_counts(interactions),
        "top_tags": plot_top_tags(item_tags),
        "audio_distributions": plot_audio_distributions(items),
        "audio_correlations": plot_audio_correlations(items),
        "join_coverage": plot_join_coverage(joins),
        "lorenz": plot_lorenz(interactions),
        "mainstreaminess": plot_mainstreaminess(interactions),
    }


def write_eda(prepared_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run the exploratory analysis of ``prepared_dir`` and write its plots and reports to ``out_dir``.

    Reads interactions, items and item_tags (required) and tracks.parquet and quality.json (optional).
    Writes one PNG per plot, ``eda.html`` (self-contained), ``bias_signals.json``, CSV files for
    ``dvc plots`` (``long_tail.csv``, ``user_activity.csv``, ``lorenz.csv``, ``mainstreaminess.csv``)
    and the Evidently item summary ``items_summary.html`` / ``items_summary.json``.

    Returns
    -------
    dict
        ``{"files": {name: path}, "bias_signals": {...}}``.
    """
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    interactions = _read_table(prepared_dir / "interactions.parquet", (Col.USER, Col.ITEM, Col.PLAYS))
    items = _read_table(prepared_dir / "items.parquet", (Col.ITEM,))
    item_tags = _read_table(prepared_dir / "item_tags.parquet", (Col.ITEM, Col.TAG, Col.COUNT))
    tracks_path = prepared_dir / "tracks.parquet"
    tracks = pd.read_parquet(tracks_path, columns=[HAS_LYRICS]) if tracks_path.exists() else None
    joins = _read_joins(prepared_dir / "quality.json")

    files: dict[str, str] = {}
    pngs = {name: _png_bytes(fig) for name, fig in _figures(interactions, items, item_tags, joins).items()}
    for name, png in pngs.items():
        _write_bytes(out_dir / f"{name}.png", png)
        files[f"{name}.png"] = str(out_dir / f"{name}.png")
    csvs = {
        "long_tail.csv": rank_frequency(interactions, Col.ITEM),
        "user_activity.csv": rank_frequency(interactions, Col.USER),
        "lorenz.csv": lorenz_table(interactions),
        "mainstreaminess.csv": mainstreaminess_histogram(user_mainstreaminess(interactions)),
    }
    for name, frame in csvs.items():
        _write_csv(out_dir / name, frame)
        files[name] = str(out_dir / name)
    bias = bias_signals(interactions)
    write_json(out_dir / "bias_signals.json", bias)
    write_text(
        out_dir / "eda.html", render_html(pngs, bias, _overview(interactions, items, item_tags, tracks))
    )
    write_items_summary(items, out_dir / "items_summary.html", out_dir / "items_summary.json")
    for name in ("bias_signals.json", "eda.html", "items_summary.html", "items_summary.json"):
        files[name] = str(out_dir / name)
    return {"files": files, "bias_signals": bias}
