"""Data: sources, schemas, cleaning and joins: raw files in, the prepared contract tables out.

Modules
-------
sources
    Registry of the data sets (folder, URL, sha256, row counts); ingest from a local copy or a download.
schemas
    ``TableSchema`` of every raw table; ``read_table`` validates (errors name file, row, column).
clean
    Counted repair rules.
normalize
    Name normalisation for joins.
joins
    Spotify x Genius by artist + title, then artist profiles onto Last.fm artists.
prepare
    The ``prepare`` stage: validated raw tables -> prepared tables + ``quality.json``.
"""

__all__ = ["clean", "joins", "normalize", "prepare", "schemas", "sources"]
