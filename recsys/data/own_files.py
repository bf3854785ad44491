"""The ``files`` data set: a team's own interactions and items files (CSV or Parquet) in the canonical tables.

``params.yaml`` names the two files and maps the canonical columns to the files' own names
(:class:`recsys.config.FilesParams`); the ingest stage copies both into ``data/raw/files/`` so DVC versions
them, and :func:`prepare_files` checks them row by row: a missing column, an empty id, a negative or
non-numeric play count, a duplicate item or a listen of an unknown item stops the stage with the file,
row (1-based, as a spreadsheet counts data rows) and column, before anything is written.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import AUDIO_FEATURES, INTERACTIONS_COLUMNS, ITEM_TAGS_COLUMNS, ITEMS_COLUMNS, Col
from recsys.config import FilesParams, Params
from recsys.data import clean
from recsys.data.normalize import normalize_names
from recsys.data.prepare import Prepared, data_summary
from recsys.data.songs import iso_dates
from recsys.errors import ConfigError, DataError

FOLDER = "files"
SOURCE = "files"
INTERACTIONS_NEEDED = ("user", "item")
ITEMS_NEEDED = ("item", "name")
MAX_PLAYS = 1e12
"""The largest play count a row may hold: far above any real one, and a sum of many stays an exact int64."""
OPTIONAL = ("plays", "weight", "timestamp", "artist", "genre", "release_date", "tags", "text")


def raw_name(kind: str, path: str) -> str:
    """``interactions.csv`` / ``items.parquet``: the file's name under ``data/raw/files/``."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"dataset.files.{kind}: {path!r} must be a .csv or .parquet file")
    return f"{kind}{suffix}"


def ingest_files(params: FilesParams, out_dir: Path) -> dict[str, Any]:
    """Copy the two configured files into ``out_dir/files`` (each atomically); returns what was copied."""
    start = time.perf_counter()
    folder = out_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    copied: list[dict[str, Any]] = []
    for kind in ("interactions", "items"):
        source = Path(getattr(params, kind))
        if not getattr(params, kind):
            raise ConfigError(f"dataset.files.{kind} is empty: name your {kind} file in params.yaml")
        if not source.is_file():
            raise ConfigError(f"dataset.files.{kind}: {source} does not exist")
        target = folder / raw_name(kind, str(source))
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        copied.append({"name": target.name, "location": str(source), "size": target.stat().st_size})
    sizes = sum(entry["size"] for entry in copied)
    return {
        "sources": [{"source": SOURCE, "path": str(folder), "files": copied}],
        "files": len(copied),
        "bytes": sizes,
        "seconds": round(time.perf_counter() - start, 3),
    }


def prepare_files(raw_dir: Path, params: Params) -> Prepared:
    """The canonical tables from the copied files, every row checked."""
    return prepare_own_files(raw_dir / FOLDER, params.dataset.files, params, "files")


def prepare_own_files(folder: Path, spec: FilesParams, params: Params, dataset: str) -> Prepared:
    """The canonical tables from an interactions and an items file in ``folder``, read as ``spec`` maps
    them (also how the ``synthetic`` data set's generated files are read)."""
    interactions_path = folder / raw_name("interactions", spec.interactions)
    items_path = folder / raw_name("items", spec.items)
    raw_items = _read(items_path)
    raw_interactions = _read(interactions_path)
    # Errors name the team's own files (the copies under data/raw hold the same rows).
    items = _items(raw_items, spec, spec.items)
    interactions, repairs = _interactions(
        raw_interactions, spec, set(items[Col.ITEM]), spec.interactions, params, dataset
    )
    listeners = interactions.groupby(Col.ITEM)[Col.USER].nunique()
    plays = interactions.groupby(Col.ITEM)[Col.PLAYS].sum()
    items[Col.N_LISTENERS] = listeners.reindex(items[Col.ITEM]).fillna(0).astype(np.int64).to_numpy()
    items[Col.TOTAL_PLAYS] = plays.reindex(items[Col.ITEM]).fillna(0).astype(np.int64).to_numpy()
    tags = _tags(raw_items, spec, items)
    quality: dict[str, Any] = {
        "dataset": dataset,
        "tables": {
            "interactions": {
                "rows_in": len(raw_interactions),
                "rows_out": len(interactions),
                "repairs": repairs,
            },
            "items": {"rows_in": len(raw_items), "rows_out": len(items), "repairs": {}},
        },
        "joins": {},
        "params": params.prepare.model_dump(),
        "summary": data_summary(interactions, items),
    }
    return Prepared(interactions, items[list(ITEMS_COLUMNS)], tags, pd.DataFrame(), quality)


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot be read: {exc}", file=str(path)) from exc


