"""Joins across sources by normalised names.

1. Spotify x Genius: a lyric row matches the Spotify tracks with the same normalised primary artist and
   normalised title (see :mod:`recsys.data.normalize`); a lyric row also matches through its featured artist.
2. Onto Last.fm: each Last.fm artist gets the audio profile (mean audio features), the genres and the
   track count of the Spotify artist with the same normalised name, and the lyrics of the Genius songs
   credited to that name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.columns import AUDIO_FEATURES, Col
from recsys.data.normalize import normalize_name, normalize_title, primary_artist

LYRIC_SEPARATOR = "\n\n"


def _artist_norm(names: pd.Series) -> pd.Series:
    return names.map(lambda name: normalize_name(primary_artist(name)))


def mode_by(frame: pd.DataFrame, key: str, column: str) -> pd.Series:
    """The most frequent non-missing ``column`` value per ``key`` (ties: alphabetically first)."""
    counts = frame.groupby([key, column]).size().rename("n").reset_index()
    counts = counts.sort_values([key, "n", column], ascending=[True, False, True])
    return counts.drop_duplicates(key).set_index(key)[column]


def spotify_tracks(spotify: pd.DataFrame) -> pd.DataFrame:
    """One row per Spotify track: audio features, popularity and its most common playlist genre."""
    genre = mode_by(spotify, "track_id", "playlist_genre")
    first = spotify.drop_duplicates("track_id").set_index("track_id")
    tracks = pd.DataFrame(
        {
            Col.TRACK_NAME: first["track_name"],
            Col.ARTIST: first["track_artist"],
            Col.POPULARITY: first["track_popularity"],
            **{name: first[name] for name in AUDIO_FEATURES},
        }
    )
    tracks["playlist_genre"] = genre.reindex(tracks.index)
    tracks = tracks.reset_index(names=Col.TRACK_ID)
    tracks[Col.ARTIST_NORM] = _artist_norm(tracks[Col.ARTIST])
    tracks[Col.TITLE_NORM] = tracks[Col.TRACK_NAME].map(normalize_title)
    return tracks


def _lyric_keys(lyrics: pd.DataFrame) -> pd.DataFrame:
    """(lyric row, artist_norm, title_norm) for the main artist and every featured artist."""
    title = lyrics["track_name"].map(normalize_title)
    keys = [
        pd.DataFrame(
            {"row": lyrics.index, Col.ARTIST_NORM: _artist_norm(lyrics["artist"]), Col.TITLE_NORM: title}
        )
    ]
    if "featured_artist" in lyrics:
        featured = lyrics["featured_artist"].fillna("").astype(str).str.split(r"\s*(?:,|&| and )\s*")
        exploded = featured.explode()
        exploded = exploded[exploded.str.len() > 0]
        keys.append(
            pd.DataFrame(
                {
                    "row": exploded.index,
                    Col.ARTIST_NORM: _artist_norm(exploded),
                    Col.TITLE_NORM: title[exploded.index],
                }
            )
        )
    return pd.concat(keys, ignore_index=True).drop_duplicates()


def _lyric_pairs(tracks: pd.DataFrame, lyrics: pd.DataFrame) -> pd.DataFrame:
    """(track_id, lyric ``row``) for every Spotify track and lyric row with the same artist + title."""
    keys = _lyric_keys(lyrics)
    keys = keys[(keys[Col.ARTIST_NORM] != "") & (keys[Col.TITLE_NORM] != "")]
    return tracks[[Col.TRACK_ID, Col.ARTIST_NORM, Col.TITLE_NORM]].merge(
        keys, on=[Col.ARTIST_NORM, Col.TITLE_NORM]
    )


def match_lyrics(tracks: pd.DataFrame, lyrics: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Flag the Spotify tracks that have Genius lyrics; returns the track table and match counts."""
    pairs = _lyric_pairs(tracks, lyrics)
    matched_tracks = set(pairs[Col.TRACK_ID])
    out = tracks.assign(has_lyrics=tracks[Col.TRACK_ID].isin(matched_tracks))
    return out, {
        "lyrics_rows": len(lyrics),
        "lyrics_rows_matched": int(pairs["row"].nunique()),
        "spotify_tracks": len(tracks),
        "spotify_tracks_matched": len(matched_tracks),
    }


def track_lyrics(tracks: pd.DataFrame, lyrics: pd.DataFrame) -> pd.Series:
    """Per Spotify track id: the Genius lyrics matched by normalised artist + title (first match kept)."""
    pairs = _lyric_pairs(tracks, lyrics).sort_values([Col.TRACK_ID, "row"]).drop_duplicates(Col.TRACK_ID)
    text = lyrics["lyrics"].reindex(pairs["row"].to_numpy()).to_numpy()
    found = pd.Series(text, index=pairs[Col.TRACK_ID].to_numpy(), name=Col.LYRICS, dtype=object)
    return found[found.notna()]


def artist_profiles(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per normalised Spotify artist: track count, mean audio features, main genre and all genres."""
    grouped = tracks[tracks[Col.ARTIST_NORM] != ""].groupby(Col.ARTIST_NORM)
    profile = grouped[list(AUDIO_FEATURES)].mean()
    profile[Col.N_TRACKS] = grouped.size()
    genres = grouped["playlist_genre"]
    profile[Col.GENRE] = mode_by(tracks, Col.ARTIST_NORM, "playlist_genre").reindex(profile.index)
    profile[Col.GENRES] = genres.agg(lambda g: "|".join(sorted(set(g.dropna()))))
    return profile.reset_index()


def artist_lyrics(lyrics: pd.DataFrame) -> pd.DataFrame:
    """Per normalised lyric artist: number of songs and their lyrics joined (text stays internal)."""
    frame = pd.DataFrame({Col.ARTIST_NORM: _artist_norm(lyrics["artist"]), Col.LYRICS: lyrics["lyrics"]})
    frame = frame[(frame[Col.ARTIST_NORM] != "") & frame[Col.LYRICS].notna()]
    grouped = frame.groupby(Col.ARTIST_NORM)[Col.LYRICS]
    return pd.DataFrame(
        {Col.N_LYRICS: grouped.size(), Col.LYRICS: grouped.agg(LYRIC_SEPARATOR.join)}
    ).reset_index()


def attach_to_artists(
    artists: pd.DataFrame, profiles: pd.DataFrame, lyrics_by_artist: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Give each artist (columns item_id, name, name_norm) its Spotify profile and lyrics by name."""
    merged = artists.merge(profiles, how="left", left_on=Col.NAME_NORM, right_on=Col.ARTIST_NORM)
    merged = merged.drop(columns=[Col.ARTIST_NORM])
    merged = merged.merge(lyrics_by_artist, how="left", left_on=Col.NAME_NORM, right_on=Col.ARTIST_NORM)
    merged = merged.drop(columns=[Col.ARTIST_NORM])
    merged[Col.N_TRACKS] = merged[Col.N_TRACKS].fillna(0).astype(np.int64)
    merged[Col.N_LYRICS] = merged[Col.N_LYRICS].fillna(0).astype(np.int64)
    merged[Col.GENRES] = merged[Col.GENRES].fillna("")
    with_spotify = merged[Col.N_TRACKS] > 0
    return merged, {
        "lastfm_artists": len(merged),
        "lastfm_artists_with_spotify": int(with_spotify.sum()),
        "lastfm_artists_with_lyrics": int((merged[Col.N_LYRICS] > 0).sum()),
        "spotify_artists": len(profiles),
    }
