"""Erasure reaches the DVC cache: the versions of purged exports go, nothing a `.dvc` file pins does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows.dvc import drop_from_dvc_cache, dvc_executable, dvc_versions
from recsys.paths import FEEDBACK_DIR
from tests.helpers import dvc_cached


def _dvc(project: Path, *args: str) -> None:
    subprocess.run([dvc_executable(), *args], cwd=project, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A DVC project with two exports: a.parquet and b.parquet of the same content, c.parquet another."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(tmp_path, "init", "-q")
    folder = tmp_path / FEEDBACK_DIR
    folder.mkdir(parents=True)
    for name, content in [("a", b"erased and kept"), ("b", b"erased and kept"), ("c", b"kept only")]:
        (folder / f"{name}.parquet").write_bytes(content)
    _dvc(tmp_path, "add", "-q", *(str(FEEDBACK_DIR / f"{name}.parquet") for name in "abc"))
    return tmp_path


def _purge(project: Path, name: str) -> str:
    """Rewrite an export without the erased rows and re-add it; its md5 before."""
    file = str(FEEDBACK_DIR / f"{name}.parquet")
    [before] = dvc_versions(project, [file])
    (project / file).write_bytes(b"kept")
    _dvc(project, "add", "-q", file)
    return before


def test_the_version_before_the_purge_leaves_the_cache_and_the_others_stay(project: Path) -> None:
    files = [str(FEEDBACK_DIR / f"{name}.parquet") for name in "abc"]
    unpurged = [_purge(project, "a"), _purge(project, "b")]
    assert unpurged[0] == unpurged[1] and dvc_cached(project, unpurged[0])

    assert drop_from_dvc_cache(str(project), unpurged) == [unpurged[0]]

    assert not dvc_cached(project, unpurged[0])
    assert all(dvc_cached(project, md5) for md5 in dvc_versions(project, files))
    status = subprocess.run(
        [dvc_executable(), "status", "-q"], cwd=project, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stdout + status.stderr


def test_a_version_a_dvc_file_still_pins_is_kept(project: Path) -> None:
    unpurged = _purge(project, "a")  # b.parquet still holds the same content and pins the same object

    assert drop_from_dvc_cache(str(project), [unpurged]) == []
    assert dvc_cached(project, unpurged)


def test_outside_a_dvc_project_nothing_is_touched(tmp_path: Path) -> None:
    assert drop_from_dvc_cache(str(tmp_path), ["b1946ac92492d2347c6235b4d2611184"]) == []
    assert dvc_versions(tmp_path, ["missing.parquet"]) == []
