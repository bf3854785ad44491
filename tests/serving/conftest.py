"""A tiny champion in a temporary model store, and the real service started on it over loopback.

The catalogue has two taste clusters (rock/indie artists and pop/dance artists) and listeners who
mostly stay in one cluster, so recommendations, reasons and filters have predictable shapes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from benchmarks.serve import stop
from recsys import registry
from recsys.columns import Col
from recsys.config import FeaturesParams, LightFMParams, SplitParams
from recsys.io import write_parquet
from recsys.models import LightFMRecommender
from recsys.offline.features import build_item_features, save_item_features, without_identity
from recsys.offline.split import make_split, save_split

PROJECT_ROOT = Path(__file__).resolve().parents[2]
N_USERS, PER_CLUSTER = 40, 12
ADMIN_TOKEN = "test-admin-token-0123456789"
ROCK = [f"Rock Band {chr(65 + i)}" for i in range(PER_CLUSTER)]
POP = [f"Pop Star {chr(65 + i)}" for i in range(PER_CLUSTER)]
NAMES = [*ROCK, "Radiohead", "Rammstein", *POP]
ITEM_IDS = [f"a{i:02d}" for i in range(len(NAMES))]
START_TIMEOUT_S = 120.0


def _is_rock(item: int) -> bool:
    return item < PER_CLUSTER + 2


def _listens(rng: np.random.Generator) -> np.ndarray:
    n_items = len(NAMES)
    rock = np.array([_is_rock(i) for i in range(n_items)])
    dense = np.zeros((N_USERS, n_items), dtype=bool)
    for user in range(N_USERS):
        home = rock if user % 2 == 0 else ~rock
        dense[user, rng.choice(np.flatnonzero(home), size=7, replace=False)] = True
        dense[user, rng.choice(np.flatnonzero(~home), size=1)] = True
    dense[:, 0] |= rng.random(N_USERS) < 0.6  # one clear most-popular artist
    return dense


def build_project(root: Path, seed: int = 0) -> dict[str, Path]:
    """Prepared tables, features, split and a trained hybrid under ``root``."""
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(_listens(rng))
    interactions = pd.DataFrame(
        {
            Col.USER: [f"u{user:02d}" for user in users],
            Col.ITEM: [ITEM_IDS[item] for item in items],
            Col.WEIGHT: (1 + np.log1p(rng.integers(1, 500, size=len(users)))).astype(np.float32),
        }
    )
    genres = ["rock" if _is_rock(i) else "pop" for i in range(len(NAMES))]
    catalogue = pd.DataFrame(
        {Col.ITEM: ITEM_IDS, Col.NAME: NAMES, Col.GENRES: genres, Col.LYRICS: ["never served"] * len(NAMES)}
    )
    tag_rows = []
    for item, item_id in enumerate(ITEM_IDS):
        tags = ("rock", "indie", "alternative") if _is_rock(item) else ("pop", "dance", "female vocalists")
        tag_rows += [(item_id, tag, 10 - rank) for rank, tag in enumerate(tags)]
    item_tags = pd.DataFrame(tag_rows, columns=[Col.ITEM, Col.TAG, Col.COUNT])
    paths = {name: root / name for name in ("models", "features", "split", "prepared")}
    write_parquet(paths["prepared"] / "items.parquet", catalogue)
    write_parquet(paths["prepared"] / "item_tags.parquet", item_tags)
    params = FeaturesParams.model_validate(
        {"tags": {"min_artists": 1}, "audio": {"enabled": False}, "lyrics": {"enabled": False}}
    )
    features = build_item_features(catalogue, item_tags, params, seed=seed)
    save_item_features(features, paths["features"])
    split = make_split(interactions, SplitParams(cold_item_fraction=0.0), seed, ITEM_IDS)
    save_split(split, paths["split"])
    model = LightFMRecommender(LightFMParams(no_components=8, epochs=20), seed=seed)
    model.fit(split.train_full, without_identity(features, split.cold_items).matrix)
    model.save(paths["models"] / "lightfm_hybrid.npz")
    return paths


def save_champion(paths: dict[str, Path], home: Path) -> str:
    """Package the project's hybrid into ``home`` and promote it; returns its tag."""
    tag = registry.save_champion_candidate(
        paths["models"],
        paths["features"],
        paths["split"],
        {"ndcg@10": 0.5},
        params_dict={"seed": 0},
        dvc_lock_hash="unknown",
        git_commit="unknown",
        prepared_dir=paths["prepared"],
        top_tags=3,
        home=home,
    )
    registry.promote(tag, home=home)
    return tag


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return build_project(tmp_path_factory.mktemp("serving-project"))


@pytest.fixture(scope="session")
def champion_home(project: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("bentoml-home")
    return home, save_champion(project, home)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``bentoml serve`` process and a client for it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    home: Path
    client: httpx.Client

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-5000:]


def start_server(home: Path, workdir: Path, env_overrides: dict[str, str], probe: str = "/readyz") -> Server:
    """Start the service on a free loopback port and wait until ``probe`` (/readyz or /livez) answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "RECSYS_FEEDBACK_URL": f"sqlite:///{workdir / 'feedback.db'}",
        "RECSYS_RUNTIME_DIR": str(workdir / "runtime"),
        "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
        **env_overrides,
    }
    env = {key: value for key, value in env.items() if value != ""}
    log = workdir / "server.log"
    command = [sys.executable, "-m", "bentoml", "serve", "recsys.serving.service:Recommender"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, process, log, home, httpx.Client(base_url=url, timeout=30.0))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{server.output()}")
        try:
            if server.client.get(probe).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"the service did not become ready in {START_TIMEOUT_S:g} s:\n{server.output()}")


def stop_server(server: Server) -> None:
    """Stop the server's whole process group (the arbiter and its workers)."""
    server.client.close()
    stop(server.process)


@pytest.fixture(scope="module")
def server(champion_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on the tiny champion, with a SQLite feedback store and an admin token."""
    home, _ = champion_home
    running = start_server(home, tmp_path_factory.mktemp("service"), {})
    yield running
    stop_server(running)
