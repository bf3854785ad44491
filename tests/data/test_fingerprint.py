"""The ``sources`` record changes exactly when what ingest reads changes (#29: a fixed file is read)."""

from __future__ import annotations

import shutil
from pathlib import Path

from recsys.config import Params
from recsys.data.fingerprint import fingerprint
from recsys.data.sources import SOURCES


def own_files(tmp_path: Path) -> Params:
    (tmp_path / "listens.csv").write_text("who,song,n\na,s1,2\n")
    (tmp_path / "songs.csv").write_text("song,title\ns1,One\n")
    files = {"interactions": str(tmp_path / "listens.csv"), "items": str(tmp_path / "songs.csv")}
    return Params.model_validate({"dataset": {"name": "files", "files": files}})


def test_a_changed_own_file_changes_the_record_and_an_unchanged_one_does_not(tmp_path: Path) -> None:
    params = own_files(tmp_path)
    first = fingerprint(params, None)
    assert fingerprint(params, None) == first
    (tmp_path / "listens.csv").write_text("who,song,n\na,s1,3\n")  # the same size, other content
    changed = fingerprint(params, None)
    assert changed != first and changed["files"]["items"] == first["files"]["items"]
    assert "tmp" not in str(changed)  # names, never folders: the same on every clone
    (tmp_path / "songs.csv").unlink()
    assert fingerprint(params, None)["files"]["items"] == {"name": "songs.csv", "missing": True}


def test_a_local_copy_is_recorded_by_content_wherever_it_sits(tmp_path: Path, real_data_dir: Path) -> None:
    shared = real_data_dir
    folder = SOURCES["lastfm"].folder
    copy = tmp_path / "copy"
    shutil.copytree(shared / folder, copy / folder)
    params = Params()
    record = fingerprint(params, shared)
    assert fingerprint(params, copy)["sources"]["lastfm"] == record["sources"]["lastfm"]
    with open(copy / folder / "artists.dat", "a", encoding="utf-8") as handle:
        handle.write("99999\tNew artist\thttp://x\thttp://y\n")
    assert fingerprint(params, copy)["sources"]["lastfm"] != record["sources"]["lastfm"]
    downloads = fingerprint(params, tmp_path / "empty")["sources"]["lastfm"]
    assert downloads["download"] == SOURCES["lastfm"].url  # no local copy: what the download must match
