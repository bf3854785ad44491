"""Bad input: each defect gives a DataError that names the file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.data.schemas import ARTISTS, LYRICS_SONGS, RAW_TABLES, USER_ARTISTS, read_table
from recsys.errors import DataError
from tests.data.raw_fixture import write_raw


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw")


def listens_file(raw: Path) -> Path:
    return raw / USER_ARTISTS.path


def test_valid_fixture_reads_with_types(raw: Path) -> None:
    for schema in RAW_TABLES:
        frame, _ = read_table(raw, schema)
        assert len(frame) > 0, schema.name
    frame, _ = read_table(raw, USER_ARTISTS)
    assert str(frame["weight"].dtype) == "int64"


def expect_error(raw: Path, schema: object = USER_ARTISTS) -> DataError:
    with pytest.raises(DataError) as err:
        read_table(raw, schema)  # type: ignore[arg-type]
    return err.value


def test_truncated_file_names_the_line_and_column(raw: Path) -> None:
    path = listens_file(raw)
    text = path.read_text()
    path.write_text(text[: text.rindex("\t")])  # the last row loses its weight
    error = expect_error(raw)
    assert error.column == "weight"
    assert error.row == len(text.strip().splitlines())
    assert "truncated" in str(error) and str(path) in str(error)


def test_wrong_delimiter_is_recognised(raw: Path) -> None:
    path = listens_file(raw)
    path.write_text(path.read_text().replace("\t", ","))
    error = expect_error(raw)
    assert "wrong delimiter" in str(error) and "','" in str(error)
    assert error.row == 1


def test_missing_column(raw: Path) -> None:
    path = listens_file(raw)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.rsplit("\t", 1)[0] for line in lines) + "\n")
    error = expect_error(raw)
    assert error.column == "weight" and "missing column" in str(error)


def test_non_numeric_weight(raw: Path) -> None:
    path = listens_file(raw)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmany"
    path.write_text("\n".join(lines) + "\n")
    error = expect_error(raw)
    assert (error.row, error.column) == (4, "weight")
    assert "'many' is not a number" in str(error)


def test_negative_weight(raw: Path) -> None:
    path = listens_file(raw)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t-5"
    path.write_text("\n".join(lines) + "\n")
    error = expect_error(raw)
    assert (error.row, error.column) == (3, "weight")
    assert "outside the allowed range" in str(error)


def test_fractional_id_is_rejected(raw: Path) -> None:
    path = listens_file(raw)
    lines = path.read_text().splitlines()
    lines[1] = "1.5" + lines[1][1:]
    path.write_text("\n".join(lines) + "\n")
    error = expect_error(raw)
    assert (error.row, error.column) == (2, "userID")


def test_invalid_utf8_names_the_line(raw: Path) -> None:
    path = raw / ARTISTS.path
    data = path.read_bytes().replace("Beyoncé".encode(), b"Beyonc\xff")
    path.write_bytes(data)
    error = expect_error(raw, ARTISTS)
    assert error.row == 2 and "utf-8" in str(error)


def test_empty_file_and_header_only(raw: Path) -> None:
    path = listens_file(raw)
    path.write_text("")
    assert "empty" in str(expect_error(raw))
    path.write_text("userID\tartistID\tweight\n")
    assert "no rows" in str(expect_error(raw))


def test_extra_field_in_a_row(raw: Path) -> None:
    path = listens_file(raw)
    lines = path.read_text().splitlines()
    lines[2] += "\t7\t8"
    path.write_text("\n".join(lines) + "\n")
    assert "malformed row" in str(expect_error(raw))


def test_missing_file_and_corrupt_parquet(raw: Path) -> None:
    (raw / LYRICS_SONGS.path).write_bytes(b"PAR1 not really")
    assert "Parquet" in str(expect_error(raw, LYRICS_SONGS))
    listens_file(raw).unlink()
    assert "not found" in str(expect_error(raw))
