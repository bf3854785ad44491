"""Shared fixtures: the real data folder (RECSYS_DATA_DIR) and the project root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder holding the real data sets; tests using it skip only when RECSYS_DATA_DIR is unset."""
    value = os.environ.get("RECSYS_DATA_DIR", "").strip()
    if not value:
        pytest.skip("RECSYS_DATA_DIR is not set: the real data sets are not available")
    path = Path(value)
    assert (path / "hetrec2011-lastfm-2k" / "user_artists.dat").exists(), f"{path} lacks the Last.fm files"
    return path


@pytest.fixture(scope="session")
def prepared_real(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepare stage run once on the real data; returns the prepared folder."""
    from recsys.config import Params
    from recsys.data.prepare import prepare, write_prepared

    out = tmp_path_factory.mktemp("prepared")
    write_prepared(prepare(real_data_dir, Params().prepare), out)
    return out
