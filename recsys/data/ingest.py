"""Ingest: every configured source from a local copy or a verified download, landing whole or not at all.

Every source (:data:`recsys.data.sources.SOURCES`) lands in ``dest/<folder>/`` laid out exactly like the
canonical local folder (the one ``RECSYS_DATA_DIR`` points at), or not at all: files are staged in a
hidden sibling folder, verified, and the folder is renamed into place only when every required file
passed. An earlier good copy survives any failure.

Examples
--------
>>> resolve_url("https://example.org/a/b.zip", "http://127.0.0.1:8000/mirror")
'http://127.0.0.1:8000/mirror/a/b.zip'
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from recsys.config import DATA_DIR_ENV
from recsys.data.download import USER_AGENT, Download, FetchFailed, download_plain, download_zip, resolve_url
from recsys.data.raw_files import FileReport, Origin, Verify, land_file, staged_folder
from recsys.data.sources import SOURCES, Source
from recsys.errors import ConfigError, DataError, SourceUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    """The outcome of ingesting one source into ``path``.

    ``location`` is the local folder or the URL read; ``attempts`` counts HTTP requests (0 for a local
    copy); ``skipped`` pairs each optional file left out with the reason.
    """

    source: str
    folder: str
    path: str
    origin: Origin
    location: str
    files: tuple[FileReport, ...]
    skipped: tuple[tuple[str, str], ...]
    attempts: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view of the report."""
        return {
            "source": self.source,
            "folder": self.folder,
            "path": self.path,
            "origin": self.origin,
            "location": self.location,
            "files": [{**vars(report), "seconds": round(report.seconds, 4)} for report in self.files],
            "skipped": dict(self.skipped),
            "attempts": self.attempts,
            "bytes": sum(report.size for report in self.files),
            "seconds": round(self.seconds, 3),
        }


def _unavailable(source: Source, url: str, reason: str, local_dir: Path | None) -> SourceUnavailableError:
    where = (
        f"there is no folder {local_dir / source.folder}"
        if local_dir is not None
        else f"{DATA_DIR_ENV} is not set"
    )
    names = ", ".join(spec.name for spec in source.required_files)
    return SourceUnavailableError(
        f"data source {source.name!r} is unavailable: downloading {url} failed ({reason}), and there is no "
        f"local copy ({where}). To use a local copy, set {DATA_DIR_ENV} to a folder holding "
        f"{source.folder}/ with {names} (e.g. export {DATA_DIR_ENV}=/path/to/data where "
        f"/path/to/data/{source.folder}/{source.required_files[0].name} exists)."
    )


def _copy_local(
    source: Source, src: Path, staging: Path, verify: Verify
) -> tuple[list[FileReport], dict[str, str]]:
    missing = [spec.name for spec in source.required_files if not (src / spec.name).is_file()]
    if missing:
        raise DataError(f"local copy lacks required file(s) {', '.join(missing)}", file=str(src))
    reports: list[FileReport] = []
    skipped: dict[str, str] = {}
    for spec in source.files:
        if not (src / spec.name).is_file():
            skipped[spec.name] = "not in the local folder"
            continue
        path = src / spec.name
        try:
            copy = functools.partial(shutil.copyfile, path)
            report = land_file(spec, staging, copy, verify, origin="local", where=str(path))
        except DataError as exc:
            if spec.required:
                raise
            skipped[spec.name] = str(exc)
            continue
        reports.append(report)
    return reports, skipped


def ingest_source(
    source: Source,
    dest: Path,
    local_dir: Path | None,
    *,
    base_url: str | None = None,
    retries: int = 3,
    timeout_s: float = 60,
    verify: Verify = "sha256",
    backoff_s: float = 1.0,
) -> IngestReport:
    """Copy ``source`` from ``local_dir`` or download it, verify it, and place it at ``dest/<folder>``.

    Parameters
    ----------
    source : Source
        What to ingest (usually ``SOURCES[name]``).
    dest : Path
        Parent folder of the result; ``dest/<folder>`` is replaced only when every required file passed.
    local_dir : Path or None
        A folder that may hold ``<folder>/<files>`` (``RECSYS_DATA_DIR``); used instead of the network
        when it has the source's folder.
    base_url : str, optional
        Replaces the scheme and host of the canonical URLs (a mirror, or a loopback server in tests).
    retries : int
        Attempts per download, the first included; connection errors, timeouts, 5xx and 429 are retried,
        other HTTP errors are not.
    timeout_s : float
        Connect/read timeout of each request.
    verify : {"sha256", "rows"}
        ``"rows"`` accepts files whose checksum differs but whose data-row count is official (for
        re-exported copies).
    backoff_s : float
        Delay before the second attempt; it doubles with every further attempt.

    Returns
    -------
    IngestReport

    Raises
    ------
    DataError
        A file failed verification, or a local folder or archive lacks a required file.
    SourceUnavailableError
        There is no local copy and the download failed; the message says how to point at a local copy.
    """
    if retries < 1:
        raise ValueError(f"retries must be at least 1, got {retries}")
    start, final = time.perf_counter(), dest / source.folder
    src = local_dir / source.folder if local_dir is not None else None
    origin: Origin = "local" if src is not None and src.is_dir() else "download"
    location = str(src) if origin == "local" else resolve_url(source.url, base_url)
    with staged_folder(final) as staging:
        if src is not None and origin == "local":
            reports, skipped = _copy_local(source, src, staging, verify)
            attempts = 0
        else:
            client = httpx.Client(
                timeout=timeout_s, follow_redirects=True, headers={"User-Agent": USER_AGENT}
            )
            with client:
                job = Download(source, client, staging, verify, retries, backoff_s)
                reports, skipped = _download(job, location, base_url, local_dir)
            attempts = job.attempts
    seconds = time.perf_counter() - start
    log.info("%s: %s %d file(s) into %s in %.2f s", source.name, origin, len(reports), final, seconds)
    return IngestReport(
        source.name, source.folder, str(final), origin, location,
        tuple(reports), tuple(sorted(skipped.items())), attempts, seconds,
    )  # fmt: skip


def _download(
    job: Download, url: str, base_url: str | None, local_dir: Path | None
) -> tuple[list[FileReport], dict[str, str]]:
    try:
        if job.source.archive == "zip":
            return download_zip(job, url)
        return download_plain(job, base_url)
    except FetchFailed as exc:
        raise _unavailable(job.source, exc.url, exc.reason, local_dir) from None


def ingest_all(
    names: Iterable[str],
    dest: Path,
    local_dir: Path | None,
    *,
    registry: Mapping[str, Source] = SOURCES,
    **options: Any,
) -> list[IngestReport]:
    """Ingest several sources by name, in order; ``options`` are passed to :func:`ingest_source`.

    Unknown names raise ConfigError before anything is read or downloaded.
    """
    names = list(names)
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ConfigError(f"unknown data source(s) {unknown}; known: {sorted(registry)}")
    return [ingest_source(registry[name], dest, local_dir, **options) for name in names]


def summarize(reports: Iterable[IngestReport]) -> dict[str, Any]:
    """A JSON-able summary of several ingests: per source, plus totals of bytes, files and seconds."""
    items = [report.to_dict() for report in reports]
    return {
        "sources": items,
        "files": sum(len(item["files"]) for item in items),
        "bytes": sum(item["bytes"] for item in items),
        "seconds": round(sum(item["seconds"] for item in items), 3),
    }
