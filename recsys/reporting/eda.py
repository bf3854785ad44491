"""Exploratory analysis of the prepared tables: long tail, listen counts, tags, audio, joins and bias.

The numbers are :mod:`recsys.reporting.eda_stats`, the figures :mod:`recsys.reporting.eda_plots`; this
module is the ``eda`` stage: :func:`write_eda` reads the prepared tables and writes the report.
Lyrics text never leaves this module: only counts and lengths of it are reported.
"""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recsys.columns import AUDIO_FEATURES, Col
from recsys.errors import DataError
from recsys.io import atomic_path, write_json, write_text
from recsys.paths import INTERACTIONS_TABLE, ITEM_TAGS_TABLE, ITEMS_TABLE, QUALITY_JSON
from recsys.reporting import eda_plots as plots
from recsys.reporting.eda_plots import png_bytes
from recsys.reporting.eda_stats import (
    bias_signals,
    lorenz_table,
    mainstreaminess_histogram,
    rank_frequency,
    user_mainstreaminess,
)

LYRICS_CHARS = "lyrics_chars"
"""Derived column of the Evidently item summary: length of an artist's lyrics text (never the text)."""
HAS_LYRICS = "has_lyrics"
"""Boolean column of tracks.parquet (not in :class:`~recsys.columns.Col`)."""
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


def _write_bytes(path: Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def item_summary_frame(items: pd.DataFrame) -> pd.DataFrame:
    """The item columns fit for a data summary: counts, audio features, genres and lyrics length (no text)."""
    numeric = [Col.N_LISTENERS, Col.TOTAL_PLAYS, Col.N_TRACKS, *AUDIO_FEATURES, Col.N_LYRICS]
    frame = items[[c for c in (*numeric, Col.GENRE, Col.GENRES) if c in items.columns]].copy()
    if Col.LYRICS in items.columns:
        frame[LYRICS_CHARS] = items[Col.LYRICS].fillna("").str.len()
    return frame


_ID = re.compile(
    r"(?<![0-9a-f-])(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?![0-9a-f-])"
)


def stable_ids(html: str) -> str:
    """``html`` with every UUID-like id renumbered in order of first appearance.

    Evidently names its widgets with random UUIDs; renumbering them (one to one, so references inside
    the page still match) makes the same report the same bytes, as a DVC output should be.

    Examples
    --------
    >>> stable_ids('<p id="9f3c7e2a5b8d4e1f9a6c3b0d7e4f1a2b"><a href="#9f3c7e2a5b8d4e1f9a6c3b0d7e4f1a2b">')
    '<p id="00000000000000000000000000000000"><a href="#00000000000000000000000000000000">'
    """
    renamed: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        token = match.group(0)
        if token not in renamed:
            number = len(renamed)
            renamed[token] = str(uuid.UUID(int=number)) if "-" in token else f"{number:032x}"
        return renamed[token]

    return _ID.sub(rename, html)


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
        tmp.write_text(stable_ids(tmp.read_text(encoding="utf-8")), encoding="utf-8")
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
        "long_tail": plots.plot_long_tail(interactions),
        "listen_counts": plots.plot_listen_counts(interactions),
        "top_tags": plots.plot_top_tags(item_tags),
        "audio_distributions": plots.plot_audio_distributions(items),
        "audio_correlations": plots.plot_audio_correlations(items),
        "join_coverage": plots.plot_join_coverage(joins),
        "lorenz": plots.plot_lorenz(interactions),
        "mainstreaminess": plots.plot_mainstreaminess(interactions),
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
    interactions = _read_table(prepared_dir / INTERACTIONS_TABLE, (Col.USER, Col.ITEM, Col.PLAYS))
    items = _read_table(prepared_dir / ITEMS_TABLE, (Col.ITEM,))
    item_tags = _read_table(prepared_dir / ITEM_TAGS_TABLE, (Col.ITEM, Col.TAG, Col.COUNT))
    tracks_path = prepared_dir / "tracks.parquet"
    tracks = pd.read_parquet(tracks_path, columns=[HAS_LYRICS]) if tracks_path.exists() else None
    joins = _read_joins(prepared_dir / QUALITY_JSON)

    files: dict[str, str] = {}
    pngs = {name: png_bytes(fig) for name, fig in _figures(interactions, items, item_tags, joins).items()}
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
