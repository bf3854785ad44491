"""Fixtures for the flow tests: a Prefect test server, a synthetic raw-data folder and a tiny DVC project.

The project is a temporary git + DVC repository holding a copy of ``dvc.yaml`` and ``params.yaml``
(and of ``recsys/``, which the stages list as dependencies). Its ingest stage copies the synthetic
raw folder (named by ``RECSYS_DATA_DIR``) instead of verifying the official checksums, and lists that
folder as an external dependency, so changing a raw file reruns ingest like new data would. Every
other stage is the project's own ``recsys <stage>`` command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys.data.schemas import (
    ARTISTS,
    LYRICS_SONGS,
    SPOTIFY_SONGS,
    TAGS,
    USER_ARTISTS,
    USER_TAGGED_ARTISTS,
)
from tests.conftest import PROJECT_ROOT
from tests.data.raw_fixture import AUDIO, SPOTIFY_HEADER

# Small enough to train in seconds, big enough for the split (>= 5 artists per user) and EASE.
TINY_OVERRIDES: dict[str, Any] = {
    "train.num_threads": 1,
    "train.lightfm.no_components": 4,
    "train.lightfm.epochs": 3,
    "train.lightfm.eval_every": 1,
    "train.lightfm.patience": 1,
    "train.search.n_trials": 2,
    "train.search.space": {"no_components": [4, 8], "learning_rate": [0.05]},
    "train.ease.min_item_users": 1,
    "train.itemknn.neighbours": 10,
    "features.lyrics.max_features": 10,
    "features.lyrics.svd_components": 2,
    "features.tags.min_artists": 1,
}
_TAGS = ("pop", "rock", "soul", "jazz", "metal")
_GENRES = ("pop", "rock", "r&b", "rap")
_WORDS = ("love", "night", "heart", "dance", "fire", "rain", "road", "home")


def write_synthetic_raw(root: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """A raw folder laid out like the real one: Zipf-like listens (8-14 artists per user), tags,
    one Spotify track and one lyric per artist (all joinable by name)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    popularity /= popularity.sum()
    listens = ["userID\tartistID\tweight"]
    for user in range(1, n_users + 1):
        size = int(rng.integers(8, 15))
        artists = np.sort(rng.choice(n_items, size=size, replace=False, p=popularity) + 1)
        listens += [f"{user}\t{artist}\t{int(rng.integers(1, 500))}" for artist in artists]
    items = range(1, n_items + 1)
    files = {
        USER_ARTISTS.path: listens,
        ARTISTS.path: ["id\tname\turl\tpictureURL", *(f"{a}\tArtist {a}\tu\tp" for a in items)],
        TAGS.path: ["tagID\ttagValue", *(f"{i}\t{tag}" for i, tag in enumerate(_TAGS, 1))],
        USER_TAGGED_ARTISTS.path: [
            "userID\tartistID\ttagID\tday\tmonth\tyear",
            *(f"{u}\t{a}\t{a % len(_TAGS) + 1}\t1\t4\t2009" for a in items for u in (1, 2, 3)),
        ],
        SPOTIFY_SONGS.path: [
            SPOTIFY_HEADER,
            *(
                f"t{a},Song {a},Artist {a},50,al,Album,2008-01-01,P,pl{a % 3},{_GENRES[a % 4]},sub,{AUDIO}"
                for a in items
            ),
        ],
    }
    for relative, lines in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lyrics = pd.DataFrame(
        {
            "track_name": [f"Song {a}" for a in items],
            "album": ["A"] * n_items,
            "release_date": ["2010"] * n_items,
            "song_length": ["3:00"] * n_items,
            "popularity": [50.0] * n_items,
            "songwriters": [["X"]] * n_items,
            "artist": [f"Artist {a}" for a in items],
            "lyrics": [" ".join(rng.choice(_WORDS, 12)) for _ in items],
            "genre": [["pop"]] * n_items,
            "featured_artist": [None] * n_items,
        }
    )
    (root / LYRICS_SONGS.path).parent.mkdir(parents=True, exist_ok=True)
    lyrics.to_parquet(root / LYRICS_SONGS.path, index=False)
    return root


@dataclass(frozen=True)
class TinyProject:
    """A temporary DVC project and the raw folder its ingest stage copies."""

    root: Path
    raw: Path

    @property
    def users_file(self) -> Path:
        """The raw listens file (break it to make the prepare stage fail)."""
        return self.raw / USER_ARTISTS.path


def _git(root: Path, *args: str) -> None:
    env = dict(os.environ) | {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def make_tiny_project(root: Path, raw: Path) -> TinyProject:
    """Copy dvc.yaml, params.yaml and recsys/ into ``root``; git + DVC init; ingest copies ``raw``."""
    root.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    pipeline["stages"]["ingest"] = {
        "cmd": 'mkdir -p data/raw && cp -R "$RECSYS_DATA_DIR"/. data/raw/',
        "deps": [str(raw)],
        "outs": ["data/raw"],
    }
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(PROJECT_ROOT / "recsys", root / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    return TinyProject(init_repo(root, pipeline), raw)


def init_repo(root: Path, pipeline: dict[str, Any]) -> Path:
    """Write ``pipeline`` as ``root/dvc.yaml``, then git init, dvc init and commit everything."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False), encoding="utf-8")
    dvc = str(Path(sys.executable).parent / "dvc")
    _git(root, "init", "-q")
    subprocess.run([dvc, "init", "-q"], cwd=root, check=True, capture_output=True)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "test project")
    return root


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
    """A fresh tiny project per test module (its tests run in file order and share its state)."""
    base = tmp_path_factory.mktemp("flows")
    raw = write_synthetic_raw(base / "raw")
    return make_tiny_project(base / "project", raw)


def force_feedback_gate(monkeypatch: pytest.MonkeyPatch, promote: bool) -> None:
    """Make the retraining flow's gate answer ``promote`` whatever the metrics of a tiny model say."""
    from recsys.offline import gate
    from recsys.offline.gate import GateDecision

    def decide(challenger: Any, champion: Any, params: Any) -> GateDecision:
        return GateDecision(promote, [f"test gate: promote={promote}"], {})

    monkeypatch.setattr(gate, "decide_feedback", decide)


def feedback_state(project: Path) -> dict[str, Any]:
    """What a retraining run may change: the cursor, the champion, the exported files' bytes, the models."""
    from recsys import registry
    from recsys.loop.exports import CURSOR_FILE

    return {
        "cursor": (project / CURSOR_FILE).read_text(encoding="utf-8"),
        "champion": registry.champion(),
        "files": {p.name: p.read_bytes() for p in (project / "data" / "feedback").glob("events-*.parquet")},
        "models": len(registry.list_models()),
    }


def dvc_cached(project: Path, md5: str) -> bool:
    """Whether ``project``'s DVC cache holds the object of ``md5`` (DVC 3 layout)."""
    return (project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()
