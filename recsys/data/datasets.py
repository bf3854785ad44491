"""The data-set adapters: each turns its own raw files into the canonical prepared tables.

Chosen by ``dataset.name`` in ``params.yaml``; everything after the ``prepare`` stage reads only the
canonical tables (``docs/architecture.md``, "The data-set contract") and never asks which data set they
came from.

``lastfm-artists``
    Last.fm 2K listeners x artists, with Spotify audio profiles and Genius lyrics joined per artist.
``spotify-songs``
    Spotify tracks as items, the playlists holding them as listeners (:mod:`recsys.data.songs`).
``files``
    A team's own interactions and items files (:mod:`recsys.data.own_files`).
``synthetic``
    Generated listeners x artists of any size, shaped like Last.fm 2K (:mod:`recsys.data.synthetic`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recsys.config import Params
from recsys.data.prepare import Prepared


@dataclass(frozen=True)
class Dataset:
    """An adapter: the raw sources its ingest copies and how its ``prepare`` builds the tables."""

    name: str
    kind: str
    sources: tuple[str, ...]
    prepare: Callable[[Path, Params], Prepared]


def _lastfm(raw_dir: Path, params: Params) -> Prepared:
    from recsys.data.prepare import prepare

    return prepare(raw_dir, params.prepare)


def _songs(raw_dir: Path, params: Params) -> Prepared:
    from recsys.data.songs import prepare_songs

    return prepare_songs(raw_dir, params)


def _files(raw_dir: Path, params: Params) -> Prepared:
    from recsys.data.own_files import prepare_files

    return prepare_files(raw_dir, params)


def _synthetic(raw_dir: Path, params: Params) -> Prepared:
    from recsys.data.own_files import prepare_own_files
    from recsys.data.synthetic import FOLDER, files_spec

    return prepare_own_files(raw_dir / FOLDER, files_spec(), params, "synthetic")


DATASETS: dict[str, Dataset] = {
    "lastfm-artists": Dataset("lastfm-artists", "artist", ("lastfm", "spotify", "lyrics"), _lastfm),
    "spotify-songs": Dataset("spotify-songs", "track", ("spotify", "lyrics"), _songs),
    "files": Dataset("files", "track", (), _files),
    "synthetic": Dataset("synthetic", "artist", (), _synthetic),
}
"""Every adapter by its ``dataset.name``."""


def dataset_of(params: Params) -> Dataset:
    """The adapter ``params.dataset.name`` selects."""
    return DATASETS[params.dataset.name]


def source_names(params: Params) -> list[str]:
    """The sources ingest reads: the configured ones, then any others the data set needs."""
    needed = dataset_of(params).sources
    return [*params.ingest.sources, *(s for s in needed if s not in params.ingest.sources)]
