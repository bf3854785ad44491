from __future__ import annotations

import pandas as pd
import pytest

from recsys.data.normalize import normalize_name, normalize_names, normalize_title, primary_artist


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Beyoncé", "beyonce"),
        ("Sigur Rós", "sigur ros"),
        ("MÖTLEY CRÜE", "motley crue"),
        ("The Beatles", "beatles"),
        ("the   beatles ", "beatles"),
        ("Simon & Garfunkel", "simon and garfunkel"),
        ("Simon and Garfunkel", "simon and garfunkel"),
        ("AC/DC", "ac dc"),
        ("Guns N' Roses", "guns n roses"),
        ("Guns N’ Roses", "guns n roses"),
        ("東方神起", "東方神起"),
        ("Ария", "ария"),
        ("", ""),
        ("The", "the"),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_normalize_name_missing_values_are_empty() -> None:
    assert normalize_name(None) == ""
    assert normalize_name(float("nan")) == ""
    assert normalize_names(pd.Series(["The Who", None])).tolist() == ["who", ""]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Memories - Dillon Francis Remix", "memories"),
        ("I Don't Care (with Justin Bieber)", "i dont care"),
        ("Shallow [Radio Edit]", "shallow"),
        ("Wonderwall - Remastered 2014", "wonderwall"),
        ("Work feat. Drake", "work"),
        ("Old Town Road ft. Billy Ray Cyrus", "old town road"),
        ("(Intro)", "intro"),
    ],
)
def test_normalize_title(raw: str, expected: str) -> None:
    assert normalize_title(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Drake feat. Rihanna", "Drake"),
        ("Calvin Harris featuring Dua Lipa", "Calvin Harris"),
        ("Zion & Lennox", "Zion & Lennox"),
        ("Kesha", "Kesha"),
    ],
)
def test_primary_artist_drops_featured_credit(raw: str, expected: str) -> None:
    assert primary_artist(raw) == expected
