"""Schemas of the raw tables, and a reader that validates a file against one.

Fatal violations (undecodable bytes, wrong delimiter, missing column, a value that cannot be parsed in a
column marked ``on_invalid="fail"``, a value out of its range) raise :class:`~recsys.errors.DataError`
naming the file, the line (1-based, the header is line 1) and the column. Values in columns marked
``on_invalid="null"`` that cannot be parsed become missing and are counted instead.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsys.columns import AUDIO_FEATURES
from recsys.errors import DataError

Kind = Literal["int", "float", "str"]


@dataclass(frozen=True)
class Column:
    """One column: its type, whether it may be empty, its valid range, and what a bad value means."""

    name: str
    kind: Kind = "str"
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    on_invalid: Literal["fail", "null"] = "fail"


@dataclass(frozen=True)
class TableSchema:
    """A raw table: where it lives under its source folder, how it is encoded, and its columns."""

    name: str
    path: str
    columns: tuple[Column, ...]
    sep: str = "\t"
    encoding: str = "utf-8"
    key: tuple[str, ...] = ()
    fmt: Literal["csv", "parquet"] = "csv"
    extra_columns_ok: bool = True
    na_values: tuple[str, ...] = ("",)
    notes: Mapping[str, str] = field(default_factory=dict)


LASTFM = "hetrec2011-lastfm-2k"
SPOTIFY = "spotify-songs-tidytuesday-2020-01-21"
LYRICS = "poplyrics-1k"

USER_ARTISTS = TableSchema(
    "user_artists",
    f"{LASTFM}/user_artists.dat",
    (Column("userID", "int", min=0), Column("artistID", "int", min=0), Column("weight", "int", min=0)),
    key=("userID", "artistID"),
)
ARTISTS = TableSchema(
    "artists",
    f"{LASTFM}/artists.dat",
    (Column("id", "int", min=0), Column("name", nullable=True)),
    key=("id",),
)
TAGS = TableSchema(
    "tags",
    f"{LASTFM}/tags.dat",
    (Column("tagID", "int", min=0), Column("tagValue", nullable=True)),
    encoding="latin-1",
    key=("tagID",),
)
USER_TAGGED_ARTISTS = TableSchema(
    "user_taggedartists",
    f"{LASTFM}/user_taggedartists.dat",
    (
        Column("userID", "int", min=0),
        Column("artistID", "int", min=0),
        Column("tagID", "int", min=0),
        Column("day", "int", nullable=True, on_invalid="null"),
        Column("month", "int", nullable=True, on_invalid="null"),
        Column("year", "int", nullable=True, on_invalid="null"),
    ),
)
_UNIT = {name: (0.0, 1.0) for name in ("danceability", "energy", "speechiness", "acousticness")} | {
    name: (0.0, 1.0) for name in ("instrumentalness", "liveness", "valence")
}
SPOTIFY_SONGS = TableSchema(
    "spotify_songs",
    f"{SPOTIFY}/spotify_songs.csv",
    (
        Column("track_id"),
        Column("track_name", nullable=True),
        Column("track_artist", nullable=True),
        Column("track_popularity", "float", nullable=True, on_invalid="null"),
        Column("track_album_id", nullable=True),
        Column("track_album_name", nullable=True),
        Column("track_album_release_date", nullable=True),
        Column("playlist_id"),
        Column("playlist_genre", nullable=True),
        Column("playlist_subgenre", nullable=True),
        *(
            Column(name, "float", nullable=True, on_invalid="null", min=None, max=None)
            for name in AUDIO_FEATURES
        ),
    ),
    sep=",",
    # Exported from R: "NA" marks a missing value.
    na_values=("", "NA"),
    notes={"ranges": "audio features outside their documented range are set missing and counted"},
)
AUDIO_RANGES: dict[str, tuple[float, float]] = {
    **_UNIT,
    "loudness": (-60.0, 5.0),
    "tempo": (0.0, 300.0),
    "duration_ms": (1_000.0, 3_600_000.0),
}
LYRICS_SONGS = TableSchema(
    "lyrics",
    f"{LYRICS}/poplyric-1k.parquet",
    (
        Column("track_name"),
        Column("artist"),
        Column("lyrics", nullable=True),
        Column("release_date", nullable=True),
        Column("featured_artist", nullable=True),
    ),
    fmt="parquet",
)
RAW_TABLES: tuple[TableSchema, ...] = (
    USER_ARTISTS,
    ARTISTS,
    TAGS,
    USER_TAGGED_ARTISTS,
    SPOTIFY_SONGS,
    LYRICS_SONGS,
)


def _decode(raw: bytes, schema: TableSchema, file: str) -> str:
    try:
        text = raw.decode(schema.encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"invalid {schema.encoding} bytes at offset {exc.start} ({exc.reason}); re-export the file as "
            f"{schema.encoding}",
            file=file,
            row=line,
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse_text(text: str, schema: TableSchema, file: str) -> pd.DataFrame:
    if not text.strip():
        raise DataError("the file is empty (no header, no rows)", file=file)
    header = text.split("\n", 1)[0]
    wanted = [c.name for c in schema.columns]
    if schema.sep not in header and len(wanted) > 1:
        guess = next((sep for sep in ("\t", ",", ";", "|") if sep in header), None)
        hint = f"; it looks {'tab' if guess == chr(9) else repr(guess)}-separated" if guess else ""
        raise DataError(
            f"wrong delimiter: expected {'tab' if schema.sep == chr(9) else repr(schema.sep)}-separated "
            f"columns {wanted}, but the header is {header[:120]!r}{hint}",
            file=file,
            row=1,
        )
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=schema.sep,
            dtype=str,
            keep_default_na=False,
            na_values=list(schema.na_values),
        )
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed row: {exc}", file=file) from exc


def _check_columns(frame: pd.DataFrame, schema: TableSchema, file: str) -> None:
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; found {list(frame.columns)}", file=file, column=missing[0]
        )


def _first_bad(mask: pd.Series) -> int:
    """1-based file line of the first True in ``mask`` (data row i sits on line i + 2)."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 2


