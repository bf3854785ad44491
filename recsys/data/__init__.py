"""Data: sources, schemas, cleaning and joins: raw files in, the prepared contract tables out.

Modules
-------
datasets
    The data-set adapters (``dataset.name``): each builds the canonical tables its own way.
songs
    The ``spotify-songs`` adapter: playlists x tracks.
own_files
    The ``files`` adapter: a team's own interactions and items files, checked row by row.
sources
    Registry of the data sets (folder, URL, sha256, row counts).
ingest
    The ingest stage: a local copy or a download, verified, landing whole or not at all.
raw_files
    A raw file's checks (sha256, rows) and staged landing.
fingerprint
    What the ingest stage will read, by content (the ``sources`` stage), so DVC knows when to ingest.
synthetic
    The ``synthetic`` data set: listeners x artists shaped like Last.fm 2K, at any size, seeded.
download
    Downloads with retries and backoff; zip archives.
schemas
    ``TableSchema`` of every raw table; ``read_table`` validates (errors name file, row, column).
clean
    Counted repair rules.
normalize
    Name normalisation for joins.
joins
    Spotify x Genius by artist + title, then artist profiles onto Last.fm artists.
prepare
    The ``lastfm-artists`` adapter and the prepared tables' writer: validated raw tables -> prepared
    tables + ``quality.json``.
"""

__all__ = [
    "clean",
    "datasets",
    "download",
    "fingerprint",
    "ingest",
    "joins",
    "normalize",
    "own_files",
    "prepare",
    "raw_files",
    "schemas",
    "songs",
    "sources",
    "synthetic",
]
