from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.columns import INTERACTIONS_COLUMNS, ITEMS_COLUMNS, Col
from recsys.config import PrepareParams
from recsys.data.prepare import prepare, quality_text, write_prepared
from recsys.data.schemas import (
    ARTISTS,
    LYRICS_SONGS,
    SPOTIFY_SONGS,
    TAGS,
    USER_ARTISTS,
    USER_TAGGED_ARTISTS,
    read_table,
)
from tests.data.raw_fixture import write_raw


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw")


def test_prepare_tiny_end_to_end(tiny: Path) -> None:
    prepared = prepare(tiny, PrepareParams(min_user_interactions=1))
    assert list(prepared.interactions.columns) == list(INTERACTIONS_COLUMNS)
    assert list(prepared.items.columns) == list(ITEMS_COLUMNS)
    assert prepared.interactions[Col.USER].map(type).eq(str).all()
    assert prepared.items[Col.ITEM].is_monotonic_increasing
    items = prepared.items.set_index(Col.NAME)
    # Accents, a leading "The" and a " - Remix" suffix do not stop the joins.
    assert items.loc["Beyoncé", Col.N_TRACKS] == 1
    assert items.loc["The Beatles", Col.GENRE] == "rock"
    assert items.loc["Adele", Col.N_LYRICS] == 1
    assert items.loc["Niche Band", Col.N_TRACKS] == 0
    joins = prepared.quality["joins"]
    assert joins["lyrics_rows_matched"] == 2  # Hello (via "Hello - Remix") and Halo (via "Beyoncé")
    assert joins["spotify_tracks_matched"] == 2
    assert joins["lastfm_artists_with_spotify"] == 3
    tags = prepared.item_tags
    assert tags.loc[tags[Col.ITEM] == "1", Col.COUNT].tolist() == [2]  # two users tagged Beyoncé "pop"


def test_min_user_interactions_filters(tiny: Path) -> None:
    everyone = prepare(tiny, PrepareParams(min_user_interactions=1)).interactions
    active = prepare(tiny, PrepareParams(min_user_interactions=3)).interactions
    counts = everyone.groupby(Col.USER).size()
    assert set(active[Col.USER]) == set(counts[counts >= 3].index)


def test_write_prepared_outputs_and_readable_report(tiny: Path, tmp_path: Path) -> None:
    prepared = prepare(tiny, PrepareParams(min_user_interactions=1))
    out = tmp_path / "prepared"
    write_prepared(prepared, out)
    for name in ("interactions", "items", "item_tags", "tracks"):
        assert not pd.read_parquet(out / f"{name}.parquet").empty
    quality = json.loads((out / "quality.json").read_text())
    assert quality["tables"]["lyrics"]["repairs"]["malformed_date"] == 1
    text = (out / "quality.txt").read_text()
    assert "Spotify x Genius" in text and "malformed_date: 1" in text
    assert quality_text(prepared.quality) == text
    # Lyrics are internal: never in the quality report.
    assert "other side" not in text and "other side" not in json.dumps(quality)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_raw_tables_have_the_official_counts(real_data_dir: Path) -> None:
    expected = [
        (USER_ARTISTS, 92_834),
        (ARTISTS, 17_632),
        (TAGS, 11_946),
        (USER_TAGGED_ARTISTS, 186_479),
        (SPOTIFY_SONGS, 32_833),
        (LYRICS_SONGS, 1_000),
    ]
    for schema, rows in expected:
        frame, _ = read_table(real_data_dir, schema)
        assert len(frame) == rows, schema.name
    friends = pd.read_csv(real_data_dir / "hetrec2011-lastfm-2k" / "user_friends.dat", sep="\t")
    assert len(friends) == 25_434


@pytest.mark.slow
@pytest.mark.realdata
def test_real_prepare_join_rates_and_repairs(prepared_real: Path) -> None:
    quality = json.loads((prepared_real / "quality.json").read_text())
    joins = quality["joins"]
    assert joins["lyrics_rows_matched"] >= 285  # about 295 of 1,000 lyric rows
    assert joins["spotify_tracks_matched"] >= 450
    assert 1_900 <= joins["lastfm_artists_with_spotify"] <= 2_200  # about 2,000 shared artists
    assert joins["listens_with_spotify"] >= 45_000
    repairs = quality["tables"]
    assert repairs["spotify_songs"]["repairs"]["rows_without_name_dropped"] == 5
    assert repairs["user_taggedartists"]["repairs"]["unknown_artist_dropped"] > 0
    assert repairs["lyrics"]["repairs"]["duplicate_song_dropped"] >= 5
    interactions = pd.read_parquet(prepared_real / "interactions.parquet")
    assert len(interactions) > 92_000
    assert not interactions.duplicated([Col.USER, Col.ITEM]).any()
    assert (interactions[Col.WEIGHT] >= 1).all()
    items = pd.read_parquet(prepared_real / "items.parquet")
    assert len(items) == 17_632 and items[Col.ITEM].is_unique
