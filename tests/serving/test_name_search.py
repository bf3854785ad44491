"""Artist search on the real Last.fm catalogue: real misspellings find the artist first, without padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.columns import Col
from recsys.serving.name_search import NameIndex, normalise

pytestmark = pytest.mark.realdata

MISSPELLINGS = [
    ("radiohed", "Radiohead"),
    ("metalica", "Metallica"),
    ("bjork", "Björk"),
    ("portshead", "Portishead"),
    ("beatels", "The Beatles"),
    ("the beetles", "The Beatles"),
    ("britny spears", "Britney Spears"),
    ("ladygaga", "Lady Gaga"),
    ("rihana", "Rihanna"),
    ("madona", "Madonna"),
    ("coldplai", "Coldplay"),
    ("depeche mod", "Depeche Mode"),
    ("pink floid", "Pink Floyd"),
    ("nirvanna", "Nirvana"),
    ("the kilers", "The Killers"),
    ("christina agilera", "Christina Aguilera"),
    ("katy pery", "Katy Perry"),
    ("kety perry", "Katy Perry"),
    ("linkin parc", "Linkin Park"),
    ("beyonce", "Beyoncé"),
    ("david bowey", "David Bowie"),
    ("red hot chilli peppers", "Red Hot Chili Peppers"),
    ("guns and roses", "Guns N' Roses"),
    ("avril lavine", "Avril Lavigne"),
    ("mariah carrey", "Mariah Carey"),
    ("arctic monkies", "Arctic Monkeys"),
    ("led zepelin", "Led Zeppelin"),
    ("boob dylan", "Bob Dylan"),
    ("jonny cash", "Johnny Cash"),
    ("the rolling stone", "The Rolling Stones"),
    ("shakera", "Shakira"),
    ("radio", "Radiohead"),  # typing: the most popular completion first
    ("porti", "Portishead"),
]


@pytest.fixture(scope="module")
def catalogue(prepared_real: Path) -> tuple[NameIndex, list[str]]:
    items = pd.read_parquet(prepared_real / "items.parquet")
    listens = pd.read_parquet(prepared_real / "interactions.parquet")
    listeners = listens.groupby(Col.ITEM)[Col.USER].nunique()
    popularity = items[Col.ITEM].map(listeners).fillna(0).to_numpy(dtype=np.int64)
    names = items[Col.NAME].astype(str).tolist()
    return NameIndex(names, popularity), names


@pytest.mark.parametrize(("query", "expected"), MISSPELLINGS)
def test_a_misspelt_or_partial_name_finds_the_artist_first(
    catalogue: tuple[NameIndex, list[str]], query: str, expected: str
) -> None:
    index, names = catalogue
    hits = index.search(query, 8)
    assert hits and names[hits[0][0]] == expected, [names[i] for i, _ in hits]


def test_fuzzy_results_are_similar_names_not_short_ones_padding_the_list(
    catalogue: tuple[NameIndex, list[str]],
) -> None:
    index, names = catalogue
    for query in ("metalica", "radiohed", "nirvanna", "beatels"):
        fuzzy = [names[i] for i, how in index.search(query, 8) if how == "fuzzy"]
        # Every fuzzy hit is within a couple of edits of the query: no "A", "I", "M" or "Dio".
        assert all(len(normalise(name)) >= len(query) - 3 for name in fuzzy), (query, fuzzy)
    assert index.search("zzqqxxj", 8) == []  # nothing similar: nothing at all


def test_a_close_misspelling_of_a_famous_name_beats_a_prefix_of_an_obscure_one() -> None:
    # "madona" is a prefix of an obscure "Madonadisco" and one letter from Madonna, far more listened.
    index = NameIndex(["Madonadisco", "Madonna", "Madona Ring"], np.array([1, 900, 2]))
    hits = index.search("madona", 3)
    assert hits[0] == (1, "fuzzy") and {item for item, _ in hits[1:]} == {0, 2}
    # Two names about as close: the famous one first.
    famous = NameIndex(["Rihanna", "Rihama"], np.array([800, 3]))
    assert [item for item, _ in famous.search("rihana", 2)] == [0, 1]


def test_one_song_under_two_track_ids_is_one_hit_and_the_twin_is_known() -> None:
    names = [
        "Halo - Beyoncé",
        "Halo - Beyoncé",
        "Halo - Soil",
        "Shape of You - Ed Sheeran",
        "Shape of You - Ed Sheeran",
    ]
    index = NameIndex(names, np.array([5, 40, 3, 9, 2]))
    hits = [item for item, _ in index.search("halo", 8)]
    assert hits == [1, 2]  # the more listened Beyoncé track only
    assert [item for item, _ in index.search("shape of", 8)] == [3]
    assert index.twins().tolist() == [0, 4]
