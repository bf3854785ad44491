"""The parts of the model card that differ for a song catalogue: intended use, data, limitations, wording.

:func:`recsys.reporting.model_card.render_model_card` uses them when the data set's items are tracks; the
model, protocol and result sections are the artist card's, reworded by :func:`about_tracks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsys.reporting.formatting import fmt, markdown_table

SONG_USES = """## Intended use

- Recommending Spotify tracks to a playlist (playlist continuation), to a new listener from a few favourite
  songs, and similar songs, through the BentoML service, for research and demonstration; new releases are
  ranked from their audio features, lyric topics, genres and artist/album tags alone.
- Comparing recommenders on a reproducible protocol where content features matter most.

## Out of scope

- Predicting what any person will play: the listeners are 468 curated playlists of 2020, not people.
- Displaying or distributing lyrics; any decision about people.
"""
SONG_LIMITATIONS = """## Limitations

- Very sparse: most tracks sit in a single playlist, so a held-out track was usually never seen in training
  and collaborative models (ALS, EASE, kNN) have almost nothing to go on; the scores are low for every
  model and the comparison mostly measures content features.
- Playlists are editorial and genre-coherent (six genres, 24 subgenres): a genre-based ranking is already
  strong, and offline metrics overstate how well this transfers to real listening.
- Every model's settings come from a search on the songs' validation part
  (`recsys/presets/spotify-songs.yaml`); EASE's best L2 (10) and ALS's best regularization (3) sit at the
  low edge of their grids, so wider grids could still help them.
- Lyrics cover only about 480 of 28,352 tracks; audio features cover nearly all.
- Popularity re-ranking raises nDCG here (see the mitigation table) because the held-out tracks are mostly
  tracks no training playlist holds, i.e. the least popular ones: an artefact of this protocol, not a
  recommendation that listeners would prefer; the chosen strength should be checked online before use.
"""


def song_data_section(quality: Mapping[str, Any] | None) -> str:
    """The data section of a song catalogue's card, with the counts of ``quality.json`` when present."""
    summary = (quality or {}).get("summary", {})
    joins = (quality or {}).get("joins", {})
    rows = [
        [
            "playlists (listeners) / tracks",
            f"{fmt(summary.get('users', '-'))} / {fmt(summary.get('items', '-'))}",
        ],
        ["playlist-track pairs after cleaning", fmt(summary.get("interactions", "-"))],
        ["tracks with Genius lyrics", fmt(joins.get("tracks_with_lyrics", "-"))],
    ]
    return "\n".join(
        [
            "## Data",
            "",
            "| source | role | licence and terms |",
            "| --- | --- | --- |",
            "| Spotify songs, TidyTuesday 2020-01-21 | playlists x tracks; each track's audio "
            "features, playlist genres and subgenres, artist, album and release date | repository licence "
            "MIT (collected from the Spotify Web API) |",
            "| PopLyrics-1K (`ashuwhy/poplyrics-1k`, Genius) | lyrics matched per track by normalised "
            "primary artist + title | repository MIT, but the lyrics are copyrighted: used only to compute "
            "topic features, never stored in models, reports or responses |",
            "",
            markdown_table(["measure", "value"], rows),
            "",
        ]
    )


_TRACK_WORDS = (
    ("an artist's", "a track's"),
    ("per artist", "per track"),
    ("Users with", "Playlists with"),
    ("from their listening", "from the tracks they hold"),
    ("artists", "tracks"),
    ("artist", "track"),
)


def about_tracks(section: str) -> str:
    """A shared section's wording for a song catalogue (its numbers are untouched)."""
    for before, after in _TRACK_WORDS:
        section = section.replace(before, after)
    return section
