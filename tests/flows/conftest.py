"""Fixtures for the flow tests: a Prefect test server, a private model store and a tiny DVC project.

The project (:func:`tests.helpers.make_tiny_project`) is a temporary git + DVC repository holding a copy
of ``dvc.yaml`` and ``params.yaml`` (and of ``recsys/``, which the stages list as dependencies). Its
ingest stage copies the synthetic raw folder inside it (named by ``RECSYS_DATA_DIR``) instead of
verifying the official checksums, and lists that folder as a dependency, so changing a raw file reruns
ingest like new data would. Every other stage is the project's own ``recsys <stage>`` command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TinyProject, make_tiny_project


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database for the whole session (starting one takes ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private BentoML home per test module: champions of one module never meet another's, nor the
    user's model store."""
    home = tmp_path_factory.mktemp("bentoml")
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    """A fresh tiny project per test module, never run."""
    return make_tiny_project(tmp_path_factory.mktemp("flows") / "project")
