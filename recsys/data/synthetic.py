"""The ``synthetic`` data set: listeners x artists shaped like Last.fm 2K, at any size, seeded.

For measuring the whole loop at sizes no public file has (``make bench-scale``): the ingest stage
generates an interactions file and an items file into ``data/raw/synthetic/``, and the prepare stage reads
them exactly as it reads a team's own files (:mod:`recsys.data.own_files`: same checks, same tables).

The shape, set in ``params.yaml`` (``dataset.synthetic``; :class:`recsys.config.SyntheticParams`):

- items fall in ``genres`` genres; item popularity is Zipf-like (weight ``1 / rank ** popularity_exponent``
  over a random ranking), as the long tail of Last.fm 2K;
- listener activity (distinct items) is lognormal with ``activity_sigma``, scaled to ``pairs`` in all and
  at least 5 items each;
- each listener favours two genres: a share ``taste`` of their listens comes from them, the rest from any
  genre by its popularity mass, so the data have structure a model can learn and features can explain;
- each item has ``tags_per_item`` tags, most from its genre's part of a ``tags``-word vocabulary, and audio
  features around its genre's centre; play counts are lognormal.

``size`` names a preset (S1, S10, S50, S200: :data:`SIZES`, the issue's scale ladder) instead of
``users``/``items``/``pairs``. The same parameters give the same files (one seeded generator).

Examples
--------
>>> from recsys.config import SyntheticParams
>>> tables = generate(SyntheticParams(users=50, items=40, pairs=600, genres=4, tags=40, tags_per_item=3))
>>> sorted(tables), tables["interactions"][["user", "item"]].duplicated().any()
(['interactions', 'items'], np.False_)
>>> int(tables["interactions"].groupby("user").size().min()) >= 5
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import AUDIO_FEATURES
from recsys.config import FilesParams, SyntheticParams
from recsys.io import write_parquet

FOLDER = "synthetic"
MIN_ITEMS_PER_USER = 5
FAVOURITE_GENRES = 2

SIZES: dict[str, tuple[int, int, int]] = {
    "S1": (2_000, 17_632, 93_000),
    "S10": (20_000, 60_000, 930_000),
    "S50": (100_000, 150_000, 4_600_000),
    "S200": (400_000, 300_000, 18_000_000),
}
"""Users, items and distinct user-item pairs of each named size (S1 is Last.fm 2K's shape)."""

# Each audio feature's range: the genre centres and the items' spread are drawn inside it.
_AUDIO_RANGES: dict[str, tuple[float, float]] = {
    "danceability": (0.0, 1.0),
    "energy": (0.0, 1.0),
    "loudness": (-30.0, 0.0),
    "speechiness": (0.0, 1.0),
    "acousticness": (0.0, 1.0),
    "instrumentalness": (0.0, 1.0),
    "liveness": (0.0, 1.0),
    "valence": (0.0, 1.0),
    "tempo": (60.0, 200.0),
    "duration_ms": (90_000.0, 420_000.0),
}


def shape(params: SyntheticParams) -> tuple[int, int, int]:
    """``(users, items, pairs)``: the named ``size`` if set, else the explicit counts."""
    return SIZES[params.size] if params.size else (params.users, params.items, params.pairs)


def files_spec() -> FilesParams:
    """How the prepare stage reads the generated files (the ``files`` adapter's mapping)."""
    return FilesParams(interactions="interactions.parquet", items="items.parquet", kind="artist")


def generate(params: SyntheticParams) -> dict[str, pd.DataFrame]:
    """The two tables: ``interactions`` (user, item, plays) and ``items`` (item, name, genre, tags, audio)."""
    n_users, n_items, n_pairs = shape(params)
    if n_items < MIN_ITEMS_PER_USER * 2:
        raise ValueError(
            f"dataset.synthetic: {n_items} items are too few (at least {MIN_ITEMS_PER_USER * 2})"
        )
    rng = np.random.default_rng(params.seed)
    genre = rng.integers(0, params.genres, size=n_items)
    weight = 1.0 / (rng.permutation(n_items) + 1.0) ** params.popularity_exponent
    items = _items(rng, params, genre)
    interactions = _interactions(rng, params, n_users, n_pairs, genre, weight)
    return {"interactions": interactions, "items": items}


def write(params: SyntheticParams, out_dir: Path) -> dict[str, Any]:
    """Generate both files into ``out_dir/synthetic`` (each written atomically); returns what was written."""
    tables = generate(params)
    folder = out_dir / FOLDER
    spec = files_spec()
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for kind, name in (("interactions", spec.interactions), ("items", spec.items)):
        write_parquet(folder / name, tables[kind])
        written.append({"name": name, "rows": len(tables[kind]), "size": (folder / name).stat().st_size})
    users, items, pairs = shape(params)
    return {
        "sources": [{"source": FOLDER, "path": str(folder), "files": written}],
        "files": len(written),
        "bytes": sum(entry["size"] for entry in written),
        "shape": {"users": users, "items": items, "pairs": pairs, "size": params.size or "custom"},
    }


def _interactions(
    rng: np.random.Generator,
    params: SyntheticParams,
    n_users: int,
    n_pairs: int,
    genre: np.ndarray,
    weight: np.ndarray,
) -> pd.DataFrame:
    n_items = len(genre)
    activity = rng.lognormal(0.0, params.activity_sigma, size=n_users)
    wanted = np.maximum(MIN_ITEMS_PER_USER, np.round(activity * n_pairs / activity.sum())).astype(np.int64)
    wanted = np.minimum(wanted, n_items // 2)
    # Items ordered by genre: a genre is one stretch of the cumulative popularity, so a draw inside a
    # genre is one searchsorted over all items.
    order = np.argsort(genre, kind="stable")
    cumulative = np.cumsum(weight[order])
    ends = np.searchsorted(genre[order], np.arange(params.genres), side="right")
    upper = np.where(ends > 0, cumulative[np.maximum(ends - 1, 0)], 0.0)
    lower = np.concatenate([[0.0], upper[:-1]])
    mass = upper - lower
    favourites = rng.integers(0, params.genres, size=(n_users, FAVOURITE_GENRES))
    users, items = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    missing = wanted
    for _ in range(8):  # redraw the duplicates' share until nearly every listener has their count
        draws = np.repeat(np.arange(n_users), missing)
        loyal = rng.random(draws.size) < params.taste
        chosen = np.where(
            loyal,
            favourites[draws, rng.integers(0, FAVOURITE_GENRES, size=draws.size)],
            np.searchsorted(np.cumsum(mass), rng.random(draws.size) * mass.sum(), side="right"),
        )
        chosen = np.minimum(chosen, params.genres - 1)
        position = lower[chosen] + rng.random(draws.size) * mass[chosen]
        picked = order[np.minimum(np.searchsorted(cumulative, position, side="right"), n_items - 1)]
        keys = np.sort(np.concatenate([users * n_items + items, draws * n_items + picked]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        users, items = keys // n_items, keys % n_items
        missing = np.maximum(wanted - np.bincount(users, minlength=n_users), 0)
        # Heavy listeners of small genres may never reach their count; a 0.1 % shortfall is the shape.
        if missing.sum() <= wanted.sum() // 1000 and not (missing > wanted - MIN_ITEMS_PER_USER).any():
            break
    plays = np.maximum(1, np.round(rng.lognormal(3.0, 1.5, size=users.size))).astype(np.int64)
    return pd.DataFrame(
        {"user": _ids("u", users, n_users), "item": _ids("i", items, n_items), "plays": plays}
    )


def _items(rng: np.random.Generator, params: SyntheticParams, genre: np.ndarray) -> pd.DataFrame:
    n_items = len(genre)
    ids = _ids("i", np.arange(n_items), n_items)
    per_genre = max(1, params.tags // params.genres)
    # Four in five tags from the item's genre's words, the rest from anywhere in the vocabulary.
    own = genre[:, None] * per_genre + rng.integers(0, per_genre, size=(n_items, params.tags_per_item))
    anywhere = rng.integers(0, params.tags, size=(n_items, params.tags_per_item))
    words = np.where(rng.random((n_items, params.tags_per_item)) < 0.8, own, anywhere) % params.tags
    tags = ["|".join(f"tag{word:05d}" for word in sorted(set(row))) for row in words.tolist()]
    frame = pd.DataFrame(
        {
            "item": ids,
            "name": [f"Synthetic artist {index}" for index in range(n_items)],
            "genre": [f"genre{g:02d}" for g in genre.tolist()],
            "tags": tags,
        }
    )
    if params.audio:
        for name in AUDIO_FEATURES:
            low, high = _AUDIO_RANGES[name]
            centre = rng.uniform(0.2, 0.8, size=params.genres)[genre]
            value = np.clip(centre + rng.normal(0.0, 0.1, size=n_items), 0.0, 1.0)
            frame[name] = low + value * (high - low)
    return frame


def _ids(prefix: str, indices: np.ndarray, count: int) -> np.ndarray:
    width = len(str(max(count - 1, 0)))
    return np.char.add(prefix, np.char.zfill(indices.astype(str), width)).astype(object)
