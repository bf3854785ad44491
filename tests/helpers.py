"""What many tests share: the project root, polling, tiny projects built with the project's own code,
and the real service started on loopback.

Polling: :func:`wait_for` (returns whether the condition came true in time) and :func:`wait_until` (fails
the test when it did not). Projects: :func:`build_project` writes prepared tables, features, a split and
trained models for a :class:`TinyCatalogue` (:class:`RandomCatalogue`, :class:`ClusteredCatalogue`).
Raw data: :func:`write_synthetic_raw` (laid out like the real folder) and :data:`TINY_OVERRIDES` (params
that train in seconds); :func:`make_tiny_project` (a git + DVC project of it). Servers:
:func:`start_server` / :func:`stop_server` run ``bentoml serve`` on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from recsys import registry
from recsys.columns import AUDIO_FEATURES, Col
from recsys.config import FeaturesParams, LightFMParams, SplitParams
from recsys.data.schemas import (
    ARTISTS,
    LYRICS_SONGS,
    SPOTIFY_SONGS,
    TAGS,
    USER_ARTISTS,
    USER_TAGGED_ARTISTS,
)
from recsys.io import write_parquet
from recsys.models import LightFMRecommender
from recsys.offline.features import build_item_features, save_item_features, without_identity
from recsys.offline.split import make_split, save_split
from recsys.paths import model_file
from recsys.specs import CF, HYBRID
from tests.data.raw_fixture import AUDIO, SPOTIFY_HEADER

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "test-admin-token-0123456789"
CLIENT_TOKEN = "test-client-token-9876543210"
"""The platform backend's token: ``Server.client`` sends it (any user id); ``Server.anonymous`` does not."""
START_TIMEOUT_S = 120.0


# --- polling -----------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passed; whether it came true (asked once more
    at the deadline, so a slow machine gets the last word of the condition, not of the clock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


def wait_until(
    condition: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.05, what: str = "condition"
) -> None:
    """:func:`wait_for`, failing the test when ``condition`` is still false after ``timeout_s``."""
    if not wait_for(condition, timeout_s, interval_s):
        pytest.fail(f"{what} not met in {timeout_s:g} s")


# --- tiny hand-built data ------------------------------------------------------------------------------


