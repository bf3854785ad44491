"""Item features: a hand-built frame per rule, a save/load round trip and a run on the real Last.fm data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.columns import AUDIO_FEATURES, ITEMS_COLUMNS, Col
from recsys.config import FeaturesParams, data_dir_from_env
from recsys.errors import DataError
from recsys.offline.features import (
    GROUPS,
    ItemFeatures,
    build_item_features,
    feature_summary,
    load_item_features,
    quantile_bins,
    save_item_features,
    strip_section_headers,
    without_identity,
)

ONLY_TAGS: dict[str, Any] = {
    "audio": {"enabled": False},
    "lyrics": {"enabled": False},
    "genre": {"enabled": False},
    "identity": {"enabled": False},
    "normalize_rows": False,
}


def make_params(**sections: Any) -> FeaturesParams:
    """Default settings with ``sections`` merged in (one level deep)."""
    raw = FeaturesParams().model_dump()
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return FeaturesParams.model_validate(raw)


def make_items(n: int, **columns: list[Any]) -> pd.DataFrame:
    """An items table of ``n`` artists ("a", "b", ...) with no features unless given in ``columns``."""
    frame = pd.DataFrame({Col.ITEM: [chr(ord("a") + i) for i in range(n)]})
    frame[Col.NAME] = frame[Col.ITEM].str.upper()
    frame[Col.NAME_NORM] = frame[Col.ITEM]
    frame[Col.N_LISTENERS] = 1
    frame[Col.TOTAL_PLAYS] = 10
    frame[Col.N_TRACKS] = 0
    frame[Col.GENRE] = None
    frame[Col.GENRES] = ""
    for feature in AUDIO_FEATURES:
        frame[feature] = np.nan
    frame[Col.N_LYRICS] = 0
    frame[Col.LYRICS] = None
    frame[Col.KIND], frame[Col.ARTIST], frame[Col.RELEASE_DATE] = "artist", frame[Col.NAME], None
    for column, values in columns.items():
        frame[column] = values
    return frame[list(ITEMS_COLUMNS)]


def make_tags(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[Col.ITEM, Col.TAG, Col.COUNT])


NO_TAGS = make_tags([])


def dense(features: ItemFeatures, group: str | None = None) -> np.ndarray:
    matrix = features.matrix if group is None else features.matrix[:, features.group_slices[group]]
    return np.asarray(matrix.toarray(), dtype=np.float64)


def column(features: ItemFeatures, name: str) -> np.ndarray:
    """The values of one named column; zeros when the column was dropped for being empty."""
    if name not in features.names:
        return np.zeros(features.matrix.shape[0])
    return dense(features)[:, features.names.index(name)]


def test_top_n_keeps_the_most_used_tags_with_ties_broken_by_name() -> None:
    tags = make_tags([("a", "rock", 5), ("a", "pop", 3), ("a", "jazz", 3), ("a", "folk", 1)])
    params = make_params(**ONLY_TAGS, tags={"top_n": 3, "min_artists": 1})
    features = build_item_features(make_items(1), tags, params, seed=0)
    assert features.names == ["tag:jazz", "tag:pop", "tag:rock"]
    params = make_params(**ONLY_TAGS, tags={"top_n": 2, "min_artists": 1})
    assert build_item_features(make_items(1), tags, params, seed=0).names == ["tag:jazz", "tag:rock"]


def test_tags_used_by_too_few_artists_are_dropped_before_the_top_n() -> None:
    tags = make_tags([("a", "mine", 9), ("a", "rock", 2), ("b", "rock", 1), ("b", "pop", 4), ("c", "pop", 1)])
    params = make_params(**ONLY_TAGS, tags={"top_n": 1, "min_artists": 2})
    features = build_item_features(make_items(3), tags, params, seed=0)
    assert features.names == ["tag:pop", "tag:rock"]
    # "a" would have kept only its own tag "mine"; it keeps its most-used shared tag instead.
    assert column(features, "tag:rock").tolist() == [1.0, 0.0, 0.0]


def test_tag_values_are_count_shares_times_the_group_weight() -> None:
    tags = make_tags([("a", "rock", 3), ("a", "pop", 1), ("b", "rock", 2), ("x", "pop", 7)])
    params = make_params(**ONLY_TAGS, tags={"min_artists": 1, "weight": 2.0})
    features = build_item_features(make_items(2), tags, params, seed=0)
    np.testing.assert_allclose(dense(features), [[0.5, 1.5], [0.0, 2.0]], rtol=1e-6)


def test_quantile_bins_are_right_closed_and_leave_nan_unbinned() -> None:
    codes = quantile_bins(np.array([4.0, 1.0, 2.0, np.nan, 3.0, 5.0, 6.0, 7.0, 8.0]), bins=4)
    assert codes.tolist() == [1, 0, 0, -1, 1, 2, 2, 3, 3]


def test_audio_is_one_bin_per_feature_and_only_for_items_with_audio() -> None:
    audio = {feature: [0.1, 0.2, np.nan, 0.3, 0.4] for feature in AUDIO_FEATURES}
    params = make_params(**{**ONLY_TAGS, "audio": {"bins": 2, "weight": 0.5}})
    features = build_item_features(make_items(5, **audio), NO_TAGS, params, seed=0)
    values = dense(features, "audio")
    assert len(features.names) == 2 * len(AUDIO_FEATURES)
    assert features.names[:2] == [f"audio:{AUDIO_FEATURES[0]}=q1", f"audio:{AUDIO_FEATURES[0]}=q2"]
    assert (values > 0).sum(axis=1).tolist() == [len(AUDIO_FEATURES)] * 2 + [0] + [len(AUDIO_FEATURES)] * 2
    np.testing.assert_allclose(values.sum(axis=1), [0.5, 0.5, 0.0, 0.5, 0.5], rtol=1e-6)
    assert column(features, f"audio:{AUDIO_FEATURES[0]}=q1").astype(bool).tolist() == [1, 1, 0, 0, 0]


def test_audio_bins_with_tied_edges_produce_no_empty_columns() -> None:
    audio = {feature: [0.0, 0.0, 0.0, 0.0, 0.0, 0.9] for feature in AUDIO_FEATURES}
    params = make_params(**{**ONLY_TAGS, "audio": {"bins": 4}})
    features = build_item_features(make_items(6, **audio), NO_TAGS, params, seed=0)
    assert (dense(features) > 0).any(axis=0).all()
    assert len(features.names) == 2 * len(AUDIO_FEATURES)


def test_section_headers_are_stripped_from_lyrics() -> None:
    text = "[Intro]\nhello\n[Verse 1: A & B]\nworld [Chorus]\n"
    assert strip_section_headers(text) == "\nhello\n\nworld \n"


LYRICS = [
    "sun sea summer dancing beach waves",
    "[Chorus: Somebody]\nrain grey winter tears cold night\n[Chorus]",
    None,
    "rain grey winter tears cold night",
    "sun dancing summer beach night",
]


def lyrics_params(**lyrics: Any) -> FeaturesParams:
    return make_params(**{**ONLY_TAGS, "lyrics": {"enabled": True, "weight": 1.0, **lyrics}})


def test_lyric_topics_ignore_section_headers() -> None:
    features = build_item_features(make_items(5, lyrics=LYRICS), NO_TAGS, lyrics_params(), seed=0)
    values = dense(features)
    # Items 1 and 3 differ only by their headers.
    np.testing.assert_allclose(values[1], values[3], atol=1e-6)
    assert values[2].sum() == 0


def test_lyric_svd_is_capped_by_the_corpus_and_split_into_signed_parts() -> None:
    items = make_items(5, lyrics=[LYRICS[0], None, None, LYRICS[3], LYRICS[4]])
    features = build_item_features(items, NO_TAGS, lyrics_params(svd_components=16), seed=0)
    values = dense(features)
    n_components = len({name.rstrip("+-") for name in features.names})
    assert 1 <= n_components <= 3
    assert all(name.startswith("lyrics:svd") and name[-1] in "+-" for name in features.names)
    assert (values >= 0).all()
    assert (values[[1, 2]] == 0).all()
    np.testing.assert_allclose(values[[0, 3, 4]].sum(axis=1), 1.0, rtol=1e-5)
    # A component is either positive or negative for an item, never both.
    for i in range(n_components):
        plus, minus = column(features, f"lyrics:svd{i}+"), column(features, f"lyrics:svd{i}-")
        assert not ((plus > 0) & (minus > 0)).any()


def test_a_single_lyric_document_gives_no_lyric_features() -> None:
    items = make_items(3, lyrics=[LYRICS[0], None, "[Chorus]"])
    features = build_item_features(items, NO_TAGS, lyrics_params(), seed=0)
    assert features.names == []
    assert features.matrix.shape == (3, 0)


def test_lyric_features_are_deterministic_for_a_seed() -> None:
    items = make_items(5, lyrics=LYRICS)
    first = build_item_features(items, NO_TAGS, lyrics_params(svd_components=2), seed=7)
    second = build_item_features(items, NO_TAGS, lyrics_params(svd_components=2), seed=7)
    assert (first.matrix != second.matrix).nnz == 0


def test_genres_are_one_hot_over_every_listed_genre() -> None:
    items = make_items(3, genres=["pop|rock", "", None])
    params = make_params(**{**ONLY_TAGS, "genre": {"enabled": True, "weight": 0.5}})
    features = build_item_features(items, NO_TAGS, params, seed=0)
    assert features.names == ["genre:pop", "genre:rock"]
    np.testing.assert_allclose(dense(features), [[0.25, 0.25], [0.0, 0.0], [0.0, 0.0]])


def full_items() -> tuple[pd.DataFrame, pd.DataFrame]:
    audio = {feature: [0.1, np.nan, 0.5, np.nan] for feature in AUDIO_FEATURES}
    items = make_items(4, genres=["pop", "", "rock", ""], **audio)
    tags = make_tags([("a", "rock", 2), ("b", "rock", 1), ("c", "indie", 1), ("b", "indie", 1)])
    return items, tags


def test_rows_are_l1_normalised_and_group_weights_are_their_shares() -> None:
    items, tags = full_items()
    params = make_params(
        tags={"min_artists": 1, "weight": 1.0},
        genre={"weight": 0.5},
        audio={"weight": 0.5},
        identity={"weight": 1.0},
    )
    features = build_item_features(items, tags, params, seed=0)
    np.testing.assert_allclose(dense(features).sum(axis=1), 1.0, rtol=1e-5)
    shares = {group: dense(features, group)[0].sum() for group in ("tags", "audio", "genre", "identity")}
    np.testing.assert_allclose(list(shares.values()), [1 / 3, 1 / 6, 1 / 6, 1 / 3], rtol=1e-5)
    # An item with no features keeps only its identity column, at full weight.
    assert column(features, "id:d").tolist() == [0.0, 0.0, 0.0, 1.0]


def test_without_normalisation_each_group_sums_to_its_weight() -> None:
    items, tags = full_items()
    params = make_params(
        tags={"min_artists": 1, "weight": 2.0}, identity={"weight": 3.0}, normalize_rows=False
    )
    features = build_item_features(items, tags, params, seed=0)
    np.testing.assert_allclose(dense(features, "tags").sum(axis=1), [2, 2, 2, 0], rtol=1e-6)
    np.testing.assert_allclose(dense(features, "identity"), 3 * np.eye(4))


def test_group_slices_match_names_and_cover_every_column() -> None:
    items, tags = full_items()
    features = build_item_features(items, tags, make_params(tags={"min_artists": 1}), seed=0)
    prefixes = {"tags": "tag:", "audio": "audio:", "lyrics": "lyrics:", "genre": "genre:", "identity": "id:"}
    assert list(features.group_slices) == list(GROUPS)
    assert sum(features.group_sizes().values()) == len(features.names) == features.matrix.shape[1]
    for group, cols in features.group_slices.items():
        assert all(name.startswith(prefixes[group]) for name in features.names[cols])
    assert features.matrix.dtype == np.float32
    assert features.item_ids == ["a", "b", "c", "d"]


def test_identity_off_leaves_featureless_rows_empty_without_nan() -> None:
    items, tags = full_items()
    params = make_params(tags={"min_artists": 1}, identity={"enabled": False})
    features = build_item_features(items, tags, params, seed=0)
    values = dense(features)
    assert not any(name.startswith("id:") for name in features.names)
    assert np.isfinite(values).all()
    assert values[3].sum() == 0
    np.testing.assert_allclose(values[:3].sum(axis=1), 1.0, rtol=1e-5)


def test_without_identity_zeroes_masked_identity_and_renormalises() -> None:
    items, tags = full_items()
    features = build_item_features(
        items, tags, make_params(tags={"min_artists": 1}, identity={"weight": 1.0}), seed=0
    )
    before = dense(features)
    cold = without_identity(features, np.array([True, False, False, True]))
    after = dense(cold)
    identity = features.group_slices["identity"]
    assert after[0, identity].sum() == 0 and after[3].sum() == 0
    np.testing.assert_allclose(after[0].sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        after[0, : identity.start], before[0, : identity.start] / (1 - before[0, identity.start])
    )
    np.testing.assert_array_equal(after[1:3], before[1:3])
    np.testing.assert_array_equal(dense(features), before)
    assert cold.names == features.names and cold.matrix.shape == features.matrix.shape
    by_index = without_identity(features, np.array([0, 3]))
    assert (by_index.matrix != cold.matrix).nnz == 0


def test_duplicate_item_ids_are_rejected() -> None:
    items = make_items(2)
    items[Col.ITEM] = ["a", "a"]
    with pytest.raises(DataError, match="duplicate item id"):
        build_item_features(items, NO_TAGS, make_params(), seed=0)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    items, tags = full_items()
    features = build_item_features(items, tags, make_params(tags={"min_artists": 1}), seed=0)
    save_item_features(features, tmp_path)
    loaded = load_item_features(tmp_path)
    assert (loaded.matrix != features.matrix).nnz == 0
    assert loaded.matrix.dtype == np.float32
    assert (loaded.names, loaded.item_ids, loaded.group_slices) == (
        features.names,
        features.item_ids,
        features.group_slices,
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.fixture(scope="module")
def lastfm_dir() -> Path:
    data_dir = data_dir_from_env()
    if data_dir is None:
        pytest.skip("RECSYS_DATA_DIR is not set: no real Last.fm data")
    return data_dir / "hetrec2011-lastfm-2k"


def read_lastfm_items(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items and item tags shaped like the prepare stage's output (no audio, genres or lyrics)."""
    artists = pd.read_csv(folder / "artists.dat", sep="\t", encoding="utf-8", usecols=["id", "name"])
    listens = pd.read_csv(folder / "user_artists.dat", sep="\t")
    stats = listens.groupby("artistID").agg(n_listeners=("userID", "size"), total_plays=("weight", "sum"))
    artists = artists.join(stats, on="id")
    names = artists["name"].fillna("").astype(str)
    items = pd.DataFrame(
        {
            Col.ITEM: artists["id"].astype(str),
            Col.NAME: names,
            Col.NAME_NORM: names.str.lower(),
            Col.N_LISTENERS: artists["n_listeners"].fillna(0).astype(int),
            Col.TOTAL_PLAYS: artists["total_plays"].fillna(0).astype(int),
            Col.N_TRACKS: 0,
            Col.GENRE: None,
            Col.GENRES: "",
            **{feature: np.nan for feature in AUDIO_FEATURES},
            Col.N_LYRICS: 0,
            Col.LYRICS: None,
            Col.KIND: "artist",
            Col.ARTIST: names,
            Col.RELEASE_DATE: None,
        }
    )[list(ITEMS_COLUMNS)]
    items = items.sort_values(Col.ITEM, ignore_index=True)
    tag_names = pd.read_csv(folder / "tags.dat", sep="\t", encoding="latin-1")
    tagged = pd.read_csv(folder / "user_taggedartists.dat", sep="\t").merge(tag_names, on="tagID")
    tagged[Col.ITEM] = tagged["artistID"].astype(str)
    tagged[Col.TAG] = tagged["tagValue"].astype(str).str.strip().str.lower()
    tagged = tagged[tagged[Col.ITEM].isin(items[Col.ITEM])]
    item_tags = tagged.groupby([Col.ITEM, Col.TAG])["userID"].nunique().rename(Col.COUNT).reset_index()
    return items, item_tags


@pytest.mark.slow
@pytest.mark.realdata
def test_real_lastfm_features(lastfm_dir: Path) -> None:
    items, item_tags = read_lastfm_items(lastfm_dir)
    started = time.perf_counter()
    features = build_item_features(items, item_tags, FeaturesParams(), seed=42)
    seconds = time.perf_counter() - started
    summary = feature_summary(features)
    print(f"\nreal features in {seconds:.2f} s: {summary}")
    n_items = len(items)
    assert features.matrix.shape[0] == n_items == items[Col.ITEM].nunique()
    sizes = features.group_sizes()
    assert sizes["identity"] == n_items
    assert sizes["audio"] == sizes["lyrics"] == sizes["genre"] == 0
    tag_values = features.matrix[:, features.group_slices["tags"]]
    assert tag_values.shape[1] > 100
    assert (np.diff(tag_values.tocsc().indptr) > 0).all()
    assert features.matrix.nnz > n_items
    row_sums = np.asarray(features.matrix.sum(axis=1)).ravel()
    np.testing.assert_allclose(row_sums, 1.0, rtol=1e-4)
