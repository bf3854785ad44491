"""`bentoml build` of the project, twice, with the store inside the project (the Makefile's BENTOML_HOME)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT


@pytest.mark.slow
def test_a_rebuild_never_packs_the_earlier_bentos(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("bentofile.yaml", "pyproject.toml", "constraints.txt", "params.yaml"):
        shutil.copy(PROJECT_ROOT / name, project / name)
    shutil.copytree(PROJECT_ROOT / "recsys", project / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    env = os.environ | {"BENTOML_HOME": str(project / ".bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    for _ in range(2):
        subprocess.run([bentoml, "build", "-q"], cwd=project, env=env, check=True, capture_output=True)
    bentos = sorted((project / ".bentoml" / "bentos" / "music-recommender").glob("*/src"))
    assert len(bentos) == 2
    for source in bentos:
        # Each bento holds the package once; before the exclude, the second held the first bento too.
        assert not [path for path in source.rglob("*") if ".bentoml" in path.relative_to(source).parts]
        assert len(list(source.rglob("service.py"))) == 1
        # The image installs the pinned versions, not whatever the index has on the day it is built.
        requirements = (source.parent / "env" / "python" / "requirements.txt").read_text(encoding="utf-8")
        pins = {line for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
        assert pins and pins <= set(requirements.splitlines())


def test_bentoml_finds_uv_installed_so_a_build_installs_nothing_mid_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bentoml._internal.configuration import get_uv_command

    def no_install(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"bentoml tried to install something: {args}")

    monkeypatch.setattr(subprocess, "run", no_install)
    get_uv_command.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")  # not on PATH either: it must be an installed package
    assert get_uv_command() == [sys.executable, "-m", "uv"]  # the installed package, nothing installed
    get_uv_command.cache_clear()
