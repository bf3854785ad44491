"""Tests of recsys.reporting.eda: hand-computed bias numbers, every plot, the stage on tiny and real data."""

from __future__ import annotations

import base64
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from recsys.columns import AUDIO_FEATURES, ITEMS_COLUMNS, Col
from recsys.config import DATA_DIR_ENV, data_dir_from_env
from recsys.errors import DataError
from recsys.reporting import eda, eda_plots, eda_stats

SENTINEL = "Quixotrombulance"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = (
    "long_tail",
    "listen_counts",
    "top_tags",
    "audio_distributions",
    "audio_correlations",
    "join_coverage",
    "lorenz",
    "mainstreaminess",
)

# 6 users x 8 artists. Listeners per artist: a=6, b=3, c=2, d..h=1 (16 interactions).
# Every pair has 10 plays except (u6, h) with 1000: the most-played artist (h) is not the most-listened (a).
_PAIRS = {
    "u1": "abc",
    "u2": "abc",
    "u3": "abd",
    "u4": "ae",
    "u5": "af",
    "u6": "agh",
}


def _interactions() -> pd.DataFrame:
    rows = [(user, item) for user, items in _PAIRS.items() for item in items]
    frame = pd.DataFrame(rows, columns=[Col.USER, Col.ITEM])
    frame[Col.PLAYS] = np.where((frame[Col.USER] == "u6") & (frame[Col.ITEM] == "h"), 1000, 10).astype(
        np.int64
    )
    frame[Col.WEIGHT] = (1 + np.log1p(frame[Col.PLAYS])).astype(np.float32)
    frame[Col.SOURCE] = "lastfm"
    return frame


def _items(rng: np.random.Generator) -> pd.DataFrame:
    ids = list("abcdefgh")
    frame = pd.DataFrame({Col.ITEM: ids, Col.NAME: [f"Artist {i}" for i in ids]})
    frame[Col.NAME_NORM] = frame[Col.NAME].str.lower()
    frame[Col.N_LISTENERS] = [6, 3, 2, 1, 1, 1, 1, 1]
    frame[Col.TOTAL_PLAYS] = [60, 30, 20, 10, 10, 10, 10, 1000]
    frame[Col.N_TRACKS] = [3, 2, 1, 0, 4, 0, 1, 0]
    has = frame[Col.N_TRACKS] > 0
    frame[Col.GENRE] = ["pop", "rock", "pop", None, "rap", None, "edm", None]
    frame[Col.GENRES] = ["pop|rock", "rock", "pop", "", "rap", "", "edm", ""]
    for name in AUDIO_FEATURES:
        frame[name] = np.where(has, rng.random(len(ids)), np.nan)
    frame[Col.N_LYRICS] = [2, 0, 1, 0, 0, 0, 0, 0]
    frame[Col.LYRICS] = [f"la la {SENTINEL} la", None, f"{SENTINEL} oh", None, None, None, None, None]
    frame[Col.KIND], frame[Col.ARTIST], frame[Col.RELEASE_DATE] = "artist", frame[Col.NAME], None
    return frame[list(ITEMS_COLUMNS)]


def _item_tags() -> pd.DataFrame:
    rows = [("a", "rock", 5), ("b", "rock", 2), ("c", "rock", 1), ("a", "pop", 9), ("d", "jazz", 1)]
    return pd.DataFrame(rows, columns=[Col.ITEM, Col.TAG, Col.COUNT])


def _tracks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            Col.TRACK_ID: ["t1", "t2", "t3"],
            Col.TRACK_NAME: ["One", "Two", "Three"],
            Col.ARTIST: ["Artist a", "Artist a", "Artist c"],
            eda.HAS_LYRICS: [True, False, True],
        }
    )


JOINS = {
    "lyrics_rows": 1000,
    "lyrics_rows_matched": 295,
    "spotify_tracks_matched": 477,
    "lastfm_artists": 8,
    "lastfm_artists_with_spotify": 5,
    "note": "not a number",
}


@pytest.fixture()
def interactions() -> pd.DataFrame:
    return _interactions()


