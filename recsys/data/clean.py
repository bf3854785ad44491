"""Cleaning rules for the raw tables. Each rule is a pure function that returns the cleaned frame and
the number of rows it touched, so every repair is counted in the data-quality report.

Rules (named as in the report):

- ``exact_duplicates_dropped``: identical rows are kept once.
- ``conflicting_duplicates``: two listen rows for one (user, artist) with different counts are fatal,
  because no rule can tell which count is right.
- ``plays_capped``: listen counts above ``prepare.max_plays`` are capped (an implausible count is a
  logging error, but the listen itself is real).
- ``zero_plays_dropped``: a listen count of 0 is no evidence of interest.
- ``unknown_artist_dropped`` / ``unknown_tag_dropped``: rows pointing at ids that are not in the
  artist or tag tables.
- ``missing_name_filled``: an artist without a name is called "artist <id>".
- ``tag_mojibake_fixed``: tags that are UTF-8 read as latin-1 are decoded again.
- ``implausible_year``: tag dates before Last.fm existed (2002) or after the crawl (2011) are set missing.
- ``rows_without_name_dropped``: Spotify rows without track or artist name.
- ``audio_out_of_range``: audio features outside their documented range are set missing.
- ``malformed_date``: release dates that are not YYYY, YYYY-MM or YYYY-MM-DD become missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.columns import AUDIO_FEATURES
from recsys.config import PrepareParams
from recsys.data.schemas import AUDIO_RANGES
from recsys.errors import DataError

Counts = dict[str, int]
LASTFM_FIRST_YEAR, LASTFM_CRAWL_YEAR = 2002, 2011
_DATE = r"^\d{4}(-\d{2}(-\d{2})?)?$"


def drop_exact_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each identical row once."""
    duplicated = frame.duplicated()
    return frame.loc[~duplicated].reset_index(drop=True), int(duplicated.sum())


def fail_on_conflicting_duplicates(frame: pd.DataFrame, key: list[str], file: str) -> None:
    """Raise when two rows share a key but differ elsewhere (call after exact duplicates are gone)."""
    clash = frame.duplicated(subset=key, keep=False)
    if clash.any():
        first = frame.loc[clash].iloc[0]
        rows = frame.index[(frame[key] == first[key]).all(axis=1)].tolist()
        raise DataError(
            f"conflicting duplicate rows for {dict(first[key])}: data rows {[r + 1 for r in rows]} "
            f"disagree; {int(clash.sum())} rows affected. Remove the wrong ones and run again",
            file=file,
            row=rows[1] + 2,
        )


def clean_user_artists(
    frame: pd.DataFrame, artist_ids: pd.Series, params: PrepareParams, file: str
) -> tuple[pd.DataFrame, Counts]:
    """Deduplicate, drop unknown artists and zero counts, and cap implausible listen counts."""
    frame, exact = drop_exact_duplicates(frame)
    fail_on_conflicting_duplicates(frame, ["userID", "artistID"], file)
    known = frame["artistID"].isin(artist_ids)
    zero = frame["weight"] <= 0
    kept = frame.loc[known & ~zero].copy()
    over = kept["weight"] > params.max_plays
    kept["weight"] = kept["weight"].clip(upper=params.max_plays)
    return kept.reset_index(drop=True), {
        "exact_duplicates_dropped": exact,
        "unknown_artist_dropped": int((~known).sum()),
        "zero_plays_dropped": int((known & zero).sum()),
        "plays_capped": int(over.sum()),
    }


def clean_artists(frame: pd.DataFrame, file: str) -> tuple[pd.DataFrame, Counts]:
    """Fill missing names; artist ids must be unique."""
    frame, exact = drop_exact_duplicates(frame[["id", "name"]])
    fail_on_conflicting_duplicates(frame, ["id"], file)
    names = frame["name"].astype("string").str.strip()
    missing = names.isna() | (names == "")
    frame = frame.assign(name=names.mask(missing, "artist " + frame["id"].astype(str)))
    return frame, {"exact_duplicates_dropped": exact, "missing_name_filled": int(missing.sum())}


