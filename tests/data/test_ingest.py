"""Ingest of the raw sources: local copies, verified downloads from a loopback server, and failures."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recsys.config import DATA_DIR_ENV
from recsys.data.download import file_url, resolve_url
from recsys.data.ingest import IngestReport, ingest_all, ingest_source, summarize
from recsys.data.raw_files import count_rows, sha256_of
from recsys.data.sources import SOURCES, Source, SourceFile
from recsys.errors import ConfigError, DataError, SourceUnavailableError

from .conftest import SourcesServer

PLAYS = b"userID\tartistID\tweight\r\n1\t2\t3\r\n1\t4\t5\r\n2\t2\t7\r\n"
SONGS = b'id,lyric\n1,"la\nla la"\n2,plain\n'
NOTES = b"about these files\n"
EXPORT = b"id,lyric\n1,x\n2,y\n"


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"a": [1, 2, 3, 4], "b": list("wxyz")}).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in members.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def _download(source: Source, dest: Path, base_url: str, retries: int = 3) -> IngestReport:
    """Ingest without a local copy, with short backoff so retry tests stay fast."""
    return ingest_source(
        source, dest, None, base_url=base_url, retries=retries, timeout_s=5.0, backoff_s=0.01
    )


def _listing(folder: Path) -> dict[str, str]:
    return {path.name: sha256_of(path) for path in sorted(folder.iterdir())}


ZIP_SOURCE = Source(
    name="tinyzip",
    folder="tiny-zip",
    url="https://data.example.invalid/datasets/tiny/tiny.zip",
    archive="zip",
    files=(
        SourceFile("plays.dat", _sha(PLAYS), 3, "lines"),
        SourceFile("songs.csv", _sha(SONGS), 2, "csv"),
        SourceFile("notes.txt", _sha(NOTES), required=False),
    ),
)
ZIP_PATH = "/datasets/tiny/tiny.zip"

PARQUET = _parquet_bytes()
PLAIN_SOURCE = Source(
    name="tinyplain",
    folder="tiny-plain",
    url="https://raw.example.invalid/owner/repo/main/table.parquet",
    archive="plain",
    files=(
        SourceFile("table.parquet", _sha(PARQUET), 4, "parquet"),
        SourceFile("songs.csv", _sha(SONGS), 2, "csv"),
        SourceFile("notes.txt", _sha(NOTES), required=False),
        SourceFile("export.csv", _sha(EXPORT), 2, "csv", required=False, remote=False),
    ),
)
PLAIN_DIR = "/owner/repo/main"


def _serve_plain(server: SourcesServer, *, notes: bool = True) -> None:
    server.put(f"{PLAIN_DIR}/table.parquet", PARQUET)
    server.put(f"{PLAIN_DIR}/songs.csv", SONGS)
    if notes:
        server.put(f"{PLAIN_DIR}/notes.txt", NOTES)


def _local_copy(root: Path, source: Source, contents: dict[str, bytes]) -> Path:
    folder = root / source.folder
    folder.mkdir(parents=True)
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return root


# -- registry and pure helpers ------------------------------------------------------------------


def test_registry_has_the_three_sources_with_canonical_folders() -> None:
    assert {name: source.folder for name, source in SOURCES.items()} == {
        "lastfm": "hetrec2011-lastfm-2k",
        "spotify": "spotify-songs-tidytuesday-2020-01-21",
        "lyrics": "poplyrics-1k",
    }
    assert SOURCES["lastfm"].archive == "zip"
    assert {SOURCES["spotify"].archive, SOURCES["lyrics"].archive} == {"plain"}
    for source in SOURCES.values():
        assert source.name in SOURCES and source.url.startswith("https://")
        assert all(len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0 for spec in source.files)
        assert all(spec.rows for spec in source.required_files)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SOURCES["lastfm"].url = "http://elsewhere"  # type: ignore[misc]


def test_resolve_url_swaps_scheme_and_host_and_keeps_the_path() -> None:
    url = "https://files.example.org/datasets/a/b.zip"
    assert resolve_url(url, None) == url
    assert resolve_url(url, "http://127.0.0.1:9") == "http://127.0.0.1:9/datasets/a/b.zip"
    assert resolve_url(url, "http://mirror:8080/pub/") == "http://mirror:8080/pub/datasets/a/b.zip"
    spec = PLAIN_SOURCE.files[1]
    assert file_url(PLAIN_SOURCE, spec, "http://h") == f"http://h{PLAIN_DIR}/songs.csv"


def test_count_rows_handles_crlf_unterminated_lines_quoted_newlines_and_parquet(tmp_path: Path) -> None:
    crlf, unterminated, quoted, table = (tmp_path / name for name in ("a", "b", "c", "d"))
    crlf.write_bytes(PLAYS)
    unterminated.write_bytes(PLAYS.rstrip())
    quoted.write_bytes(SONGS)
    table.write_bytes(PARQUET)
    assert count_rows(crlf, "lines") == 3
    assert count_rows(unterminated, "lines") == 3
    assert count_rows(quoted, "csv") == 2
    assert count_rows(quoted, "lines") == 3  # the quoted newline is why CSV needs a real parser
    assert count_rows(table, "parquet") == 4
    assert count_rows(crlf, "text") is None


# -- downloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "tiny-zip/"], ids=["zip-root", "zip-subfolder"])
def test_zip_download_is_extracted_verified_and_laid_out(
    sources_server: SourcesServer, tmp_path: Path, prefix: str
) -> None:
    members = {"plays.dat": PLAYS, "songs.csv": SONGS, "notes.txt": NOTES, "unneeded-timestamps.dat": b"x\n"}
    archive = {f"{prefix}{name}": content for name, content in members.items()}
    archive["__MACOSX/plays.dat"] = b"resource fork"  # same depth as a subfolder member
    sources_server.put(ZIP_PATH, _zip_bytes(archive))
    dest = tmp_path / "raw"

    report = _download(ZIP_SOURCE, dest, sources_server.base_url)

    expected = {name: _sha(content) for name, content in members.items() if name != "unneeded-timestamps.dat"}
    assert _listing(dest / "tiny-zip") == expected
    assert [entry.name for entry in dest.iterdir()] == ["tiny-zip"]  # no staging or archive left
    assert report.origin == "download" and report.attempts == 1
    assert report.location == sources_server.base_url + ZIP_PATH
    assert {f.name: (f.sha256, f.rows, f.size) for f in report.files} == {
        "plays.dat": (_sha(PLAYS), 3, len(PLAYS)),
        "songs.csv": (_sha(SONGS), 2, len(SONGS)),
        "notes.txt": (_sha(NOTES), None, len(NOTES)),
    }


def test_plain_download_fetches_each_file_and_never_asks_for_local_only_files(
    sources_server: SourcesServer, tmp_path: Path
) -> None:
    _serve_plain(sources_server)
    report = _download(PLAIN_SOURCE, tmp_path / "raw", sources_server.base_url)

    assert _listing(tmp_path / "raw" / "tiny-plain") == {
        "notes.txt": _sha(NOTES),
        "songs.csv": _sha(SONGS),
        "table.parquet": _sha(PARQUET),
    }
    assert f"{PLAIN_DIR}/export.csv" not in sources_server.state.hits
    assert dict(report.skipped) == {"export.csv": "not published at the source"}
    assert report.attempts == 3


def test_missing_optional_file_is_skipped_with_its_reason(
    sources_server: SourcesServer, tmp_path: Path
) -> None:
    _serve_plain(sources_server, notes=False)
    report = _download(PLAIN_SOURCE, tmp_path, sources_server.base_url)
    assert "404" in dict(report.skipped)["notes.txt"]
    assert sorted(path.name for path in (tmp_path / "tiny-plain").iterdir()) == ["songs.csv", "table.parquet"]


def test_two_503s_are_retried_and_the_third_attempt_succeeds(
    sources_server: SourcesServer, tmp_path: Path
) -> None:
    sources_server.put(ZIP_PATH, _zip_bytes({"plays.dat": PLAYS, "songs.csv": SONGS}))
    sources_server.state.fail_first[ZIP_PATH] = 2

    report = _download(ZIP_SOURCE, tmp_path, sources_server.base_url, retries=3)

    assert sources_server.state.hits[ZIP_PATH] == 3
    assert report.attempts == 3
    assert _listing(tmp_path / "tiny-zip")["plays.dat"] == _sha(PLAYS)


def test_persistent_503_gives_up_after_the_allowed_attempts(
    sources_server: SourcesServer, tmp_path: Path
) -> None:
    sources_server.put(ZIP_PATH, _zip_bytes({"plays.dat": PLAYS, "songs.csv": SONGS}))
    sources_server.state.fail_first[ZIP_PATH] = 2

    with pytest.raises(SourceUnavailableError) as caught:
        _download(ZIP_SOURCE, tmp_path / "raw", sources_server.base_url, retries=2)

    assert sources_server.state.hits[ZIP_PATH] == 2
    assert "503" in str(caught.value) and "2 attempt" in str(caught.value)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_a_timeout_is_retried(sources_server: SourcesServer, tmp_path: Path) -> None:
    sources_server.put(ZIP_PATH, _zip_bytes({"plays.dat": PLAYS, "songs.csv": SONGS}))
    sources_server.state.stall_first[ZIP_PATH] = 1.0

    report = ingest_source(
        ZIP_SOURCE, tmp_path, None, base_url=sources_server.base_url, retries=2, timeout_s=0.2, backoff_s=0.01
    )

    assert report.attempts == 2 and sources_server.state.hits[ZIP_PATH] == 2


def test_404_is_not_retried_and_names_the_url(sources_server: SourcesServer, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailableError) as caught:
        _download(ZIP_SOURCE, tmp_path / "raw", sources_server.base_url, retries=3)

    message = str(caught.value)
    assert sources_server.state.hits[ZIP_PATH] == 1
    assert "404" in message and sources_server.base_url + ZIP_PATH in message and "'tinyzip'" in message


def test_corrupted_download_names_the_file_and_leaves_nothing(
    sources_server: SourcesServer, tmp_path: Path
) -> None:
    truncated = SONGS[: len(SONGS) // 2]
    _serve_plain(sources_server)
    sources_server.put(f"{PLAIN_DIR}/songs.csv", truncated)
    dest = tmp_path / "raw"

    with pytest.raises(DataError) as caught:
        _download(PLAIN_SOURCE, dest, sources_server.base_url)

    message = str(caught.value)
    assert "tiny-plain/songs.csv" in message
    assert _sha(SONGS) in message and _sha(truncated) in message
    assert list(dest.iterdir()) == []


def test_failed_download_keeps_the_earlier_good_copy(sources_server: SourcesServer, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    sources_server.put(ZIP_PATH, _zip_bytes({"plays.dat": PLAYS, "songs.csv": SONGS}))
    _download(ZIP_SOURCE, dest, sources_server.base_url)
    good = _listing(dest / "tiny-zip")

    tampered = PLAYS.replace(b"\t7", b"\t8")
    sources_server.put(ZIP_PATH, _zip_bytes({"plays.dat": tampered, "songs.csv": SONGS}))
    with pytest.raises(DataError, match=r"plays\.dat"):
        _download(ZIP_SOURCE, dest, sources_server.base_url)

    assert _listing(dest / "tiny-zip") == good
    assert [entry.name for entry in dest.iterdir()] == ["tiny-zip"]


def test_archive_without_a_required_file_is_refused(sources_server: SourcesServer, tmp_path: Path) -> None:
    sources_server.put(ZIP_PATH, _zip_bytes({"plays.dat": PLAYS}))
    with pytest.raises(DataError, match=r"lacks required file\(s\) songs\.csv"):
        _download(ZIP_SOURCE, tmp_path, sources_server.base_url)
    assert list(tmp_path.iterdir()) == [sources_server.root]


def test_connection_refused_says_how_to_use_a_local_copy(sources_refused_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailableError) as caught:
        _download(ZIP_SOURCE, tmp_path / "raw", sources_refused_url, retries=2)

    message = str(caught.value)
    assert "'tinyzip'" in message and sources_refused_url + ZIP_PATH in message
    assert f"set {DATA_DIR_ENV}" in message and "tiny-zip/" in message and "plays.dat" in message
    assert "\n" not in message


# -- local copies ---------------------------------------------------------------------------------


def test_local_copy_is_verified_and_copied_without_network(sources_refused_url: str, tmp_path: Path) -> None:
    local = _local_copy(tmp_path / "local", PLAIN_SOURCE, {"table.parquet": PARQUET, "songs.csv": SONGS})

    report = ingest_source(PLAIN_SOURCE, tmp_path / "raw", local, base_url=sources_refused_url)

    assert _listing(tmp_path / "raw" / "tiny-plain") == _listing(local / "tiny-plain")
    assert report.origin == "local" and report.attempts == 0
    assert report.location == str(local / "tiny-plain")
    assert set(dict(report.skipped)) == {"notes.txt", "export.csv"}


def test_tampered_local_copy_is_refused_with_what_differs(tmp_path: Path) -> None:
    tampered = PLAYS.replace(b"\t5", b"\t6")
    local = _local_copy(tmp_path / "local", ZIP_SOURCE, {"plays.dat": tampered, "songs.csv": SONGS})

    with pytest.raises(DataError) as caught:
        ingest_source(ZIP_SOURCE, tmp_path / "raw", local)

    message = str(caught.value)
    assert str(local / "tiny-zip" / "plays.dat") in message
    assert _sha(PLAYS) in message and _sha(tampered) in message
    assert "verify='rows'" in message
    assert list((tmp_path / "raw").iterdir()) == []


def test_reexported_local_copy_is_accepted_by_row_verification(tmp_path: Path) -> None:
    reexport = PLAYS.replace(b"\r\n", b"\n")
    local = _local_copy(tmp_path / "local", ZIP_SOURCE, {"plays.dat": reexport, "songs.csv": SONGS})

    report = ingest_source(ZIP_SOURCE, tmp_path / "raw", local, verify="rows")

    plays = next(f for f in report.files if f.name == "plays.dat")
    assert (plays.sha256, plays.rows) == (_sha(reexport), 3)
    assert (tmp_path / "raw" / "tiny-zip" / "plays.dat").read_bytes() == reexport


def test_row_verification_still_refuses_a_short_file(tmp_path: Path) -> None:
    short = PLAYS.rsplit(b"2\t2", 1)[0]
    local = _local_copy(tmp_path / "local", ZIP_SOURCE, {"plays.dat": short, "songs.csv": SONGS})
    with pytest.raises(DataError, match=r"data rows 2 \(official 3\)"):
        ingest_source(ZIP_SOURCE, tmp_path / "raw", local, verify="rows")


def test_local_folder_without_a_required_file_is_refused(tmp_path: Path) -> None:
    local = _local_copy(tmp_path / "local", ZIP_SOURCE, {"plays.dat": PLAYS})
    with pytest.raises(DataError, match=r"lacks required file\(s\) songs\.csv"):
        ingest_source(ZIP_SOURCE, tmp_path / "raw", local)


def test_ingest_all_reports_are_json_able_and_unknown_names_fail_early(
    sources_server: SourcesServer, tmp_path: Path
) -> None:
    registry = {"tinyzip": ZIP_SOURCE, "tinyplain": PLAIN_SOURCE}
    local = _local_copy(tmp_path / "local", ZIP_SOURCE, {"plays.dat": PLAYS, "songs.csv": SONGS})
    _serve_plain(sources_server)

    reports = ingest_all(
        ["tinyzip", "tinyplain"], tmp_path / "raw", local, registry=registry, base_url=sources_server.base_url
    )
    summary = json.loads(json.dumps(summarize(reports)))

    assert [(item["source"], item["origin"]) for item in summary["sources"]] == [
        ("tinyzip", "local"),
        ("tinyplain", "download"),
    ]
    assert summary["files"] == 5
    assert summary["bytes"] == 2 * len(SONGS) + len(PLAYS) + len(PARQUET) + len(NOTES)
    with pytest.raises(ConfigError, match="nope"):
        ingest_all(["tinyzip", "nope"], tmp_path / "other", local, registry=registry)
    assert not (tmp_path / "other").exists()


# -- the real data sets -------------------------------------------------------------------------


def _serve_real(server: SourcesServer, real: Path) -> None:
    lastfm = SOURCES["lastfm"]
    members = {f"{lastfm.folder}/{spec.name}": (real / lastfm.folder / spec.name) for spec in lastfm.files}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, path in members.items():
            bundle.write(path, name)
        bundle.writestr(f"{lastfm.folder}/user_taggedartists-timestamps.dat", b"userID\tartistID\n")
    server.put(urlpath(lastfm.url), buffer.getvalue())
    for name in ("spotify", "lyrics"):
        source = SOURCES[name]
        for spec in source.files:
            if spec.remote:
                server.put(urlpath(file_url(source, spec)), (real / source.folder / spec.name).read_bytes())


def urlpath(url: str) -> str:
    return resolve_url(url, "http://x").removeprefix("http://x")


@pytest.mark.slow
@pytest.mark.realdata
def test_download_of_the_real_sets_matches_the_local_folder(
    sources_server: SourcesServer, sources_real_dir: Path, tmp_path: Path
) -> None:
    _serve_real(sources_server, sources_real_dir)

    base_url = sources_server.base_url
    reports = ingest_all(list(SOURCES), tmp_path / "raw", None, base_url=base_url, backoff_s=0.01)

    for report in reports:
        source = SOURCES[report.source]
        published = {spec.name for spec in source.files if spec.remote}
        real = _listing(sources_real_dir / source.folder)
        real = {name: sha for name, sha in real.items() if name in published}
        assert _listing(tmp_path / "raw" / source.folder) == real
        assert report.origin == "download" and not [f for f in report.files if f.origin != "download"]


@pytest.mark.slow
@pytest.mark.realdata
def test_local_ingest_of_the_real_sets_counts_the_official_rows(
    sources_real_dir: Path, tmp_path: Path
) -> None:
    reports = ingest_all(list(SOURCES), tmp_path / "raw", sources_real_dir)

    for report in reports:
        source = SOURCES[report.source]
        rows = {f.name: f.rows for f in report.files}
        assert {spec.name: rows[spec.name] for spec in source.required_files} == {
            spec.name: spec.rows for spec in source.required_files
        }
        assert _listing(tmp_path / "raw" / source.folder) == _listing(sources_real_dir / source.folder)


@pytest.mark.slow
@pytest.mark.realdata
def test_the_ingest_stage_writes_the_same_bytes_on_a_rerun(sources_real_dir: Path, tmp_path: Path) -> None:
    from recsys import stages
    from recsys.config import Params

    first = stages.ingest(Params(), tmp_path / "raw", sources_real_dir)
    written = (tmp_path / "raw" / "ingest.json").read_bytes()
    # Another clone reads the same files from elsewhere (CI: ../shared/data beside its checkout).
    elsewhere = tmp_path / "another" / "data"
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(sources_real_dir, target_is_directory=True)
    stages.ingest(Params(), tmp_path / "raw", elsewhere)

    # The returned summary keeps the timings and locations for the log; the DVC output leaves them out.
    assert first["seconds"] >= 0 and all("seconds" in source for source in first["sources"])
    assert all(source["location"].startswith(str(sources_real_dir)) for source in first["sources"])
    assert written == (tmp_path / "raw" / "ingest.json").read_bytes()
    assert b'"seconds"' not in written and b'"location"' not in written
    assert json.loads(written)["files"] == first["files"]
