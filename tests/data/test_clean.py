from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.config import PrepareParams
from recsys.data import clean
from recsys.errors import DataError


def listens(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["userID", "artistID", "weight"])


def test_exact_duplicates_are_dropped_and_counted() -> None:
    frame, counts = clean.clean_user_artists(
        listens([(1, 10, 5), (1, 10, 5), (2, 10, 3)]), pd.Series([10]), PrepareParams(), "f"
    )
    assert len(frame) == 2
    assert counts["exact_duplicates_dropped"] == 1


def test_conflicting_duplicates_are_fatal_and_name_the_rows() -> None:
    with pytest.raises(DataError) as err:
        clean.clean_user_artists(
            listens([(1, 10, 5), (2, 11, 1), (1, 10, 7)]), pd.Series([10, 11]), PrepareParams(), "ua.dat"
        )
    message = str(err.value)
    assert "ua.dat" in message and "conflicting duplicate" in message
    assert err.value.row == 4  # the third data row sits on line 4


def test_unknown_artists_and_zero_counts_are_dropped() -> None:
    frame, counts = clean.clean_user_artists(
        listens([(1, 10, 5), (1, 99, 5), (2, 10, 0)]), pd.Series([10]), PrepareParams(), "f"
    )
    assert frame[["userID", "artistID"]].values.tolist() == [[1, 10]]
    assert counts["unknown_artist_dropped"] == 1
    assert counts["zero_plays_dropped"] == 1


def test_absurd_listen_counts_are_capped() -> None:
    params = PrepareParams(max_plays=1000)
    frame, counts = clean.clean_user_artists(
        listens([(1, 10, 10**12), (2, 10, 5)]), pd.Series([10]), params, "f"
    )
    assert frame["weight"].max() == 1000
    assert counts["plays_capped"] == 1


def test_missing_artist_names_are_filled() -> None:
    frame, counts = clean.clean_artists(pd.DataFrame({"id": [1, 2, 3], "name": ["A", None, "  "]}), "f")
    assert frame["name"].tolist() == ["A", "artist 2", "artist 3"]
    assert counts["missing_name_filled"] == 2


def test_tag_mojibake_is_repaired_and_tags_lowercased() -> None:
    broken = "björk".encode().decode("latin-1")
    frame, counts = clean.clean_tags(
        pd.DataFrame({"tagID": [1, 2, 3], "tagValue": [broken, " Hip  Hop ", ""]})
    )
    assert frame["tag"].tolist() == ["björk", "hip hop"]
    assert counts["tag_mojibake_fixed"] == 1
    assert counts["empty_tag_dropped"] == 1


def test_fix_mojibake_leaves_plain_latin1_alone() -> None:
    assert clean.fix_mojibake("café") == "café"


def test_tag_assignments_to_unknown_ids_dropped_and_years_checked() -> None:
    tagged = pd.DataFrame(
        {
            "userID": [1, 1, 1, 1],
            "artistID": [10, 99, 10, 10],
            "tagID": [5, 5, 77, 5],
            "day": [1, 1, 1, 1],
            "month": [1, 1, 1, 1],
            "year": [2009, 2009, 2009, 1956],
        }
    ).astype({"year": "float64"})
    frame, counts = clean.clean_tagged_artists(tagged, pd.Series([10]), pd.Series([5]))
    assert len(frame) == 2
    assert counts["unknown_artist_dropped"] == 1
    assert counts["unknown_tag_dropped"] == 1
    assert counts["implausible_year"] == 1
    assert frame["year"].isna().sum() == 1


def test_dates_keep_known_formats_only() -> None:
    dates, bad = clean.clean_dates(pd.Series(["2019", "2019-06", "2019-06-14", "June 2019", None]))
    assert dates.isna().tolist() == [False, False, False, True, True]
    assert bad == 1


def spotify_rows() -> pd.DataFrame:
    base = {name: 0.5 for name in ("danceability", "energy", "speechiness", "acousticness")}
    base |= {"instrumentalness": 0.0, "liveness": 0.1, "valence": 0.5}
    base |= {"loudness": -5.0, "tempo": 120.0, "duration_ms": 200_000.0}
    rows = [
        {"track_id": "a", "track_name": "A", "track_artist": "X", "track_album_release_date": "2019", **base},
        {
            "track_id": "b",
            "track_name": None,
            "track_artist": "X",
            "track_album_release_date": "2019",
            **base,
        },
        {
            "track_id": "c",
            "track_name": "C",
            "track_artist": "Y",
            "track_album_release_date": "??",
            **(base | {"energy": 7.0}),
        },
    ]
    return pd.DataFrame(rows)


def test_spotify_rules() -> None:
    frame, counts = clean.clean_spotify(spotify_rows())
    assert frame["track_id"].tolist() == ["a", "c"]
    assert counts["rows_without_name_dropped"] == 1
    assert counts["audio_out_of_range"] == 1
    assert counts["malformed_date"] == 1
    assert np.isnan(frame.loc[frame["track_id"] == "c", "energy"]).all()


def test_lyrics_duplicates_dropped_case_insensitively() -> None:
    lyrics = pd.DataFrame(
        {
            "artist": ["Lady Gaga", "lady gaga", "Adele"],
            "track_name": ["Poker Face", "POKER FACE", "Hello"],
            "release_date": ["2008-01-01", "2008", "15/10/2015"],
        }
    )
    frame, counts = clean.clean_lyrics(lyrics)
    assert frame["track_name"].tolist() == ["Poker Face", "Hello"]
    assert counts["duplicate_song_dropped"] == 1
    assert counts["malformed_date"] == 1


@pytest.mark.parametrize(
    ("transform", "expected"),
    [("log", [1.0, 1 + np.log1p(9.0)]), ("linear", [1.0, 10.0]), ("binary", [1.0, 1.0])],
)
def test_confidence_transforms(transform: str, expected: list[float]) -> None:
    params = PrepareParams(weight_transform=transform)  # type: ignore[arg-type]
    values = clean.confidence(pd.Series([0, 9]), params)
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_confidence_is_monotone_in_plays() -> None:
    values = clean.confidence(
        pd.Series([1, 10, 100, 1000]), PrepareParams(weight_alpha=2.0, weight_scale=10.0)
    )
    assert np.all(np.diff(values) > 0)


def test_min_counts_iterate_until_stable() -> None:
    # Dropping item "c" (1 user) leaves user 3 with one item, so user 3 must go as well.
    frame = pd.DataFrame({"u": [1, 1, 2, 2, 3, 3], "i": ["a", "b", "a", "b", "a", "c"]})
    kept, counts = clean.apply_min_counts(frame, "u", "i", min_user=2, min_item=2)
    assert sorted(kept["u"].unique()) == [1, 2]
    assert counts["below_min_counts_dropped"] == 2
