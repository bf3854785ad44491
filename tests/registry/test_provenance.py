"""Provenance recorded with a model: the dvc.lock hash, the git commit, the data version."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from recsys import registry
from tests.helpers import PROJECT_ROOT


def test_dvc_lock_hash_and_git_commit(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_bytes(b"schema: '2.0'\n")
    assert registry.dvc_lock_hash(lock) == hashlib.sha256(b"schema: '2.0'\n").hexdigest()
    assert registry.dvc_lock_hash(tmp_path / "absent.lock") == "unknown"
    assert registry.git_commit(tmp_path) == "unknown"
    if (PROJECT_ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", registry.git_commit(PROJECT_ROOT))


def test_the_data_version_changes_exactly_when_a_file_or_its_name_does(tmp_path: Path) -> None:
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.npz").write_bytes(b"abc")
    first = registry.data_version(folder)
    assert registry.data_version(folder) == first
    (folder / "train.npz").write_bytes(b"abd")
    changed = registry.data_version(folder)
    (folder / "train.npz").rename(folder / "test.npz")
    assert len({first, changed, registry.data_version(folder)}) == 3