@pytest.fixture()
def items() -> pd.DataFrame:
    return _items(np.random.default_rng(7))


# ---------------------------------------------------------------------------------------------- numbers
def test_bias_signals_match_hand_computation(interactions: pd.DataFrame) -> None:
    signals = eda_stats.bias_signals(interactions)

    # 8 artists: the top 1 % rounds up to one artist.
    assert signals["top1pct_n_items"] == 1
    assert signals["top1pct_interaction_share"] == pytest.approx(6 / 16)
    assert signals["top1pct_play_share"] == pytest.approx(1000 / 1150)
    # Gini = 2 * sum(i * x_(i)) / (n * sum x) - (n + 1) / n over ascending x.
    # listeners [1,1,1,1,1,2,3,6]: sum(i x) = 96; plays [10,10,10,10,20,30,60,1000]: sum(i x) = 8800.
    assert signals["gini_item_popularity"] == pytest.approx(2 * 96 / (8 * 16) - 9 / 8)
    assert signals["gini_item_plays"] == pytest.approx(2 * 8800 / (8 * 1150) - 9 / 8)
    # Popularity percentiles: d..h tie at 2/7, c 5/7, b 6/7, a 1. Users: u1, u2 6/7; u3 5/7; u4, u5 9/14;
    # u6 11/21. The median lies between 9/14 and 5/7.
    assert signals["mainstreaminess_p50"] == pytest.approx((9 / 14 + 5 / 7) / 2)
    assert signals["mainstreaminess_mean"] == pytest.approx((12 / 7 + 5 / 7 + 9 / 7 + 11 / 21) / 6)
    assert (signals["n_users"], signals["n_items"], signals["n_interactions"]) == (6, 8, 16)
    assert signals["total_plays"] == 1150
    json.dumps(signals, allow_nan=False)


def test_bias_signals_quantiles_are_ordered(interactions: pd.DataFrame) -> None:
    signals = eda_stats.bias_signals(interactions)
    quantiles = [signals[f"mainstreaminess_p{q}"] for q in ("10", "25", "50", "75", "90")]
    assert quantiles == sorted(quantiles)
    assert quantiles[0] >= 0.0 and quantiles[-1] <= 1.0


def test_top_share_rounds_the_head_up_to_whole_items() -> None:
    values = np.array([1.0] * 198 + [50.0, 50.0])
    assert eda_stats.top_share(values, 0.01) == pytest.approx(100 / 298)
    assert eda_stats.top_share(np.array([5.0, 1.0]), 0.01) == pytest.approx(5 / 6)
    assert eda_stats.top_share(np.zeros(3)) == 0.0


def test_gini_bounds() -> None:
    assert eda_stats.gini(np.full(5, 3.0)) == pytest.approx(0.0)
    assert eda_stats.gini(np.array([0, 0, 0, 0, 10])) == pytest.approx(4 / 5)
    assert eda_stats.gini(np.array([])) == 0.0


