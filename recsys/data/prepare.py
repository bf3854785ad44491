"""The prepare stage: validated raw tables in, cleaned and joined Parquet tables plus a quality report out.

Outputs in ``out_dir``: ``interactions.parquet``, ``items.parquet``, ``item_tags.parquet``,
``tracks.parquet``, ``quality.json`` and ``quality.txt``. They are written only after every table passed
validation, each atomically, so a failure leaves the previous outputs untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import INTERACTIONS_COLUMNS, ITEM_KINDS, ITEM_TAGS_COLUMNS, ITEMS_COLUMNS, Col
from recsys.config import PrepareParams
from recsys.data import clean, joins
from recsys.data.normalize import normalize_names
from recsys.data.schemas import (
    ARTISTS,
    LYRICS_SONGS,
    SPOTIFY_SONGS,
    TAGS,
    USER_ARTISTS,
    USER_TAGGED_ARTISTS,
    TableSchema,
    read_table,
)
from recsys.errors import DataError
from recsys.io import write_json, write_parquet, write_text
from recsys.paths import INTERACTIONS_TABLE, ITEM_TAGS_TABLE, ITEMS_TABLE, QUALITY_JSON, QUALITY_TEXT

LASTFM_SOURCE = "lastfm"


@dataclass
class Prepared:
    """The prepared tables and the data-quality report that describes how they were made."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    item_tags: pd.DataFrame
    tracks: pd.DataFrame
    quality: dict[str, Any] = field(default_factory=dict)


def _record(
    quality: dict[str, Any], table: str, rows_in: int, rows_out: int, repairs: dict[str, int]
) -> None:
    quality["tables"][table] = {"rows_in": rows_in, "rows_out": rows_out, "repairs": repairs}


def read_checked(raw_dir: Path, schema: TableSchema, quality: dict[str, Any]) -> pd.DataFrame:
    """Read and validate one raw table, recording its rows and parse repairs in ``quality``."""
    frame, parse_repairs = read_table(raw_dir, schema)
    quality["tables"][schema.name] = {"rows_in": len(frame), "repairs": dict(parse_repairs)}
    return frame


def finish(quality: dict[str, Any], table: str, frame: pd.DataFrame, repairs: dict[str, int]) -> None:
    """Record a cleaned table's repairs and output rows in ``quality``."""
    entry = quality["tables"][table]
    entry["repairs"].update(repairs)
    entry["rows_out"] = len(frame)


