"""The ``spotify-songs`` data set: Spotify tracks as items and the playlists that hold them as listeners.

From the TidyTuesday Spotify export (one row per playlist entry: 471 playlists, 28,356 tracks) and the
Genius lyrics, into the canonical tables of :mod:`recsys.data.prepare`:

- interactions: one row per distinct (playlist, track), ``plays`` 1 (a playlist holds a track or not),
  playlists with fewer than ``dataset.songs.min_playlist_tracks`` tracks left out;
- items: every track with its own audio features (not averaged per artist), its playlists' genres, its
  album's release date, ``"Title - Artist"`` as its name and the Genius lyrics matched by normalised
  primary artist + title (:func:`recsys.data.joins.track_lyrics`);
- item tags: each playlist subgenre the track was filed under (counted in playlists), its artist
  (``artist: X``) and album (``album: Y``), so tracks of one artist or album share features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import AUDIO_FEATURES, INTERACTIONS_COLUMNS, ITEM_TAGS_COLUMNS, ITEMS_COLUMNS, Col
from recsys.config import Params
from recsys.data import clean, joins
from recsys.data.normalize import normalize_names
from recsys.data.prepare import Prepared, data_summary, read_songs
from recsys.data.schemas import SPOTIFY_SONGS

SOURCE = "spotify"


def prepare_songs(raw_dir: Path, params: Params) -> Prepared:
    """Validate and clean the Spotify and Genius tables, then build the canonical song tables."""
    quality: dict[str, Any] = {
        "tables": {},
        "joins": {},
        "params": params.prepare.model_dump(),
        "dataset": "spotify-songs",
    }
    spotify, lyrics = read_songs(raw_dir, quality)

    tracks, lyric_stats = joins.match_lyrics(joins.spotify_tracks(spotify), lyrics)
    interactions, dropped = playlist_interactions(spotify, params)
    quality["tables"][SPOTIFY_SONGS.name]["repairs"].update(dropped)
    items = track_items(spotify, tracks, joins.track_lyrics(tracks, lyrics), interactions)
    quality["joins"] = lyric_stats | {"tracks_with_lyrics": int((items[Col.N_LYRICS] > 0).sum())}
    quality["summary"] = data_summary(interactions, items)
    return Prepared(interactions, items, track_tags(spotify, items), tracks, quality)


def playlist_interactions(spotify: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, dict[str, int]]:
    """Distinct (playlist, track) pairs as listens; short playlists and rare tracks removed."""
    pairs = spotify[["playlist_id", "track_id"]].drop_duplicates()
    frame = pd.DataFrame(
        {
            Col.USER: pairs["playlist_id"].astype(str),
            Col.ITEM: pairs["track_id"].astype(str),
            Col.PLAYS: np.ones(len(pairs), dtype=np.int64),
        }
    )
    repeated = int(len(spotify) - len(pairs))
    frame, dropped = clean.apply_min_counts(
        frame, Col.USER, Col.ITEM, params.dataset.songs.min_playlist_tracks, params.prepare.min_item_users
    )
    frame[Col.WEIGHT] = clean.confidence(frame[Col.PLAYS], params.prepare)
    frame[Col.SOURCE] = SOURCE
    frame = frame.sort_values([Col.USER, Col.ITEM], kind="stable").reset_index(drop=True)
    return frame[list(INTERACTIONS_COLUMNS)], {"repeated_playlist_entry": repeated, **dropped}


def track_items(
    spotify: pd.DataFrame, tracks: pd.DataFrame, lyrics: pd.Series, interactions: pd.DataFrame
) -> pd.DataFrame:
    """One row per track in the canonical items columns (``kind`` ``track``)."""
    first = spotify.drop_duplicates("track_id").set_index("track_id")
    frame = tracks.set_index(Col.TRACK_ID)
    items = pd.DataFrame(index=frame.index)
    items[Col.NAME] = frame[Col.TRACK_NAME].astype(str) + " - " + frame[Col.ARTIST].astype(str)
    items[Col.NAME_NORM] = normalize_names(items[Col.NAME]).astype(str)
    listeners = interactions.groupby(Col.ITEM)[Col.USER].nunique()
    items[Col.N_LISTENERS] = listeners.reindex(items.index).fillna(0).astype(np.int64)
    items[Col.TOTAL_PLAYS] = items[Col.N_LISTENERS]
    items[Col.N_TRACKS] = 1
    items[Col.GENRE] = frame["playlist_genre"]
    genres = spotify.dropna(subset=["playlist_genre"]).groupby("track_id")["playlist_genre"]
    items[Col.GENRES] = genres.agg(lambda g: "|".join(sorted(set(g)))).reindex(items.index).fillna("")
    for name in AUDIO_FEATURES:
        items[name] = frame[name].astype(np.float64)
    text = lyrics.reindex(items.index)
    items[Col.N_LYRICS] = text.notna().astype(np.int64)
    items[Col.LYRICS] = text
    items[Col.KIND] = "track"
    items[Col.ARTIST] = frame[Col.ARTIST].astype(str)
    items[Col.RELEASE_DATE] = iso_dates(first["track_album_release_date"].reindex(items.index))
    items = items.reset_index(names=Col.ITEM).sort_values(Col.ITEM, kind="stable").reset_index(drop=True)
    return items[list(ITEMS_COLUMNS)]


def track_tags(spotify: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per (track, tag): playlist subgenres counted in playlists, plus the artist and the album."""
    entries = spotify.dropna(subset=["playlist_subgenre"])
    subgenres = entries.groupby(["track_id", "playlist_subgenre"])["playlist_id"].nunique()
    subgenres = subgenres.rename(Col.COUNT).reset_index().rename(columns={"playlist_subgenre": Col.TAG})
    first = spotify.drop_duplicates("track_id").set_index("track_id")
    weight = items.set_index(Col.ITEM)[Col.N_LISTENERS].clip(lower=1)
    credits = []
    for column, prefix in (("track_artist", "artist"), ("track_album_name", "album")):
        names = first[column].dropna().astype(str)
        credits.append(
            pd.DataFrame(
                {
                    "track_id": names.index,
                    Col.TAG: f"{prefix}: " + names.to_numpy(),
                    Col.COUNT: weight.reindex(names.index).fillna(1).astype(np.int64).to_numpy(),
                }
            )
        )
    tags = pd.concat([subgenres, *credits], ignore_index=True).rename(columns={"track_id": Col.ITEM})
    tags = tags[tags[Col.ITEM].isin(items[Col.ITEM])]
    tags[Col.COUNT] = tags[Col.COUNT].astype(np.int64)
    ordered = tags.sort_values([Col.ITEM, Col.COUNT, Col.TAG], ascending=[True, False, True])
    return ordered.drop_duplicates([Col.ITEM, Col.TAG]).reset_index(drop=True)[list(ITEM_TAGS_COLUMNS)]


def iso_dates(values: pd.Series) -> pd.Series:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (cleaned) -> ``YYYY-MM-DD`` (missing parts: 01), or missing.

    Examples
    --------
    >>> iso_dates(pd.Series(["2019-06-14", "2012", "2001-05", None])).tolist()
    ['2019-06-14', '2012-01-01', '2001-05-01', None]
    """
    text = values.astype("string")
    padded = text.str.pad(10, side="right", fillchar="*").str.replace(
        r"^(\d{4})\*{6}$", r"\1-01-01", regex=True
    )
    padded = padded.str.replace(r"^(\d{4}-\d{2})\*{3}$", r"\1-01", regex=True)
    return padded.astype(object).where(text.notna(), None)