def _convert(frame: pd.DataFrame, column: Column, file: str, counts: dict[str, int]) -> pd.Series:
    values = frame[column.name]
    missing = values.isna() | (values.astype("string").str.strip() == "")
    if column.kind == "str":
        converted = values.where(~missing, None)
    else:
        converted = pd.to_numeric(values.where(~missing), errors="coerce")
        invalid = converted.isna() & ~missing
        if invalid.any():
            if column.on_invalid == "fail":
                line = _first_bad(invalid)
                bad = values[invalid].iloc[0]
                raise DataError(
                    f"{bad!r} is not a number ({invalid.sum()} such value(s))",
                    file=file,
                    row=line,
                    column=column.name,
                )
            counts[f"{column.name}: unparsable values set missing"] = int(invalid.sum())
        if column.kind == "int":
            non_integer = converted.notna() & (converted != converted.round())
            if non_integer.any() and column.on_invalid == "fail":
                raise DataError(
                    f"{values[non_integer].iloc[0]!r} is not a whole number",
                    file=file,
                    row=_first_bad(non_integer),
                    column=column.name,
                )
        _check_range(converted, column, file)
    if not column.nullable and converted.isna().any():
        raise DataError(
            f"missing value ({int(converted.isna().sum())} row(s); is the file truncated?)",
            file=file,
            row=_first_bad(converted.isna()),
            column=column.name,
        )
    return converted


def _check_range(values: pd.Series, column: Column, file: str) -> None:
    for bound, outside in (
        (column.min, values < column.min if column.min is not None else None),
        (column.max, values > column.max if column.max is not None else None),
    ):
        if outside is not None and outside.any():
            raise DataError(
                f"value {values[outside].iloc[0]} is outside the allowed range (bound {bound}); "
                f"{int(outside.sum())} row(s) affected",
                file=file,
                row=_first_bad(outside),
                column=column.name,
            )


def read_table(raw_dir: Path, schema: TableSchema) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read and validate one raw table; returns the typed frame and counts of repaired values."""
    path = Path(raw_dir) / schema.path
    file = str(path)
    if not path.exists():
        raise DataError("file not found (run the ingest stage first)", file=file)
    counts: dict[str, int] = {}
    if schema.fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"not a readable Parquet file: {exc}", file=file) from exc
    else:
        frame = _parse_text(_decode(path.read_bytes(), schema, file), schema, file)
    _check_columns(frame, schema, file)
    if frame.empty:
        raise DataError("the file has a header but no rows", file=file)
    for column in schema.columns:
        frame[column.name] = _convert(frame, column, file, counts)
        if column.kind == "int" and not column.nullable:
            frame[column.name] = frame[column.name].astype(np.int64)
    return frame, counts