def read_songs(raw_dir: Path, quality: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Spotify songs and Genius lyrics tables, validated and cleaned (counts recorded in ``quality``)."""
    spotify = read_checked(raw_dir, SPOTIFY_SONGS, quality)
    spotify, repairs = clean.clean_spotify(spotify)
    finish(quality, SPOTIFY_SONGS.name, spotify, repairs)
    lyrics = read_checked(raw_dir, LYRICS_SONGS, quality)
    lyrics, repairs = clean.clean_lyrics(lyrics)
    finish(quality, LYRICS_SONGS.name, lyrics, repairs)
    return spotify, lyrics


def data_summary(interactions: pd.DataFrame, items: pd.DataFrame) -> dict[str, int]:
    """``quality.json``'s summary: listeners, items, items with a listen, interactions."""
    return {
        "users": int(interactions[Col.USER].nunique()),
        "items": len(items),
        "items_with_listens": int((items[Col.N_LISTENERS] > 0).sum()),
        "interactions": len(interactions),
    }


def build_interactions(
    user_artists: pd.DataFrame, params: PrepareParams
) -> tuple[pd.DataFrame, dict[str, int]]:
    """String ids, raw plays, confidence weights; users and items below the minimum counts removed."""
    frame = pd.DataFrame(
        {
            Col.USER: user_artists["userID"].astype(str),
            Col.ITEM: user_artists["artistID"].astype(str),
            Col.PLAYS: user_artists["weight"].astype(np.int64),
        }
    )
    frame, dropped = clean.apply_min_counts(
        frame, Col.USER, Col.ITEM, params.min_user_interactions, params.min_item_users
    )
    frame[Col.WEIGHT] = clean.confidence(frame[Col.PLAYS], params)
    frame[Col.SOURCE] = LASTFM_SOURCE
    frame = frame.sort_values([Col.USER, Col.ITEM], kind="stable").reset_index(drop=True)
    return frame[list(INTERACTIONS_COLUMNS)], dropped


def build_item_tags(tagged: pd.DataFrame, tags: pd.DataFrame, min_users: int) -> pd.DataFrame:
    """Per (artist, tag): how many distinct users applied the tag; rare assignments removed."""
    named = tagged.merge(tags, on="tagID")
    counts = named.groupby(["artistID", "tag"])["userID"].nunique().rename(Col.COUNT).reset_index()
    counts = counts[counts[Col.COUNT] >= min_users]
    out = pd.DataFrame(
        {Col.ITEM: counts["artistID"].astype(str), Col.TAG: counts["tag"], Col.COUNT: counts[Col.COUNT]}
    )
    return out.sort_values([Col.ITEM, Col.COUNT, Col.TAG], ascending=[True, False, True]).reset_index(
        drop=True
    )[list(ITEM_TAGS_COLUMNS)]


def build_items(
    artists: pd.DataFrame, interactions: pd.DataFrame, tracks: pd.DataFrame, lyrics: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per artist: names, listening counts, Spotify audio profile and genres, lyrics."""
    base = pd.DataFrame({Col.ITEM: artists["id"].astype(str), Col.NAME: artists["name"].astype(str)})
    base[Col.NAME_NORM] = normalize_names(base[Col.NAME]).astype(str)
    stats = interactions.groupby(Col.ITEM).agg(
        **{Col.N_LISTENERS: (Col.USER, "nunique"), Col.TOTAL_PLAYS: (Col.PLAYS, "sum")}
    )
    base = base.merge(stats, how="left", left_on=Col.ITEM, right_index=True)
    base[[Col.N_LISTENERS, Col.TOTAL_PLAYS]] = (
        base[[Col.N_LISTENERS, Col.TOTAL_PLAYS]].fillna(0).astype(np.int64)
    )
    items, join_stats = joins.attach_to_artists(
        base, joins.artist_profiles(tracks), joins.artist_lyrics(lyrics)
    )
    items[Col.KIND] = "artist"
    items[Col.ARTIST] = items[Col.NAME]
    items[Col.RELEASE_DATE] = None
    items = items.sort_values(Col.ITEM, kind="stable").reset_index(drop=True)
    return items[list(ITEMS_COLUMNS)], join_stats


def listens_with_spotify(interactions: pd.DataFrame, items: pd.DataFrame) -> dict[str, int]:
    """How many listen rows and users involve an artist that has Spotify tracks."""
    enriched = items.loc[items[Col.N_TRACKS] > 0, Col.ITEM]
    rows = interactions[Col.ITEM].isin(enriched)
    return {
        "listens_with_spotify": int(rows.sum()),
        "users_with_spotify_artist": int(interactions.loc[rows, Col.USER].nunique()),
    }


def prepare(raw_dir: Path, params: PrepareParams) -> Prepared:
    """Validate, clean and join every raw table (pure apart from reading ``raw_dir``)."""
    quality: dict[str, Any] = {"tables": {}, "joins": {}, "params": params.model_dump()}
    artists = read_checked(raw_dir, ARTISTS, quality)
    artists, repairs = clean.clean_artists(artists, str(raw_dir / ARTISTS.path))
    finish(quality, ARTISTS.name, artists, repairs)

    user_artists = read_checked(raw_dir, USER_ARTISTS, quality)
    user_artists, repairs = clean.clean_user_artists(
        user_artists, artists["id"], params, str(raw_dir / USER_ARTISTS.path)
    )
    interactions, dropped = build_interactions(user_artists, params)
    finish(quality, USER_ARTISTS.name, interactions, repairs | dropped)

    tags = read_checked(raw_dir, TAGS, quality)
    tags, repairs = clean.clean_tags(tags)
    finish(quality, TAGS.name, tags, repairs)
    tagged = read_checked(raw_dir, USER_TAGGED_ARTISTS, quality)
    tagged, repairs = clean.clean_tagged_artists(tagged, artists["id"], tags["tagID"])
    finish(quality, USER_TAGGED_ARTISTS.name, tagged, repairs)

    spotify, lyrics = read_songs(raw_dir, quality)

    tracks, lyric_stats = joins.match_lyrics(joins.spotify_tracks(spotify), lyrics)
    items, artist_stats = build_items(artists, interactions, tracks, lyrics)
    quality["joins"] = lyric_stats | artist_stats | listens_with_spotify(interactions, items)
    quality["summary"] = data_summary(interactions, items)
    item_tags = build_item_tags(tagged, tags, params.min_tag_users)
    item_tags = item_tags[item_tags[Col.ITEM].isin(items[Col.ITEM])].reset_index(drop=True)
    return Prepared(interactions, items, item_tags, tracks, quality)


def quality_text(quality: dict[str, Any]) -> str:
    """The quality report as plain text for people."""
    lines = ["Data-quality report", "===================", ""]
    for table, entry in quality["tables"].items():
        lines.append(f"{table}: {entry['rows_in']:,} rows in, {entry.get('rows_out', 0):,} rows out")
        lines += [f"  - {rule}: {count:,}" for rule, count in entry["repairs"].items() if count]
    lines += ["", "Joins (by normalised names)"]
    joined = quality["joins"]
    lines += [f"  - {key}: {value:,}" for key, value in joined.items()]
    if joined.get("lyrics_rows"):
        rate = joined["lyrics_rows_matched"] / joined["lyrics_rows"]
        lines.append(f"  Spotify x Genius: {rate:.1%} of lyric rows matched a Spotify track")
    if joined.get("lastfm_artists"):
        rate = joined["lastfm_artists_with_spotify"] / joined["lastfm_artists"]
        lines.append(f"  Last.fm x Spotify: {rate:.1%} of artists have an audio profile")
    lines += ["", "Summary"] + [f"  - {key}: {value:,}" for key, value in quality["summary"].items()]
    return "\n".join(lines) + "\n"


def check_contract(prepared: Prepared) -> None:
    """Raise :class:`DataError` unless the tables keep the data-set contract (``docs/architecture.md``).

    Whatever adapter made them: the canonical columns in order, string ids, unique items with a name and a
    ``kind`` of ``artist`` or ``track``, unique (user, item) pairs of known items with a positive weight and
    non-negative plays, and tags of known items with positive counts. Every stage after ``prepare`` relies
    on exactly this and on nothing else about the data set.
    """
    tables = (
        ("interactions", prepared.interactions, INTERACTIONS_COLUMNS),
        ("items", prepared.items, ITEMS_COLUMNS),
        ("item_tags", prepared.item_tags, ITEM_TAGS_COLUMNS),
    )
    for name, frame, columns in tables:
        if list(frame.columns) != list(columns):
            raise DataError(
                f"columns {list(frame.columns)} are not the contract's {list(columns)}", file=name
            )
    items, interactions, tags = prepared.items, prepared.interactions, prepared.item_tags

    def fail(table: str, rows: pd.Series, column: str, problem: str) -> None:
        if rows.any():
            first = int(np.flatnonzero(rows.to_numpy())[0]) + 1  # 1-based, like the files adapter
            raise DataError(f"{problem} ({int(rows.sum())} rows)", file=table, row=first, column=column)

    fail("items", items[Col.ITEM].duplicated(), Col.ITEM, "duplicate item id")
    fail(
        "items", items[Col.NAME].isna() | (items[Col.NAME].astype(str) == ""), Col.NAME, "item without a name"
    )
    fail("items", ~items[Col.KIND].isin(ITEM_KINDS), Col.KIND, f"kind not one of {list(ITEM_KINDS)}")
    known = items[Col.ITEM]
    fail(
        "interactions", interactions.duplicated([Col.USER, Col.ITEM]), Col.ITEM, "repeated (user, item) pair"
    )
    fail("interactions", ~interactions[Col.ITEM].isin(known), Col.ITEM, "item not in the items table")
    fail("interactions", ~(interactions[Col.WEIGHT] > 0), Col.WEIGHT, "weight not positive")
    fail("interactions", ~(interactions[Col.PLAYS] >= 0), Col.PLAYS, "negative plays")
    fail("item_tags", ~tags[Col.ITEM].isin(known), Col.ITEM, "tag of an item not in the items table")
    fail("item_tags", ~(tags[Col.COUNT] > 0), Col.COUNT, "tag count not positive")


def write_prepared(prepared: Prepared, out_dir: Path) -> None:
    """Check the contract, then write every table and the report (each file atomically; all computed and
    checked before the first write)."""
    check_contract(prepared)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / INTERACTIONS_TABLE, prepared.interactions)
    write_parquet(out_dir / ITEMS_TABLE, prepared.items)
    write_parquet(out_dir / ITEM_TAGS_TABLE, prepared.item_tags)
    if len(prepared.tracks.columns):  # the Spotify track table; a team's own files have none
        write_parquet(out_dir / "tracks.parquet", prepared.tracks)
    write_json(out_dir / QUALITY_JSON, prepared.quality)
    write_text(out_dir / QUALITY_TEXT, quality_text(prepared.quality))
