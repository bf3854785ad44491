"""Joins across sources by normalised names: Spotify x Genius per track, then profiles onto Last.fm artists.

Hand-built frames with the raw files' column names; every expected number is counted by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.columns import AUDIO_FEATURES, Col
from recsys.data.joins import (
    LYRIC_SEPARATOR,
    artist_lyrics,
    artist_profiles,
    attach_to_artists,
    match_lyrics,
    mode_by,
    spotify_tracks,
)


def spotify_rows() -> pd.DataFrame:
    """Five playlist rows of three tracks: t1 is in three playlists (pop twice, rock once)."""
    rows = [
        # track_id, name, artist, popularity, playlist_genre, danceability
        ("t1", "Starboy (feat. Daft Punk)", "The Weeknd", 90, "pop", 0.8),
        ("t1", "Starboy (feat. Daft Punk)", "The Weeknd", 90, "rock", 0.8),
        ("t1", "Starboy (feat. Daft Punk)", "The Weeknd", 90, "pop", 0.8),
        ("t2", "Blinding Lights", "The Weeknd", 95, "pop", 0.4),
        ("t3", "Halo", "Beyoncé", 70, "r&b", 0.6),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "track_id",
            "track_name",
            "track_artist",
            "track_popularity",
            "playlist_genre",
            "danceability",
        ],
    )
    for feature in AUDIO_FEATURES:
        if feature not in frame:
            frame[feature] = 0.5
    return frame


def lyric_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "track_name": ["Starboy", "Halo", "Unknown Song", "Blinding Lights"],
            "artist": ["Weeknd", "Beyonce", "Nobody", "Someone Else"],
            "featured_artist": [None, None, None, "The Weeknd"],
            "lyrics": ["la la", "halo halo", "nothing", "lights"],
        }
    )


def test_mode_by_takes_the_most_frequent_value_and_breaks_ties_alphabetically() -> None:
    frame = pd.DataFrame({"k": ["a", "a", "a", "b", "b"], "v": ["x", "y", "y", "z", "w"]})
    assert mode_by(frame, "k", "v").to_dict() == {"a": "y", "b": "w"}


def test_spotify_tracks_has_one_row_per_track_with_its_main_playlist_genre() -> None:
    tracks = spotify_tracks(spotify_rows())
    assert tracks[Col.TRACK_ID].tolist() == ["t1", "t2", "t3"]
    assert tracks.set_index(Col.TRACK_ID)["playlist_genre"].to_dict() == {
        "t1": "pop",
        "t2": "pop",
        "t3": "r&b",
    }
    assert tracks[Col.ARTIST_NORM].tolist() == ["weeknd", "weeknd", "beyonce"]
    assert tracks[Col.TITLE_NORM].tolist() == ["starboy", "blinding lights", "halo"]


def test_lyrics_match_by_normalised_artist_and_title_and_through_a_featured_artist() -> None:
    tracks, counts = match_lyrics(spotify_tracks(spotify_rows()), lyric_rows())
    assert tracks.set_index(Col.TRACK_ID)["has_lyrics"].to_dict() == {"t1": True, "t2": True, "t3": True}
    # "Unknown Song" matches nothing; "Blinding Lights" matches only through its featured artist.
    assert counts == {
        "lyrics_rows": 4,
        "lyrics_rows_matched": 3,
        "spotify_tracks": 3,
        "spotify_tracks_matched": 3,
    }


def test_artist_profiles_average_audio_and_list_every_genre() -> None:
    profiles = artist_profiles(spotify_tracks(spotify_rows())).set_index(Col.ARTIST_NORM)
    weeknd = profiles.loc["weeknd"]
    assert weeknd[Col.N_TRACKS] == 2
    assert weeknd["danceability"] == pytest.approx((0.8 + 0.4) / 2)
    assert weeknd[Col.GENRE] == "pop" and weeknd[Col.GENRES] == "pop"
    assert profiles.loc["beyonce", Col.GENRES] == "r&b"


def test_artist_lyrics_joins_each_artists_songs_and_drops_missing_text() -> None:
    lyrics = pd.DataFrame({"artist": ["Weeknd", "The Weeknd", "Beyonce"], "lyrics": ["a", "b", None]})
    joined = artist_lyrics(lyrics).set_index(Col.ARTIST_NORM)
    assert joined.to_dict("index") == {"weeknd": {Col.N_LYRICS: 2, Col.LYRICS: f"a{LYRIC_SEPARATOR}b"}}


def test_attach_to_artists_fills_unmatched_artists_with_zero_counts_and_no_genre() -> None:
    tracks = spotify_tracks(spotify_rows())
    artists = pd.DataFrame(
        {
            Col.ITEM: ["1", "2", "3"],
            Col.NAME: ["The Weeknd", "Björk", "Beyoncé"],
            Col.NAME_NORM: ["weeknd", "bjork", "beyonce"],
        }
    )
    merged, counts = attach_to_artists(artists, artist_profiles(tracks), artist_lyrics(lyric_rows()))
    by_id = merged.set_index(Col.ITEM)
    assert by_id[Col.N_TRACKS].tolist() == [2, 0, 1]
    assert by_id[Col.N_LYRICS].tolist() == [1, 0, 1]
    assert by_id.loc["2", Col.GENRES] == "" and np.isnan(by_id.loc["2", "danceability"])
    assert counts == {
        "lastfm_artists": 3,
        "lastfm_artists_with_spotify": 2,
        "lastfm_artists_with_lyrics": 2,
        "spotify_artists": 2,
    }
