"""Column names, defined once. Every module refers to these constants instead of string literals."""

from __future__ import annotations


class Col:
    """Columns of the prepared tables (``data/prepared/*.parquet``) and of feedback events."""

    USER = "user_id"  # external user id, a string
    ITEM = "item_id"  # external item id (an artist or a track), a string
    WEIGHT = "weight"  # implicit-feedback confidence derived from PLAYS
    PLAYS = "plays"  # raw Last.fm listen count
    TIMESTAMP = "timestamp"
    SOURCE = "source"
    NAME = "name"  # display name: the artist's, or a track's "Title - Artist"
    NAME_NORM = "name_norm"  # normalised artist name used for joins
    TAG = "tag"
    COUNT = "count"
    N_LISTENERS = "n_listeners"
    TOTAL_PLAYS = "total_plays"
    N_TRACKS = "n_spotify_tracks"
    GENRE = "genre"  # the artist's most common Spotify playlist genre (nullable)
    GENRES = "genres"  # every Spotify playlist genre of the artist, "|"-joined, sorted
    LYRICS = "lyrics"  # concatenated lyrics of the artist's matched songs (nullable; never served)
    N_LYRICS = "n_lyrics_songs"
    KIND = "kind"  # "artist" or "track"
    RELEASE_DATE = "release_date"  # ISO date of a track's album release (nullable; year-only dates -> Jan 1)
    # Feedback events
    EVENT = "event"
    EVENT_ID = "event_id"
    ARM = "arm"  # the experiment arm whose list held the item (champion or challenger); empty outside one
    # Spotify x Genius track table
    TRACK_ID = "track_id"
    TRACK_NAME = "track_name"
    ARTIST = "artist"
    ARTIST_NORM = "artist_norm"
    TITLE_NORM = "title_norm"
    POPULARITY = "track_popularity"


AUDIO_FEATURES: tuple[str, ...] = (
    "danceability",
    "energy",
    "loudness",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
    "duration_ms",
)
"""Spotify audio features averaged into each artist's audio profile (columns of items.parquet)."""

FEEDBACK_EVENTS: tuple[str, ...] = ("play", "like", "skip", "dislike")
EXPERIMENT_ARMS: tuple[str, ...] = ("champion", "challenger")
"""The arms of an online experiment (an event's ``arm``: the model whose list held the item)."""

INTERACTIONS_COLUMNS: tuple[str, ...] = (Col.USER, Col.ITEM, Col.WEIGHT, Col.PLAYS, Col.SOURCE)
ITEMS_COLUMNS: tuple[str, ...] = (
    Col.ITEM,
    Col.NAME,
    Col.NAME_NORM,
    Col.N_LISTENERS,
    Col.TOTAL_PLAYS,
    Col.N_TRACKS,
    Col.GENRE,
    Col.GENRES,
    *AUDIO_FEATURES,
    Col.N_LYRICS,
    Col.LYRICS,
    Col.KIND,
    Col.ARTIST,
    Col.RELEASE_DATE,
)
"""The canonical items table every stage after ``prepare`` reads, whatever the data set (see
docs/architecture.md)."""

ITEM_KINDS: tuple[str, ...] = ("artist", "track")
ITEM_TAGS_COLUMNS: tuple[str, ...] = (Col.ITEM, Col.TAG, Col.COUNT)
