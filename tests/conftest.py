"""Shared fixtures: the real data folder (RECSYS_DATA_DIR) and its prepared tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Services the tests start (here, in other hosts' namespaces, by flows) explore only when a test turns it on
# (recsys.serving.exploration): a random slot makes two equal requests differ. Export it to run them with it.
os.environ.setdefault("RECSYS_EXPLORE_SHARE", "0")


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The seed of the random test order (pytest-randomly), also under ``-q``: rerun with it to replay."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"test order: random, seed {seed} (replay: --randomly-seed={seed})")
