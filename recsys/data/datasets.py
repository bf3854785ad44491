"""The data-set adapters: how each data set of :data:`recsys.specs.DATASETS` is ingested, fingerprinted and
turned into the canonical prepared tables (the table names these functions).

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

from pathlib import Path
from typing import Any

from recsys.config import Params
from recsys.data.prepare import Prepared
from recsys.specs import DatasetSpec, dataset_spec, resolve


def dataset_of(params: Params) -> DatasetSpec:
    """The data set ``params.dataset.name`` selects."""
    return dataset_spec(params.dataset.name)


def source_names(params: Params) -> list[str]:
    """The sources ingest reads: the configured ones, then any others the data set needs."""
    needed = dataset_of(params).sources
    return [*params.ingest.sources, *(s for s in needed if s not in params.ingest.sources)]


def ingest(params: Params, out_dir: Path, local_dir: Path | None) -> dict[str, Any]:
    """The chosen data set's raw files into ``out_dir``, verified; what was copied."""
    summary: dict[str, Any] = resolve(dataset_of(params).ingest)(params, out_dir, local_dir)
    return summary


def prepare(raw_dir: Path, params: Params) -> Prepared:
    """The chosen data set's canonical tables from its raw files in ``raw_dir``."""
    prepared: Prepared = resolve(dataset_of(params).prepare)(raw_dir, params)
    return prepared


def ingest_sources(params: Params, out_dir: Path, local_dir: Path | None) -> dict[str, Any]:
    """The raw sources (a local copy or a download), each verified against its checksums."""
    from recsys.data.ingest import ingest_all, summarize

    reports = ingest_all(
        source_names(params),
        out_dir,
        local_dir,
        retries=params.ingest.download_retries,
        timeout_s=params.ingest.download_timeout_s,
    )
    return summarize(reports)


def ingest_files(params: Params, out_dir: Path, local_dir: Path | None) -> dict[str, Any]:
    """A team's two configured files, copied."""
    from recsys.data.own_files import ingest_files as copy_files

    return copy_files(params.dataset.files, out_dir)


def ingest_synthetic(params: Params, out_dir: Path, local_dir: Path | None) -> dict[str, Any]:
    """Generated listeners x artists of ``dataset.synthetic``'s size."""
    from recsys.data.synthetic import write

    return write(params.dataset.synthetic, out_dir)


def prepare_lastfm(raw_dir: Path, params: Params) -> Prepared:
    """Last.fm 2K listeners x artists with Spotify audio and Genius lyrics joined per artist."""
    from recsys.data.prepare import prepare as prepare_artists

    return prepare_artists(raw_dir, params.prepare)


def prepare_songs(raw_dir: Path, params: Params) -> Prepared:
    """Spotify tracks as items, the playlists holding them as listeners."""
    from recsys.data.songs import prepare_songs as prepare_tracks

    return prepare_tracks(raw_dir, params)


def prepare_files(raw_dir: Path, params: Params) -> Prepared:
    """A team's own files, checked row by row."""
    from recsys.data.own_files import prepare_files as prepare_own

    return prepare_own(raw_dir, params)


def prepare_synthetic(raw_dir: Path, params: Params) -> Prepared:
    """The generated files, through the ``files`` adapter's checks."""
    from recsys.data.own_files import prepare_own_files
    from recsys.data.synthetic import FOLDER, files_spec

    return prepare_own_files(raw_dir / FOLDER, files_spec(), params, "synthetic")