def _column(
    frame: pd.DataFrame, mapping: dict[str, str], name: str, file: str, required: bool, kind: str
) -> pd.Series | None:
    source = mapping.get(name, name)
    if source not in frame.columns:
        if required:
            raise DataError(
                f"no column {source!r} (the {name} column; map it in dataset.files.{kind}_columns "
                f"or dataset.files.columns); the file has {list(frame.columns)}",
                file=file,
                column=source,
            )
        return None
    return frame[source]


def _ids(values: pd.Series, file: str, column: str) -> pd.Series:
    text = values.astype("string").str.strip()
    empty = text.isna() | (text == "")
    if empty.any():
        raise DataError("empty id", file=file, row=int(np.flatnonzero(empty)[0]) + 1, column=column)
    return text.astype(str)


def _items(raw: pd.DataFrame, spec: FilesParams, file: str) -> pd.DataFrame:
    mapping, kind = spec.mapping("items"), "items"
    item_col = _column(raw, mapping, "item", file, required=True, kind=kind)
    name_col = _column(raw, mapping, "name", file, required=True, kind=kind)
    assert item_col is not None and name_col is not None
    items = pd.DataFrame({Col.ITEM: _ids(item_col, file, str(item_col.name))})
    repeated = items[Col.ITEM].duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0]) + 1
        raise DataError(
            f"item {items[Col.ITEM].iloc[row - 1]!r} appears twice",
            file=file,
            row=row,
            column=str(item_col.name),
        )
    items[Col.NAME] = _ids(name_col, file, str(name_col.name))
    items[Col.NAME_NORM] = normalize_names(items[Col.NAME]).astype(str)
    items[Col.N_LISTENERS] = 0
    items[Col.TOTAL_PLAYS] = 0
    genre = _column(raw, mapping, "genre", file, required=False, kind=kind)
    genres = genre.astype("string").str.strip().replace("", pd.NA) if genre is not None else None
    items[Col.GENRE] = genres.astype(object).where(genres.notna(), None) if genres is not None else None
    items[Col.GENRES] = genres.fillna("").astype(str) if genres is not None else ""
    present = 0
    for name in AUDIO_FEATURES:
        values = _column(raw, mapping, name, file, required=False, kind=kind)
        items[name] = _numbers(values, file, allow_negative=True) if values is not None else np.nan
        present += values is not None
    items[Col.N_TRACKS] = int(present > 0)
    text = _column(raw, mapping, "text", file, required=False, kind=kind)
    items[Col.LYRICS] = text.astype(object).where(text.notna(), None) if text is not None else None
    items[Col.N_LYRICS] = items[Col.LYRICS].notna().astype(np.int64)
    items[Col.KIND] = spec.kind
    artist = _column(raw, mapping, "artist", file, required=False, kind=kind)
    items[Col.ARTIST] = artist.astype(str).to_numpy() if artist is not None else items[Col.NAME]
    released = _column(raw, mapping, "release_date", file, required=False, kind=kind)
    if released is not None:
        cleaned, _ = clean.clean_dates(released)
        items[Col.RELEASE_DATE] = iso_dates(cleaned).to_numpy()
    else:
        items[Col.RELEASE_DATE] = None
    return items.sort_values(Col.ITEM, kind="stable").reset_index(drop=True)


