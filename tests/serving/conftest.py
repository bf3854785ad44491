"""A tiny champion in a temporary model store, and the real service started on it over loopback.

The catalogue has two taste clusters (rock/indie artists and pop/dance artists) and listeners who
mostly stay in one cluster, so recommendations, reasons and filters have predictable shapes
(:class:`tests.helpers.ClusteredCatalogue`); the server helpers are :mod:`tests.helpers`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys import registry
from recsys.config import LightFMParams, SplitParams
from tests.helpers import (
    CLUSTERED_NAMES,
    ClusteredCatalogue,
    Project,
    Server,
    item_ids_of,
    start_server,
    stop_server,
)
from tests.helpers import build_project as build_helper_project

NAMES = CLUSTERED_NAMES
ITEM_IDS = item_ids_of(len(NAMES))


def build_project(root: Path, seed: int = 0) -> Project:
    """The clustered catalogue's tables, features, split (no cold items) and hybrid under ``root``."""
    return build_helper_project(
        root,
        seed,
        ClusteredCatalogue(),
        hybrid=LightFMParams(no_components=8, epochs=20),
        split_params=SplitParams(cold_item_fraction=0.0),
    )


def save_champion(
    project: Project,
    home: Path,
    dataset: str | None = None,
    feedback_users: tuple[str, ...] = (),
    promote: bool = True,
) -> str:
    """Package the project's hybrid into ``home`` as a ``dataset`` model trained (as its record says) on
    ``feedback_users``' feedback, and promote it unless told not to; returns its tag."""
    tag = registry.save_candidate(
        project.models,
        project.features,
        project.split,
        {"ndcg@10": 0.5},
        params_dict={"seed": 0} | ({"dataset": {"name": dataset}} if dataset else {}),
        dvc_lock_hash="unknown",
        git_commit="unknown",
        prepared_dir=project.prepared,
        top_tags=3,
        home=home,
        feedback_users=feedback_users,
    )
    if promote:
        registry.promote(tag, home=home, dataset=dataset)
    return tag


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return build_project(tmp_path_factory.mktemp("serving-project"))


@pytest.fixture(scope="session")
def champion_home(project: Project, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("bentoml-home")
    return home, save_champion(project, home)


@pytest.fixture(scope="module")
def server(champion_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on the tiny champion, with a SQLite feedback store and an admin token."""
    home, _ = champion_home
    running = start_server(home, tmp_path_factory.mktemp("service"), {})
    yield running
    stop_server(running)