def events_frame(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """Feedback events ``(user, item, event)`` a minute apart from 2026-01-01 UTC."""
    frame = pd.DataFrame(rows, columns=[Col.USER, Col.ITEM, Col.EVENT])
    frame[Col.TIMESTAMP] = pd.date_range("2026-01-01", periods=len(rows), freq="min", tz="UTC")
    return frame


GENRES = ("rock", "pop", "rap", "jazz")


def tiny_items(n_items: int = 40, seed: int = 0) -> pd.DataFrame:
    """Items whose audio profile depends on the genre, as real genres' profiles do."""
    rng = np.random.default_rng(seed)
    genre_of = np.array([GENRES[i % len(GENRES)] for i in range(n_items)])
    centre = pd.Series(np.arange(len(GENRES), dtype=float), index=GENRES)[genre_of].to_numpy()
    items = pd.DataFrame(
        {
            Col.ITEM: [f"a{i}" for i in range(n_items)],
            Col.N_LISTENERS: rng.integers(1, 200, n_items),
            Col.GENRE: genre_of,
        }
    )
    for column in AUDIO_FEATURES:
        items[column] = centre + rng.normal(0, 0.3, n_items)
    return items


def sample_listening(items: pd.DataFrame, n: int, seed: int, rock_share: float | None = None) -> pd.DataFrame:
    """``n`` listening events on uniformly drawn items, or with ``rock_share`` of them on rock artists."""
    rng = np.random.default_rng(seed)
    ids = items[Col.ITEM].to_numpy()
    chosen = rng.choice(ids, n)
    if rock_share is not None:
        rock = items.loc[items[Col.GENRE] == "rock", Col.ITEM].to_numpy()
        n_rock = round(rock_share * n)
        chosen = np.concatenate([rng.choice(rock, n_rock), rng.choice(ids, n - n_rock)])
    return pd.DataFrame({Col.USER: [f"u{i % 30}" for i in range(n)], Col.ITEM: chosen})


# --- tiny projects -----------------------------------------------------------------------------------

LYRICS_MARKER = "never-serve-these-lyrics"
TAG_VOCABULARY = ("rock", "pop", "indie", "jazz", "metal", "folk", "80s", "female vocalists")
PER_CLUSTER = 12
CLUSTERED_NAMES = [
    *(f"Rock Band {chr(65 + i)}" for i in range(PER_CLUSTER)),
    "Radiohead",
    "Rammstein",
    *(f"Pop Star {chr(65 + i)}" for i in range(PER_CLUSTER)),
]


class TinyCatalogue(Protocol):
    """A tiny data set: who listened to what, then the items table and their tags.

    Both draw from the project's one generator, in that order (the listens, then the project's listen
    counts, then the tables), so a seed gives the same project every time.
    """

    def listens(self, rng: np.random.Generator) -> np.ndarray:
        """Users x items, True where the user listened."""
        ...

    def tables(self, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The items table (id, name, genres, lyrics) and the item tags (item, tag, count)."""
        ...


@dataclass(frozen=True)
class RandomCatalogue:
    """Random listens (every user >= 5 artists), random tags, and lyrics that must never be served."""

    n_users: int = 20
    n_items: int = 15

    def listens(self, rng: np.random.Generator) -> np.ndarray:
        dense = rng.random((self.n_users, self.n_items)) < 0.35
        for user in range(self.n_users):
            dense[user, rng.choice(self.n_items, size=5, replace=False)] = True
        return dense

    def tables(self, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        item_ids = item_ids_of(self.n_items)
        items = pd.DataFrame(
            {
                Col.ITEM: item_ids,
                Col.NAME: [f"Artist {item}" for item in range(self.n_items)],
                Col.GENRES: ["pop|rock" if item % 2 else "jazz" for item in range(self.n_items)],
                Col.LYRICS: [f"{LYRICS_MARKER} {item}" for item in range(self.n_items)],
            }
        )
        tag_rows = [
            (item_id, tag, int(rng.integers(1, 9)))
            for item_id in item_ids
            for tag in rng.choice(TAG_VOCABULARY, size=4, replace=False)
        ]
        return items, pd.DataFrame(tag_rows, columns=[Col.ITEM, Col.TAG, Col.COUNT])


def is_rock(item: int) -> bool:
    """Whether item ``item`` of :class:`ClusteredCatalogue` is in the rock cluster."""
    return item < PER_CLUSTER + 2


@dataclass(frozen=True)
class ClusteredCatalogue:
    """Two taste clusters (rock/indie, pop/dance) and listeners who mostly stay in one, so
    recommendations, reasons and filters have predictable shapes; a clear most-popular artist."""

    n_users: int = 40

    def listens(self, rng: np.random.Generator) -> np.ndarray:
        n_items = len(CLUSTERED_NAMES)
        rock = np.array([is_rock(i) for i in range(n_items)])
        dense = np.zeros((self.n_users, n_items), dtype=bool)
        for user in range(self.n_users):
            home = rock if user % 2 == 0 else ~rock
            dense[user, rng.choice(np.flatnonzero(home), size=7, replace=False)] = True
            dense[user, rng.choice(np.flatnonzero(~home), size=1)] = True
        dense[:, 0] |= rng.random(self.n_users) < 0.6  # one clear most-popular artist
        return dense

    def tables(self, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        n_items = len(CLUSTERED_NAMES)
        item_ids = item_ids_of(n_items)
        genres = ["rock" if is_rock(i) else "pop" for i in range(n_items)]
        items = pd.DataFrame(
            {
                Col.ITEM: item_ids,
                Col.NAME: CLUSTERED_NAMES,
                Col.GENRES: genres,
                Col.LYRICS: ["never served"] * n_items,
            }
        )
        tag_rows = []
        for item, item_id in enumerate(item_ids):
            tags = ("rock", "indie", "alternative") if is_rock(item) else ("pop", "dance", "female vocalists")
            tag_rows += [(item_id, tag, 10 - rank) for rank, tag in enumerate(tags)]
        return items, pd.DataFrame(tag_rows, columns=[Col.ITEM, Col.TAG, Col.COUNT])


def item_ids_of(n_items: int) -> list[str]:
    """``a00``, ``a01``, ...: the item ids of the tiny catalogues."""
    return [f"a{item:02d}" for item in range(n_items)]


@dataclass(frozen=True)
class Project:
    """Folders and files of a tiny pipeline run (what the stages after ``prepare`` write)."""

    root: Path
    models: Path
    features: Path
    split: Path
    prepared: Path
    dvc_lock: Path
    params: dict[str, Any] = field(default_factory=dict)

    def save(self, ndcg: float, home: Path, bias_strength: float | None = None, **overrides: Any) -> str:
        """Save the hybrid as a candidate whose recorded ndcg@10 is ``ndcg`` (measured at ``bias_strength``,
        which it is then packaged with); returns its tag."""
        metrics: dict[str, Any] = {
            "metrics": {"ndcg@10": ndcg, "coverage@10": 0.5, "arp@10": 7.0, "n_users": 20},
            "groups": {"niche": {"ndcg@10": ndcg / 2, "n_users": 7}},
        }
        if bias_strength is not None:
            metrics["bias_strength"] = bias_strength
        arguments: dict[str, Any] = {
            "params_dict": {"seed": 0, "split": {"test_fraction": 0.2}, "evaluate": {"ks": (5, 10)}},
            "dvc_lock_hash": registry.dvc_lock_hash(self.dvc_lock),
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "prepared_dir": self.prepared,
            "top_tags": 2,
            "home": home,
        } | overrides
        models = arguments.pop("models_dir", self.models)
        return registry.save_candidate(models, self.features, self.split, metrics, **arguments)


def build_project(
    root: Path,
    seed: int = 0,
    catalogue: TinyCatalogue | None = None,
    hybrid: LightFMParams | None = None,
    split_params: SplitParams | None = None,
) -> Project:
    """Prepared tables, features, split, a trained hybrid and LightFM-CF, and a ``dvc.lock`` under ``root``.

    Defaults: :class:`RandomCatalogue`, a 4-component hybrid trained 3 epochs, the default split.
    """
    catalogue = catalogue if catalogue is not None else RandomCatalogue()
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(catalogue.listens(rng))
    weights = (1 + np.log1p(rng.integers(1, 500, size=len(users)))).astype(np.float32)
    catalogue_items, item_tags = catalogue.tables(rng)
    item_ids = catalogue_items[Col.ITEM].tolist()
    interactions = pd.DataFrame(
        {
            Col.USER: [f"u{user:02d}" for user in users],
            Col.ITEM: [item_ids[item] for item in items],
            Col.WEIGHT: weights,
        }
    )
    project = Project(
        root, root / "models", root / "features", root / "split", root / "prepared", root / "dvc.lock"
    )
    write_parquet(project.prepared / "items.parquet", catalogue_items)
    write_parquet(project.prepared / "item_tags.parquet", item_tags)
    feature_params = FeaturesParams.model_validate(
        {"tags": {"min_artists": 1}, "audio": {"enabled": False}, "lyrics": {"enabled": False}}
    )
    features = build_item_features(catalogue_items, item_tags, feature_params, seed=seed)
    save_item_features(features, project.features)
    split = make_split(interactions, split_params or SplitParams(), seed, item_ids)
    save_split(split, project.split)
    model = LightFMRecommender(hybrid or LightFMParams(no_components=4, epochs=3), seed=seed)
    model.fit(split.train_full, without_identity(features, split.cold_items).matrix)
    model.save(model_file(HYBRID, project.models))
    cf = LightFMRecommender(LightFMParams(no_components=4, epochs=1), seed=seed).fit(split.train_full)
    cf.save(model_file(CF, project.models))
    project.dvc_lock.write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    return project


# --- a raw folder like the real one -----------------------------------------------------------------

# Small enough to train in seconds, big enough for the split (>= 5 artists per user) and EASE.
TINY_OVERRIDES: dict[str, Any] = {
    "train.lightfm.no_components": 4,
    "train.lightfm.epochs": 3,
    "train.lightfm.eval_every": 1,
    "train.lightfm.patience": 1,
    "train.lightfm_cf.no_components": 4,
    "train.lightfm_cf.epochs": 3,
    "train.search.n_trials": 2,
    "train.search.space": {"no_components": [4, 8], "learning_rate": [0.05]},
    "train.ease.min_item_users": 1,
    "train.itemknn.neighbours": 10,
    "features.lyrics.max_features": 10,
    "features.lyrics.svd_components": 2,
    "features.tags.min_artists": 1,
    # The tiny flows test the hybrid champion's paths (songs and the large catalogue serve it); the ranker
    # champion, the artists' default, has tests of its own (test_training_flow, test_retraining_flow).
    "gate.challenger": HYBRID,
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


# --- DVC projects and the feedback loop's state -----------------------------------------------------


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


def make_tiny_project(root: Path, raw: Path | None = None) -> TinyProject:
    """Copy dvc.yaml, params.yaml and recsys/ into ``root``; git + DVC init; ingest copies the raw folder.

    The raw folder is ``root/raw`` (synthetic, written here unless ``raw`` is given), a dependency by
    relative path: a copy of the whole folder is a project of its own, as its tests may change it.
    """
    root.mkdir(parents=True, exist_ok=True)
    if raw is None:
        raw = write_synthetic_raw(root / "raw")
    pipeline = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    dependency = raw.relative_to(root) if raw.is_relative_to(root) else raw
    pipeline["stages"].pop("sources")  # the tiny ingest copies the raw folder, a dependency by path
    pipeline["stages"]["ingest"] = {
        "cmd": 'mkdir -p data/raw && cp -R "$RECSYS_DATA_DIR"/. data/raw/',
        "deps": [str(dependency)],
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


def force_feedback_gate(monkeypatch: pytest.MonkeyPatch, promote: bool) -> None:
    """Make the retraining flow's gate answer ``promote`` whatever the metrics of a tiny model say."""
    from recsys.offline import gate
    from recsys.offline.gate import GateDecision

    def decide(challenger: Any, champion: Any, params: Any, lead: Any = None) -> GateDecision:
        return GateDecision(promote, [f"test gate: promote={promote}"], {})

    monkeypatch.setattr(gate, "decide_feedback", decide)


def feedback_state(project: Path) -> dict[str, Any]:
    """What a retraining run may change: the cursor, the champion, the exported files' bytes, the models."""
    from recsys import registry
    from recsys.feedback.exports import CURSOR_FILE

    return {
        "cursor": (project / CURSOR_FILE).read_text(encoding="utf-8"),
        "champion": registry.champion(),
        "files": {p.name: p.read_bytes() for p in (project / "data" / "feedback").glob("events-*.parquet")},
        "models": len(registry.list_models()),
    }


def dvc_cached(project: Path, md5: str) -> bool:
    """Whether ``project``'s DVC cache holds the object of ``md5`` (DVC 3 layout)."""
    return (project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()


# --- the service on loopback -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``bentoml serve`` process and clients for it: ``client`` as the platform's backend (client
    token), ``anonymous`` as anyone else (the page, a stranger)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    home: Path
    client: httpx.Client
    anonymous: httpx.Client

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
        "RECSYS_CLIENT_TOKENS": CLIENT_TOKEN,
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
    client = httpx.Client(base_url=url, timeout=30.0, headers={"X-Client-Token": CLIENT_TOKEN})
    server = Server(url, process, log, home, client, httpx.Client(base_url=url, timeout=30.0))

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{server.output()}")
        try:
            return server.client.get(probe).status_code == 200
        except httpx.TransportError:
            return False

    if wait_for(ready, START_TIMEOUT_S, interval_s=0.3):
        return server
    stop_server(server)
    raise RuntimeError(f"the service did not become ready in {START_TIMEOUT_S:g} s:\n{server.output()}")


def stop_server(server: Server) -> None:
    """Stop the server's whole process group (the arbiter and its workers)."""
    from benchmarks.serve import stop

    server.client.close()
    server.anonymous.close()
    stop(server.process)
