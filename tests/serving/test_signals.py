"""The runtime folder that steers a service's workers: private to the user, one per data set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys.serving.settings import RUNTIME_DIR_ENV, ServingSettings
from recsys.serving.signals import Signals, private_folder

NOBODY = 65534


def test_a_new_runtime_folder_is_the_users_alone(tmp_path: Path) -> None:
    folder = private_folder(tmp_path / "rt")
    info = folder.stat()
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700


def test_a_folder_open_to_others_is_closed_and_one_of_another_user_refused(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    opened.mkdir()
    opened.chmod(0o777)
    assert stat.S_IMODE(private_folder(opened).stat().st_mode) == 0o700

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)  # another local user made it first
    with pytest.raises(ConfigError, match="belongs to user id 65534"):
        Signals(theirs)

    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "experiment.json").write_text('{"mode": "ab"}', encoding="utf-8")
    os.chown(planted / "experiment.json", NOBODY, NOBODY)  # written while the folder was open
    with pytest.raises(ConfigError, match=r"holds files of another user \(experiment\.json\)"):
        Signals(planted)

    link = tmp_path / "link"
    link.symlink_to(opened)
    with pytest.raises(ConfigError, match="not a plain folder"):
        private_folder(link)


def test_the_default_folder_differs_per_data_set_and_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    monkeypatch.setenv("RECSYS_DATASET", "lastfm-artists")
    artists = ServingSettings.from_env()
    monkeypatch.setenv("RECSYS_DATASET", "spotify-songs")
    songs = ServingSettings.from_env()
    assert artists.runtime_dir != songs.runtime_dir
    assert (artists.dataset, songs.dataset) == ("lastfm-artists", "spotify-songs")
    assert f"-{os.getuid()}-" in artists.runtime_dir.name
