"""The spotify-songs adapter on the real TidyTuesday and Genius files: playlists x tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.columns import AUDIO_FEATURES, INTERACTIONS_COLUMNS, ITEM_TAGS_COLUMNS, ITEMS_COLUMNS, Col
from recsys.config import Params, SplitParams
from recsys.data.prepare import Prepared
from recsys.data.songs import prepare_songs
from recsys.offline.split import make_split


@pytest.fixture(scope="module")
def songs(real_data_dir: Path) -> Prepared:
    return prepare_songs(real_data_dir, Params())


@pytest.mark.realdata
def test_playlists_are_the_listeners_and_tracks_the_items(songs: Prepared, real_data_dir: Path) -> None:
    raw = pd.read_csv(real_data_dir / "spotify-songs-tidytuesday-2020-01-21" / "spotify_songs.csv")
    assert list(songs.interactions.columns) == list(INTERACTIONS_COLUMNS)
    assert list(songs.items.columns) == list(ITEMS_COLUMNS)
    assert list(songs.item_tags.columns) == list(ITEM_TAGS_COLUMNS)
    # The file: 471 playlists, 28,356 tracks, 32,251 distinct playlist-track pairs; 4 nameless tracks are
    # dropped and playlists with fewer than 5 tracks are not listeners.
    assert (raw["playlist_id"].nunique(), raw["track_id"].nunique()) == (471, 28356)
    assert len(raw[["playlist_id", "track_id"]].drop_duplicates()) == 32251
    summary = songs.quality["summary"]
    assert summary["items"] == len(songs.items) == 28352
    assert summary["users"] == songs.interactions[Col.USER].nunique() == 468
    assert summary["interactions"] == len(songs.interactions) == 32239
    assert not songs.interactions.duplicated([Col.USER, Col.ITEM]).any()
    assert set(songs.interactions[Col.USER]) <= set(raw["playlist_id"])
    assert (songs.items[Col.KIND] == "track").all()


@pytest.mark.realdata
def test_each_track_keeps_its_own_audio_features_and_names(songs: Prepared, real_data_dir: Path) -> None:
    raw = pd.read_csv(real_data_dir / "spotify-songs-tidytuesday-2020-01-21" / "spotify_songs.csv")
    first = raw.drop_duplicates("track_id").set_index("track_id")
    items = songs.items.set_index(Col.ITEM)
    sample = items.index[::997]
    for feature in ("danceability", "energy", "tempo"):
        assert np.allclose(items.loc[sample, feature], first.loc[sample, feature], equal_nan=True)
    # Two tracks of one artist differ (not an artist average).
    by_artist = items.groupby(Col.ARTIST)["energy"].nunique()
    assert (by_artist > 1).sum() > 1000
    track = items.loc[sample[0]]
    assert track[Col.NAME] == f"{first.loc[sample[0], 'track_name']} - {first.loc[sample[0], 'track_artist']}"
    assert items[list(AUDIO_FEATURES)].notna().all(axis=1).mean() > 0.99
    dates = items[Col.RELEASE_DATE].dropna()
    assert dates.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all() and len(dates) > 28000


@pytest.mark.realdata
def test_tags_are_subgenres_artist_and_album_and_lyrics_join_per_track(songs: Prepared) -> None:
    tags = songs.item_tags
    assert tags[Col.TAG].str.startswith("artist: ").sum() == len(songs.items)
    assert tags[Col.TAG].str.startswith("album: ").sum() > 28000
    assert {"dance pop", "hard rock", "trap"} <= set(tags[Col.TAG])
    with_lyrics = songs.items[songs.items[Col.N_LYRICS] > 0]
    assert len(with_lyrics) == songs.quality["joins"]["spotify_tracks_matched"] > 400
    assert with_lyrics[Col.LYRICS].str.len().min() > 50


@pytest.mark.realdata
def test_newest_releases_are_the_cold_start_items(songs: Prepared) -> None:
    params = SplitParams(cold_items="newest")
    items = songs.items
    split = make_split(songs.interactions, params, 42, items[Col.ITEM].tolist(), items[Col.RELEASE_DATE])
    cold_dates = items[Col.RELEASE_DATE].iloc[split.cold_items]
    warm = np.setdiff1d(np.unique(split.train_full.tocoo().col), split.cold_items)
    # Every cold track was released on or after the newest warm one with interactions.
    assert cold_dates.min() >= items[Col.RELEASE_DATE].iloc[warm].max()
    assert len(split.cold_items) == round(0.1 * items[Col.N_LISTENERS].gt(0).sum())
    with pytest.raises(ValueError, match="release dates"):
        make_split(songs.interactions, params, 42, items[Col.ITEM].tolist())
