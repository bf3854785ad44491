"""Where copies of feedback exports sit for DVC, as an erasure needs to know: which exports changed since
their ``.dvc`` pinned them, the cache and local remotes, and objects deleted from any remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows.dvc import (
    changed_feedback_files,
    dvc_executable,
    dvc_versions,
    feedback_pins,
    object_folders,
    objects_in_remotes,
    remove_from_remotes,
    untrack,
)
from recsys.paths import FEEDBACK_DIR
from tests.helpers import dvc_cached


def _dvc(project: Path, *args: str) -> None:
    subprocess.run([dvc_executable(), *args], cwd=project, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A DVC project with a local remote and three exports (a and b of the same content), pushed."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    _dvc(root, "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    folder = root / FEEDBACK_DIR
    folder.mkdir(parents=True)
    for name, content in [("a", b"erased and kept"), ("b", b"erased and kept"), ("c", b"kept only")]:
        (folder / f"{name}.parquet").write_bytes(content)
    _dvc(root, "add", "-q", *(str(FEEDBACK_DIR / f"{name}.parquet") for name in "abc"))
    _dvc(root, "push", "-q")
    return root


def test_an_export_changed_since_its_dvc_file_pinned_it_is_found(project: Path) -> None:
    files = [str(FEEDBACK_DIR / f"{name}.parquet") for name in "abc"]
    assert set(feedback_pins(project)) == set(files)
    assert changed_feedback_files(project) == []

    (project / files[0]).write_bytes(b"kept")  # purged, not re-added yet

    assert changed_feedback_files(project) == [files[0]]
    _dvc(project, "add", "-q", files[0])
    assert changed_feedback_files(project) == []


def test_the_cache_and_local_remotes_are_listed_and_objects_leave_every_remote(project: Path) -> None:
    [old] = dvc_versions(project, [str(FEEDBACK_DIR / "a.parquet")])
    folders = object_folders(project)
    assert set(folders) == {"cache", "remote:shared"}
    assert dvc_cached(project, old)
    assert objects_in_remotes(project, [old, "0" * 32]) == {"shared": [old]}

    assert remove_from_remotes(project, [old, "0" * 32]) == {"shared": [old]}

    assert objects_in_remotes(project, [old]) == {"shared": []}
    assert remove_from_remotes(project, [old]) == {"shared": []}  # a rerun finds nothing left
    assert dvc_cached(project, old)  # the local cache is the caller's (it scans it by content)


def test_an_unfinished_export_and_its_dvc_file_are_removed(project: Path) -> None:
    file = str(FEEDBACK_DIR / "c.parquet")

    untrack(project, file)

    assert not (project / file).exists() and not (project / f"{file}.dvc").exists()
    untrack(project, file)  # already gone: nothing to do
