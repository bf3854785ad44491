"""The files adapter: a team's own CSV/Parquet files into the canonical tables, bad rows named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys import stages
from recsys.columns import INTERACTIONS_COLUMNS, ITEMS_COLUMNS, Col
from recsys.config import Params
from recsys.errors import ConfigError, DataError


def write_files(folder: Path, listens: pd.DataFrame | None = None, items: pd.DataFrame | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    users = [f"listener{n}" for n in range(6) for _ in range(5)]
    songs = [f"s{(n * 3 + k) % 8}" for n in range(6) for k in range(5)]
    listens = listens if listens is not None else pd.DataFrame({"who": users, "song": songs, "n": 3})
    items = (
        items
        if items is not None
        else pd.DataFrame(
            {
                "song": [f"s{n}" for n in range(8)],
                "title": [f"Song {n}" for n in range(8)],
                "singer": ["Ann", "Ann", "Bo", "Bo", "Cy", "Cy", "Di", "Di"],
                "style": ["pop", "pop", "rock", "rock", "jazz", "", "pop", "rock"],
                "labels": ["happy|summer", "happy", "loud", "loud|live", "", "calm", "summer", "live"],
                "energy": [0.9, 0.8, 0.95, 0.9, 0.2, 0.3, 0.7, 0.85],
                "released": ["2020-01-02", "2019", "2018-05", "2021-03-04", "", "2017", "2022-01-01", "2016"],
            }
        )
    )
    listens.to_csv(folder / "listens.csv", index=False)
    items.to_parquet(folder / "songs.parquet", index=False)


def files_params(folder: Path) -> Params:
    return Params.model_validate(
        {
            "dataset": {
                "name": "files",
                "files": {
                    "interactions": str(folder / "listens.csv"),
                    "items": str(folder / "songs.parquet"),
                    "columns": {
                        "user": "who",
                        "item": "song",
                        "plays": "n",
                        "name": "title",
                        "artist": "singer",
                        "genre": "style",
                        "tags": "labels",
                        "release_date": "released",
                    },
                },
            }
        }
    )


def test_own_files_become_the_canonical_tables(tmp_path: Path) -> None:
    write_files(tmp_path / "mine")
    params = files_params(tmp_path / "mine")
    report = stages.ingest(params, tmp_path / "raw")
    assert report["dataset"] == "files" and report["files"] == 2
    quality = stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")
    interactions = pd.read_parquet(tmp_path / "prepared" / "interactions.parquet")
    items = pd.read_parquet(tmp_path / "prepared" / "items.parquet")
    tags = pd.read_parquet(tmp_path / "prepared" / "item_tags.parquet")
    assert list(interactions.columns) == list(INTERACTIONS_COLUMNS)
    assert list(items.columns) == list(ITEMS_COLUMNS)
    assert quality["summary"] == {"users": 6, "items": 8, "items_with_listens": 8, "interactions": 30}
    assert set(interactions[Col.USER]) == {f"listener{n}" for n in range(6)}
    assert (interactions[Col.PLAYS] == 3).all()
    first = items.set_index(Col.ITEM).loc["s1"]
    assert (first[Col.NAME], first[Col.ARTIST], first[Col.KIND]) == ("Song 1", "Ann", "track")
    assert (first[Col.GENRE], first[Col.RELEASE_DATE], first["energy"]) == ("pop", "2019-01-01", 0.8)
    assert set(tags.loc[tags[Col.ITEM] == "s0", Col.TAG]) == {"happy", "summer"}
    # Everything after prepare runs on them unchanged.
    stages.features(params, tmp_path / "prepared", tmp_path / "features")
    summary = stages.split(params, tmp_path / "prepared", tmp_path / "split")
    assert summary["n_users"] == 6 and summary["n_items"] == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda listens, items: (listens.drop(columns=["who"]), items),
            r"listens\.csv, column 'who': no column 'who'",
        ),
        (
            lambda listens, items: (
                listens.assign(song=listens["song"].where(listens.index != 7, "s99")),
                items,
            ),
            r"listens\.csv, row 8, column 'song': item 's99' is not in the items file",
        ),
        (
            lambda listens, items: (listens.assign(n=listens["n"].where(listens.index != 3, -2)), items),
            r"listens\.csv, row 4, column 'n': '-2' is not a finite number >= 0",
        ),
        (
            lambda listens, items: (
                listens.astype({"n": object}).assign(n=listens["n"].where(listens.index != 2, "inf")),
                items,
            ),
            r"listens\.csv, row 3, column 'n': 'inf' is not a finite number >= 0",
        ),
        (
            lambda listens, items: (
                listens.astype({"n": object}).assign(n=listens["n"].where(listens.index != 5, "1e30")),
                items,
            ),
            r"listens\.csv, row 6, column 'n': '1e30' is not a finite number >= 0 of at most 1e\+12",
        ),
        (
            lambda listens, items: (listens, items.assign(song=["s0", "s0", *items["song"][2:]])),
            r"songs\.parquet, row 2, column 'song': item 's0' appears twice",
        ),
    ],
)
def test_bad_own_files_name_the_file_row_and_column(tmp_path: Path, change, message: str) -> None:
    write_files(tmp_path / "good")
    listens = pd.read_csv(tmp_path / "good" / "listens.csv")
    items = pd.read_parquet(tmp_path / "good" / "songs.parquet")
    bad_listens, bad_items = change(listens, items)
    write_files(tmp_path / "mine", bad_listens, bad_items)
    params = files_params(tmp_path / "mine")
    stages.ingest(params, tmp_path / "raw")
    with pytest.raises(DataError, match=message):
        stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()  # nothing half-written


def test_files_adapter_needs_its_files_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.files\.interactions is empty"):
        stages.ingest(Params.model_validate({"dataset": {"name": "files"}}), tmp_path / "raw")
    params = files_params(tmp_path / "absent")
    with pytest.raises(ConfigError, match="does not exist"):
        stages.ingest(params, tmp_path / "raw")


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("items", lambda t: t.assign(kind="album"), r"items, row 1, column 'kind': kind not one of"),
        ("items", lambda t: t.drop(columns=["release_date"]), r"items: columns .* are not the contract's"),
        ("interactions", lambda t: t.assign(weight=0.0), r"interactions, row 1, column 'weight': weight not"),
        (
            "item_tags",
            lambda t: t.assign(item_id="nope"),
            r"item_tags, row 1, column 'item_id': tag of an item",
        ),
    ],
)
def test_every_adapter_output_is_checked_against_the_contract(
    tmp_path: Path, table: str, change, message: str
) -> None:
    import dataclasses

    from recsys.data.own_files import prepare_files
    from recsys.data.prepare import check_contract

    write_files(tmp_path / "mine")
    params = files_params(tmp_path / "mine")
    stages.ingest(params, tmp_path / "raw")
    prepared = prepare_files(tmp_path / "raw", params)
    check_contract(prepared)
    broken = dataclasses.replace(prepared, **{table: change(getattr(prepared, table))})
    with pytest.raises(DataError, match=message):
        check_contract(broken)


def test_each_file_may_call_the_item_by_its_own_name_and_a_mismatch_says_where_to_map_it(
    tmp_path: Path,
) -> None:
    write_files(tmp_path / "mine")
    items = pd.read_parquet(tmp_path / "mine" / "songs.parquet").rename(columns={"song": "track_id"})
    items.to_parquet(tmp_path / "mine" / "songs.parquet", index=False)
    params = files_params(tmp_path / "mine")
    stages.ingest(params, tmp_path / "raw")
    with pytest.raises(DataError) as mismatch:
        stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")
    message = str(mismatch.value)
    assert "songs.parquet" in message and "no column 'song' (the item column" in message
    assert "dataset.files.items_columns" in message and "'track_id'" in message
    spec = params.dataset.files.model_copy(update={"items_columns": {"item": "track_id"}})
    mapped = params.model_copy(update={"dataset": params.dataset.model_copy(update={"files": spec})})
    quality = stages.prepare(mapped, tmp_path / "raw", tmp_path / "prepared")
    assert quality["summary"]["items"] == 8
    tags = pd.read_parquet(tmp_path / "prepared" / "item_tags.parquet")
    assert set(tags[Col.TAG]) == {"happy", "summer", "loud", "live", "calm"}  # "|"-joined, split per item
