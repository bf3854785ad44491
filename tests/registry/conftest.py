"""A tiny project built once per module and a fresh BentoML home per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Project, build_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_project(tmp_path_factory.mktemp("project"))


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh BentoML home, also set as BENTOML_HOME so calls without ``home`` use it."""
    path = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(path))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    return path