def test_lorenz_curve_runs_from_origin_to_one_below_the_diagonal() -> None:
    x, y = eda_stats.lorenz_curve(np.array([6.0, 1.0, 3.0]))
    np.testing.assert_allclose(x, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(y, [0, 0.1, 0.4, 1.0])
    assert np.all(y <= x + 1e-12)


def test_rank_frequency_counts_per_item_and_user(interactions: pd.DataFrame) -> None:
    per_item = eda_stats.rank_frequency(interactions, Col.ITEM)
    assert per_item["rank"].tolist() == list(range(1, 9))
    assert per_item["count"].tolist() == [6, 3, 2, 1, 1, 1, 1, 1]
    per_user = eda_stats.rank_frequency(interactions, Col.USER)
    assert per_user["count"].tolist() == [3, 3, 3, 3, 2, 2]


def test_top_tags_rank_by_distinct_artists() -> None:
    top = eda_stats.top_tags(_item_tags(), n=2)
    assert top[Col.TAG].tolist() == ["rock", "pop"]
    assert top["n_artists"].tolist() == [3, 1]
    assert top["n_users"].tolist() == [8, 9]


def test_join_coverage_pairs_counts_with_totals() -> None:
    table = eda_stats.join_coverage(JOINS).set_index("join")
    assert table.loc["lyrics rows matched", "share"] == pytest.approx(0.295)
    assert table.loc["lastfm artists with spotify", "share"] == pytest.approx(5 / 8)
    assert np.isnan(table.loc["spotify tracks matched", "total"])
    assert len(table) == 3
    assert eda_stats.join_coverage({}).empty


def test_user_item_matrix_is_binary_and_sorted(interactions: pd.DataFrame) -> None:
    matrix = eda_stats.user_item_matrix(interactions)
    assert matrix.shape == (6, 8)
    assert matrix.sum() == 16
    assert matrix[5].toarray().ravel().tolist() == [1, 0, 0, 0, 0, 0, 1, 1]  # u6: a, g, h


def test_item_summary_frame_drops_text_but_keeps_lyrics_length(items: pd.DataFrame) -> None:
    frame = eda.item_summary_frame(items)
    assert Col.LYRICS not in frame.columns and Col.NAME not in frame.columns
    assert frame[eda.LYRICS_CHARS].tolist()[:3] == [len(f"la la {SENTINEL} la"), 0, len(f"{SENTINEL} oh")]


# ---------------------------------------------------------------------------------------------- plots
def _bars(fig: Figure) -> list[Rectangle]:
    return [patch for patch in fig.axes[0].patches if isinstance(patch, Rectangle)]


def _axes_labels(fig: Figure) -> list[tuple[str, str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes if ax.get_visible()]


def test_plot_long_tail_is_log_log(interactions: pd.DataFrame) -> None:
    fig = eda_plots.plot_long_tail(interactions)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("rank", "interactions")
    assert len(ax.get_lines()) == 3  # artists, users, top-1 % marker


def test_plot_listen_counts_uses_log_axes(interactions: pd.DataFrame) -> None:
    fig = eda_plots.plot_listen_counts(interactions)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "pairs"
    assert sum(bar.get_height() for bar in _bars(fig)) == len(interactions)


def test_plot_top_tags_draws_one_bar_per_tag() -> None:
    ax = eda_plots.plot_top_tags(_item_tags(), n=20).axes[0]
    assert ax.get_xlabel() == "artists"
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "rock"  # the most used tag on top


def test_plot_audio_distributions_has_one_panel_per_feature(items: pd.DataFrame) -> None:
    fig = eda_plots.plot_audio_distributions(items)
    titles = [title for _, _, title in _axes_labels(fig)]
    assert titles == list(AUDIO_FEATURES)
    assert "5 of 8 artists" in fig.get_suptitle()


def test_plot_audio_distributions_copes_without_audio(items: pd.DataFrame) -> None:
    items[list(AUDIO_FEATURES)] = np.nan
    fig = eda_plots.plot_audio_distributions(items)
    assert all(not ax.patches for ax in fig.axes if ax.get_visible())
    assert (
        eda_plots.plot_audio_correlations(items).axes[0].get_title().startswith("Audio-feature correlations")
    )


def test_plot_audio_correlations_labels_every_feature(items: pd.DataFrame) -> None:
    fig = eda_plots.plot_audio_correlations(items)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(AUDIO_FEATURES)
    assert len(fig.axes) == 2  # heatmap + colorbar


def test_plot_join_coverage_bars_in_percent() -> None:
    fig = eda_plots.plot_join_coverage(JOINS)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "matched (%)"
    heights = sorted(round(bar.get_width(), 6) for bar in _bars(fig))
    assert heights == [0.0, 29.5, 62.5]


def test_plot_lorenz_reports_gini(interactions: pd.DataFrame) -> None:
    ax = eda_plots.plot_lorenz(interactions).axes[0]
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("Gini 0.375" in text for text in texts)
    assert ax.get_xlabel().startswith("share of artists")


def test_plot_mainstreaminess_counts_every_user(interactions: pd.DataFrame) -> None:
    fig = eda_plots.plot_mainstreaminess(interactions)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "users"
    assert sum(bar.get_height() for bar in _bars(fig)) == 6


# ---------------------------------------------------------------------------------------------- stage
def _write_prepared(
    folder: Path, interactions: pd.DataFrame, items: pd.DataFrame, tags: pd.DataFrame
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    interactions.to_parquet(folder / "interactions.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)
    tags.to_parquet(folder / "item_tags.parquet", index=False)


@pytest.fixture(scope="module")
def eda_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("eda")
    prepared = root / "prepared"
    _write_prepared(prepared, _interactions(), _items(np.random.default_rng(7)), _item_tags())
    _tracks().to_parquet(prepared / "tracks.parquet", index=False)
    (prepared / "quality.json").write_text(json.dumps({"joins": JOINS, "rows": {}}), encoding="utf-8")
    out = root / "eda"
    return out, eda.write_eda(prepared, out)


def test_write_eda_writes_real_pngs(eda_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = eda_run
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


def test_write_eda_html_embeds_every_png(eda_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = eda_run
    page = (out / "eda.html").read_text(encoding="utf-8")
    for name in PLOTS:
        encoded = base64.b64encode((out / f"{name}.png").read_bytes()).decode("ascii")
        assert f"data:image/png;base64,{encoded}" in page
    assert "top1pct_play_share" in page and "tracks with lyrics" in page
    assert set(summary["files"]) >= {f"{name}.png" for name in PLOTS}


def test_write_eda_never_leaks_lyrics(eda_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = eda_run
    files = [path for path in out.iterdir() if path.is_file()]
    assert len(files) >= len(PLOTS) + 8
    for path in files:
        assert SENTINEL.lower().encode() not in path.read_bytes().lower(), path.name


def test_write_eda_writes_data_files(eda_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = eda_run
    assert json.loads((out / "bias_signals.json").read_text()) == pytest.approx(summary["bias_signals"])
    with (out / "long_tail.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["count"]) for row in rows] == [6, 3, 2, 1, 1, 1, 1, 1]
    hist = pd.read_csv(out / "mainstreaminess.csv")
    assert list(hist.columns) == ["mainstreaminess", "users"] and hist["users"].sum() == 6
    lorenz = pd.read_csv(out / "lorenz.csv")
    assert lorenz.iloc[-1].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_write_eda_writes_evidently_summary(eda_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = eda_run
    assert (out / "items_summary.html").read_text(encoding="utf-8").lstrip().lower().startswith("<")
    metrics = json.loads((out / "items_summary.json").read_text(encoding="utf-8"))["metrics"]
    names = " ".join(metric["metric_name"] for metric in metrics)
    assert "danceability" in names and Col.GENRE in names and eda.LYRICS_CHARS in names
    assert f"column={Col.NAME}" not in names


def test_write_eda_names_a_missing_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"interactions\.parquet"):
        eda.write_eda(tmp_path, tmp_path / "out")


def test_write_eda_names_a_missing_column(tmp_path: Path) -> None:
    _write_prepared(
        tmp_path, _interactions().drop(columns=[Col.PLAYS]), _items(np.random.default_rng(1)), _item_tags()
    )
    with pytest.raises(DataError, match=Col.PLAYS):
        eda.write_eda(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------------------------------------- real data
def _lastfm_prepared(lastfm: Path, folder: Path) -> None:
    """A stand-in for the prepare stage built straight from the Last.fm files (no Spotify or lyrics)."""
    read = {"sep": "\t", "quoting": csv.QUOTE_NONE}
    listens = pd.read_csv(lastfm / "user_artists.dat", **read)
    artists = pd.read_csv(lastfm / "artists.dat", encoding="utf-8", usecols=["id", "name"], **read)
    tag_names = pd.read_csv(lastfm / "tags.dat", encoding="latin-1", **read)
    tagged = pd.read_csv(lastfm / "user_taggedartists.dat", **read)

    interactions = pd.DataFrame(
        {
            Col.USER: listens["userID"].astype(str),
            Col.ITEM: listens["artistID"].astype(str),
            Col.WEIGHT: (1 + np.log1p(listens["weight"])).astype(np.float32),
            Col.PLAYS: listens["weight"].astype(np.int64),
            Col.SOURCE: "lastfm",
        }
    )
    per_item = interactions.groupby(Col.ITEM).agg(
        **{Col.N_LISTENERS: (Col.USER, "size"), Col.TOTAL_PLAYS: (Col.PLAYS, "sum")}
    )
    items = pd.DataFrame({Col.ITEM: artists["id"].astype(str), Col.NAME: artists["name"].astype(str)})
    items[Col.NAME_NORM] = items[Col.NAME].str.lower()
    items = items.join(per_item, on=Col.ITEM)
    items[[Col.N_LISTENERS, Col.TOTAL_PLAYS]] = (
        items[[Col.N_LISTENERS, Col.TOTAL_PLAYS]].fillna(0).astype(np.int64)
    )
    items[Col.N_TRACKS] = 0
    items[Col.GENRE] = None
    items[Col.GENRES] = ""
    for name in AUDIO_FEATURES:
        items[name] = np.nan
    items[Col.N_LYRICS] = 0
    items[Col.LYRICS] = None
    items[Col.KIND], items[Col.ARTIST], items[Col.RELEASE_DATE] = "artist", items[Col.NAME], None

    tagged = tagged.merge(tag_names, on="tagID")
    item_tags = (
        tagged.groupby(["artistID", "tagValue"])["userID"]
        .nunique()
        .rename(Col.COUNT)
        .reset_index()
        .rename(columns={"artistID": Col.ITEM, "tagValue": Col.TAG})
    )
    item_tags[Col.ITEM] = item_tags[Col.ITEM].astype(str)
    _write_prepared(folder, interactions, items[list(ITEMS_COLUMNS)], item_tags)


@pytest.mark.slow
@pytest.mark.realdata
def test_write_eda_on_real_lastfm(tmp_path: Path) -> None:
    data_dir = data_dir_from_env()
    if data_dir is None:
        pytest.skip(f"{DATA_DIR_ENV} is not set: it must name the folder holding hetrec2011-lastfm-2k/")
    _lastfm_prepared(data_dir / "hetrec2011-lastfm-2k", tmp_path / "prepared")

    start = time.perf_counter()
    summary = eda.write_eda(tmp_path / "prepared", tmp_path / "eda")
    elapsed = time.perf_counter() - start
    bias = summary["bias_signals"]
    print(f"\nreal Last.fm EDA in {elapsed:.1f} s: {json.dumps(bias, indent=1)}")

    assert bias["n_users"] == 1892 and bias["n_interactions"] == 92834
    # A long tail: the top 1 % of artists hold many times their 1 % share of listens and listeners.
    assert bias["top1pct_play_share"] > 0.1
    assert bias["top1pct_interaction_share"] > 0.05
    assert 0.5 < bias["gini_item_popularity"] < 1.0 and 0.5 < bias["gini_item_plays"] < 1.0
    quantiles = [bias[f"mainstreaminess_p{q}"] for q in ("10", "25", "50", "75", "90")]
    assert 0.0 <= quantiles[0] <= quantiles[-1] <= 1.0
    for name in (*PLOTS,):
        assert (tmp_path / "eda" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "eda" / "items_summary.html").stat().st_size > 0


def test_the_evidently_item_summary_is_the_same_bytes_on_a_rerun(items: pd.DataFrame, tmp_path: Path) -> None:
    # A DVC output: Evidently's random widget ids are renumbered, so a rerun does not change dvc.lock.
    pages = []
    for run in ("a", "b"):
        eda.write_items_summary(items, tmp_path / f"{run}.html", tmp_path / f"{run}.json")
        pages.append((tmp_path / f"{run}.html").read_bytes())
    assert pages[0] == pages[1] and b"metric_00000000000000000000000000000000" in pages[0]
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