def _numbers(
    values: pd.Series, file: str, allow_negative: bool = False, largest: float = np.inf
) -> pd.Series:
    """The column as finite floats; the first value that is not a number (or is infinite, negative when
    not allowed, or above ``largest``) is a :class:`DataError` naming the file, data row and column."""
    numbers = pd.to_numeric(values, errors="coerce")
    given = values.notna() & (values.astype(str).str.strip() != "")
    bad = given & ~np.isfinite(numbers.astype(np.float64))  # "inf" parses as a number: not a count
    if not allow_negative:
        bad |= numbers < 0
    bad |= numbers > largest
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        expected = "a finite number" if allow_negative else "a finite number >= 0"
        if largest < np.inf:
            expected += f" of at most {largest:.0e}"
        raise DataError(
            f"{values.iloc[row - 1]!r} is not {expected}", file=file, row=row, column=str(values.name)
        )
    return numbers.astype(np.float64)


def _interactions(
    raw: pd.DataFrame, spec: FilesParams, known: set[str], file: str, params: Params, source: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    mapping, kind = spec.mapping("interactions"), "interactions"
    user_col = _column(raw, mapping, "user", file, required=True, kind=kind)
    item_col = _column(raw, mapping, "item", file, required=True, kind=kind)
    assert user_col is not None and item_col is not None
    frame = pd.DataFrame(
        {
            Col.USER: _ids(user_col, file, str(user_col.name)),
            Col.ITEM: _ids(item_col, file, str(item_col.name)),
        }
    )
    unknown = ~frame[Col.ITEM].isin(known)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0]) + 1
        raise DataError(
            f"item {frame[Col.ITEM].iloc[row - 1]!r} is not in the items file "
            f"({int(unknown.sum())} such rows)",
            file=file,
            row=row,
            column=str(item_col.name),
        )
    plays = _column(raw, mapping, "plays", file, required=False, kind=kind)
    counts = _numbers(plays, file, largest=MAX_PLAYS) if plays is not None else None
    frame[Col.PLAYS] = counts.fillna(1.0).round().astype(np.int64) if counts is not None else 1
    before = len(frame)
    frame = frame.groupby([Col.USER, Col.ITEM], as_index=False, sort=True)[Col.PLAYS].sum()
    merged = before - len(frame)
    frame, dropped = clean.apply_min_counts(
        frame, Col.USER, Col.ITEM, params.prepare.min_user_interactions, params.prepare.min_item_users
    )
    frame[Col.WEIGHT] = clean.confidence(frame[Col.PLAYS], params.prepare)
    frame[Col.SOURCE] = source
    frame = frame.sort_values([Col.USER, Col.ITEM], kind="stable").reset_index(drop=True)
    return frame[list(INTERACTIONS_COLUMNS)], {"repeated_pair_summed": merged, **dropped}


def _tags(raw: pd.DataFrame, spec: FilesParams, items: pd.DataFrame) -> pd.DataFrame:
    mapping = spec.mapping("items")
    tags = _column(raw, mapping, "tags", spec.items, required=False, kind="items")
    if tags is None:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in ITEM_TAGS_COLUMNS}).astype(
            {Col.COUNT: np.int64}
        )
    item_col = _column(raw, mapping, "item", spec.items, required=True, kind="items")
    assert item_col is not None
    exploded = pd.DataFrame(
        {Col.ITEM: item_col.astype(str).str.strip(), Col.TAG: tags.fillna("").astype(str)}
    )
    exploded[Col.TAG] = exploded[Col.TAG].str.split("|")
    exploded = exploded.explode(Col.TAG)
    exploded[Col.TAG] = exploded[Col.TAG].str.strip()
    exploded = exploded[exploded[Col.TAG] != ""].drop_duplicates()
    exploded[Col.COUNT] = np.int64(1)
    exploded = exploded[exploded[Col.ITEM].isin(items[Col.ITEM])]
    return exploded.sort_values([Col.ITEM, Col.TAG]).reset_index(drop=True)[list(ITEM_TAGS_COLUMNS)]
