"""Bad raw data through ``recsys prepare``: a clear error naming the file and column (exit 2), or a
counted, documented repair in ``quality.json``; never a silently wrong output.

A feedback export with unknown users or artists goes through :func:`recsys.retraining.merge.merge_feedback`,
which drops and counts unknown artists and appends (and reports) unknown users.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recsys.columns import Col
from recsys.config import RetrainParams
from recsys.data.schemas import ARTISTS, LYRICS_SONGS, SPOTIFY_SONGS, TAGS, USER_ARTISTS
from tests.data.raw_fixture import run_prepare, write_raw
from tests.helpers import PROJECT_ROOT

runner = CliRunner()
Damage = Callable[[Path], object]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw")


def prepare(raw: Path, out: Path, params: Path = PROJECT_ROOT / "params.yaml") -> tuple[int, str]:
    return run_prepare(raw, out, params)


def quality_of(out: Path) -> dict[str, Any]:
    quality: dict[str, Any] = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    return quality


def replace_line(path: Path, line: int, text: str, encoding: str = "utf-8") -> None:
    lines = path.read_text(encoding=encoding).splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


def rename_header(path: Path, old: str, new: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace(old, new)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def drop_lyrics_column(raw: Path, column: str) -> None:
    path = raw / LYRICS_SONGS.path
    pd.read_parquet(path).drop(columns=[column]).to_parquet(path, index=False)


def empty_lyrics(raw: Path) -> None:
    path = raw / LYRICS_SONGS.path
    pd.read_parquet(path).iloc[:0].to_parquet(path, index=False)


def utf16_artists(raw: Path) -> None:
    path = raw / ARTISTS.path
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))


# (damage, file that must be named, text the message must hold)
FATAL: dict[str, tuple[Damage, str, str]] = {
    "renamed artists column": (
        lambda raw: rename_header(raw / ARTISTS.path, "name", "artist_name"),
        ARTISTS.path,
        "column 'name'",
    ),
    "missing spotify column": (
        lambda raw: rename_header(raw / SPOTIFY_SONGS.path, "track_artist,", ""),
        SPOTIFY_SONGS.path,
        "column 'track_artist'",
    ),
    "missing lyrics column": (
        lambda raw: drop_lyrics_column(raw, "artist"),
        LYRICS_SONGS.path,
        "column 'artist'",
    ),
    "empty listens file": (
        lambda raw: (raw / USER_ARTISTS.path).write_bytes(b""),
        USER_ARTISTS.path,
        "empty",
    ),
    "header-only tags file": (
        lambda raw: (raw / TAGS.path).write_bytes(b"tagID\ttagValue\n"),
        TAGS.path,
        "no rows",
    ),
    "lyrics parquet without rows": (empty_lyrics, LYRICS_SONGS.path, "no rows"),
    "artists in UTF-16": (utf16_artists, ARTISTS.path, "invalid utf-8"),
    "negative listen count": (
        lambda raw: replace_line(raw / USER_ARTISTS.path, 5, "1\t4\t-3"),
        USER_ARTISTS.path,
        "column 'weight'",
    ),
}


@pytest.mark.parametrize("case", list(FATAL))
def test_fatal_damage_names_file_and_column_and_writes_nothing(raw: Path, tmp_path: Path, case: str) -> None:
    damage, file, expected = FATAL[case]
    damage(raw)
    out = tmp_path / "out"
    code, output = prepare(raw, out)
    flat = " ".join(output.split())  # the console may wrap long paths
    assert code == 2, output
    assert Path(file).name in flat and expected in flat, output
    assert "Traceback" not in output
    assert not out.exists() or not any(out.iterdir())


def test_utf8_tags_read_as_latin1_are_repaired_and_counted(raw: Path, tmp_path: Path) -> None:
    path = raw / TAGS.path
    path.write_bytes(path.read_bytes().replace(b"soul", "électro".encode()))
    code, output = prepare(raw, tmp_path / "out")
    assert code == 0, output
    quality = quality_of(tmp_path / "out")
    assert quality["tables"][TAGS.name]["repairs"]["tag_mojibake_fixed"] == 1
    tags = set(pd.read_parquet(tmp_path / "out" / "item_tags.parquet")[Col.TAG])
    assert "électro" in tags and not any("Ã" in tag for tag in tags)


def test_absurd_listen_count_is_capped_and_counted(raw: Path, tmp_path: Path) -> None:
    replace_line(raw / USER_ARTISTS.path, 2, f"1\t1\t{10**15}")
    params = tmp_path / "params.yaml"  # keep the tiny fixture's users (4 artists each) in the output
    text = (PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8")
    params.write_text(
        text.replace("min_user_interactions: 5", "min_user_interactions: 1", 1), encoding="utf-8"
    )
    code, output = prepare(raw, tmp_path / "out", params)
    assert code == 0, output
    quality = quality_of(tmp_path / "out")
    cap = quality["params"]["max_plays"]
    assert quality["tables"][USER_ARTISTS.name]["repairs"]["plays_capped"] == 1
    plays = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    row = plays[(plays[Col.USER] == "1") & (plays[Col.ITEM] == "1")]
    assert row[Col.PLAYS].tolist() == [cap]
    assert "plays_capped" in (tmp_path / "out" / "quality.txt").read_text(encoding="utf-8")


def test_feedback_with_unknown_users_and_artists_is_counted() -> None:
    from recsys.retraining.merge import merge_feedback

    train = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32))
    events = pd.DataFrame(
        {
            Col.USER: ["u0", "ghost", "ghost", "u1", "stranger"],
            Col.ITEM: ["b", "a", "nowhere", "nowhere", "missing"],
            Col.EVENT: ["like", "play", "play", "like", "play"],
        }
    )
    merged, report = merge_feedback(train, events, {"u0": 0, "u1": 1}, {"a": 0, "b": 1}, RetrainParams())
    assert report.n_unknown_item_events == 3
    # "stranger" only touched unknown artists: no empty row is added for them
    assert report.new_users == ["ghost"] and report.n_new_user_events == 1
    assert merged.shape == (3, 2) and merged[2, 0] > 0
    assert report.needs_full_retrain