def fix_mojibake(text: str) -> str:
    """Decode UTF-8 text that was read as latin-1 ("bjÃ¶rk" -> "björk"); other text is unchanged."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def clean_tags(frame: pd.DataFrame) -> tuple[pd.DataFrame, Counts]:
    """Repair encoding quirks, lower-case and trim tag values; drop empty tags."""
    raw = frame["tagValue"].astype("string").fillna("")
    fixed = raw.map(fix_mojibake)
    value = fixed.str.strip().str.lower().str.replace(r"\s+", " ", regex=True)
    empty = value == ""
    out = pd.DataFrame({"tagID": frame["tagID"], "tag": value}).loc[~empty].reset_index(drop=True)
    return out, {"tag_mojibake_fixed": int((fixed != raw).sum()), "empty_tag_dropped": int(empty.sum())}


def clean_tagged_artists(
    frame: pd.DataFrame, artist_ids: pd.Series, tag_ids: pd.Series
) -> tuple[pd.DataFrame, Counts]:
    """Drop assignments to unknown artists or tags; mark implausible years missing."""
    frame, exact = drop_exact_duplicates(frame)
    known_artist = frame["artistID"].isin(artist_ids)
    known_tag = frame["tagID"].isin(tag_ids)
    kept = frame.loc[known_artist & known_tag].copy()
    year = kept["year"]
    bad_year = year.notna() & ((year < LASTFM_FIRST_YEAR) | (year > LASTFM_CRAWL_YEAR))
    kept["year"] = year.mask(bad_year)
    return kept.reset_index(drop=True), {
        "exact_duplicates_dropped": exact,
        "unknown_artist_dropped": int((~known_artist).sum()),
        "unknown_tag_dropped": int((known_artist & ~known_tag).sum()),
        "implausible_year": int(bad_year.sum()),
    }


def clean_dates(dates: pd.Series) -> tuple[pd.Series, int]:
    """Keep YYYY, YYYY-MM and YYYY-MM-DD dates; anything else becomes missing (counted)."""
    text = dates.astype("string").str.strip()
    valid = text.str.match(_DATE).fillna(False).astype(bool)
    present = text.notna() & (text != "")
    return text.where(valid), int((present & ~valid).sum())


def clean_spotify(frame: pd.DataFrame) -> tuple[pd.DataFrame, Counts]:
    """Drop rows without names, blank out-of-range audio values and malformed dates."""
    nameless = frame["track_name"].isna() | frame["track_artist"].isna()
    frame = frame.loc[~nameless].copy()
    out_of_range = 0
    for name in AUDIO_FEATURES:
        low, high = AUDIO_RANGES.get(name, (-np.inf, np.inf))
        outside = frame[name].notna() & ((frame[name] < low) | (frame[name] > high))
        out_of_range += int(outside.sum())
        frame[name] = frame[name].mask(outside)
    frame["track_album_release_date"], bad_dates = clean_dates(frame["track_album_release_date"])
    frame, exact = drop_exact_duplicates(frame)
    return frame, {
        "rows_without_name_dropped": int(nameless.sum()),
        "audio_out_of_range": out_of_range,
        "malformed_date": bad_dates,
        "exact_duplicates_dropped": exact,
    }


def clean_lyrics(frame: pd.DataFrame) -> tuple[pd.DataFrame, Counts]:
    """Drop repeated (artist, title) songs, keeping the first; blank malformed dates."""
    key = [frame["artist"].str.casefold().str.strip(), frame["track_name"].str.casefold().str.strip()]
    repeated = pd.concat(key, axis=1).duplicated()
    frame = frame.loc[~repeated].copy()
    frame["release_date"], bad_dates = clean_dates(frame["release_date"])
    return frame.reset_index(drop=True), {
        "duplicate_song_dropped": int(repeated.sum()),
        "malformed_date": bad_dates,
    }


def confidence(plays: pd.Series, params: PrepareParams) -> pd.Series:
    """Listen counts to implicit-feedback confidence (see ``prepare.weight_transform``).

    Examples
    --------
    >>> [round(float(v), 3) for v in confidence(pd.Series([0, 1, 99]), PrepareParams())]
    [1.0, 1.693, 5.605]
    """
    scaled = plays.astype(np.float64) / params.weight_scale
    if params.weight_transform == "log":
        values = 1.0 + params.weight_alpha * np.log1p(scaled)
    elif params.weight_transform == "linear":
        values = 1.0 + params.weight_alpha * scaled
    else:
        values = pd.Series(np.ones(len(plays)), index=plays.index)
    return values.astype(np.float32)


def apply_min_counts(
    interactions: pd.DataFrame, user_col: str, item_col: str, min_user: int, min_item: int
) -> tuple[pd.DataFrame, Counts]:
    """Repeatedly drop users and items below their minimum counts until both hold."""
    before = len(interactions)
    while True:
        item_users = interactions.groupby(item_col)[user_col].transform("size")
        user_items = interactions.groupby(user_col)[item_col].transform("size")
        keep = (item_users >= min_item) & (user_items >= min_user)
        if keep.all():
            break
        interactions = interactions.loc[keep]
    return interactions.reset_index(drop=True), {"below_min_counts_dropped": before - len(interactions)}
