"""``recsys`` finds the project's stores and data folder as ``make`` does, however it is started (#29)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys import project
from tests.helpers import PROJECT_ROOT

MAKE_ENV = ("BENTOML_HOME", "PREFECT_HOME", "RECSYS_DATA_DIR")


def a_project(tmp_path: Path, with_data: bool = True) -> Path:
    root = tmp_path / "main"
    (root / "sub").mkdir(parents=True)
    for name in project.MARKERS:
        shutil.copy(PROJECT_ROOT / name, root / name)
    if with_data:
        (tmp_path / "shared" / "data").mkdir(parents=True)
    return root


def test_the_defaults_are_the_makefiles_and_a_set_value_wins(tmp_path: Path) -> None:
    root = a_project(tmp_path)
    env = {"BENTOML_HOME": "/elsewhere"}
    added = project.apply_defaults(root / "sub", env)
    assert env["BENTOML_HOME"] == "/elsewhere" and "BENTOML_HOME" not in added
    assert env["PREFECT_HOME"] == str(root / ".prefect")
    assert env["RECSYS_DATA_DIR"] == str(tmp_path / "shared" / "data")
    assert env["DO_NOT_TRACK"] == "1"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for key, value in (("PREFECT_HOME", ".prefect"), ("BENTOML_HOME", ".bentoml")):
        assert f"export {key} ?= $(abspath {value})" in makefile  # the same folders as make
    assert "export RECSYS_DATA_DIR ?= $(abspath ../shared/data)" in makefile
    for key, value in project.QUIET.items():
        assert f"export {key} := {value}" in makefile


def test_outside_a_project_or_without_shared_data_nothing_is_guessed(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert project.apply_defaults(tmp_path, env) == {} and env == {}
    root = a_project(tmp_path, with_data=False)
    project.apply_defaults(root, env)
    assert "RECSYS_DATA_DIR" not in env and env["BENTOML_HOME"] == str(root / ".bentoml")


def test_the_installed_script_reads_the_projects_store_without_make(tmp_path: Path) -> None:
    root = a_project(tmp_path)
    env = {key: value for key, value in os.environ.items() if key not in MAKE_ENV}
    script = Path(sys.executable).parent / "recsys"
    result = subprocess.run(
        [str(script), "model", "list"], cwd=root / "sub", env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"models in {root / '.bentoml'}" in result.stdout


def test_the_service_names_the_store_it_looked_in_when_there_is_no_champion(tmp_path: Path) -> None:
    from recsys import registry
    from recsys.errors import RecsysError

    with pytest.raises(RecsysError, match=f"champion yet in {tmp_path / 'home' / 'models'}"):
        registry.get_model("champion", tmp_path / "home")


def test_songs_then_the_artists_preset_gives_back_the_committed_params(tmp_path: Path) -> None:
    from flows.dvc import apply_overrides
    from recsys.cli.main import load_preset

    params = tmp_path / "params.yaml"
    shutil.copy(PROJECT_ROOT / "params.yaml", params)
    assert apply_overrides(params, load_preset("spotify-songs"))
    assert apply_overrides(params, load_preset("large-catalogue"))
    assert apply_overrides(params, load_preset("new-data"))
    apply_overrides(params, load_preset("lastfm-artists"))
    committed = (PROJECT_ROOT / "params.yaml").read_text()
    assert yaml.safe_load(params.read_text()) == yaml.safe_load(committed)
    assert params.read_text().count("\n") == committed.count("\n")  # comments and layout kept
