"""Downloads of the raw data sets: canonical URLs (or a mirror), retries with backoff, zip archives.

Each downloaded file is verified (:func:`recsys.data.raw_files.verify_file`) into the source's staging folder.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from recsys.data.raw_files import CHUNK, FileReport, Verify, land_file
from recsys.data.sources import Source, SourceFile
from recsys.errors import DataError

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
USER_AGENT = "recsys-ingest/0.1"


class FetchFailed(Exception):
    """A download gave up after ``attempts`` requests."""

    def __init__(self, url: str, reason: str, *, attempts: int) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.attempts = url, reason, attempts


class _Transient(Exception):
    """A server answer worth retrying (5xx, 429)."""


class _Permanent(Exception):
    """A server answer that retrying cannot change (404 and other 4xx)."""


def resolve_url(url: str, base_url: str | None) -> str:
    """Replace the scheme and host of ``url`` by those of ``base_url`` (a mirror), keeping the path.

    A path in ``base_url`` is prefixed to the original path.
    """
    if not base_url:
        return url
    base, original = urlsplit(base_url), urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + original.path, original.query, ""))


def file_url(source: Source, spec: SourceFile, base_url: str | None = None) -> str:
    """Where a plain source's file is downloaded from: beside the source's main URL."""
    return resolve_url(urljoin(source.url, spec.name), base_url)


def _fetch(client: httpx.Client, url: str, target: Path, *, retries: int, backoff_s: float) -> int:
    """Stream ``url`` into ``target``; retry transient failures with exponential backoff.

    Returns the number of attempts made; raises FetchFailed when giving up.
    """
    reason = "no attempt made"
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(client, url, target)
            return attempt
        except _Permanent as exc:
            raise FetchFailed(url, f"{exc}, not retried", attempts=attempt) from None
        except _Transient as exc:
            reason = str(exc)
        except (httpx.TransportError, httpx.TooManyRedirects) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            delay = min(backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            log.warning(
                "GET %s: %s; retrying in %.2f s (attempt %d/%d)", url, reason, delay, attempt, retries
            )
            time.sleep(delay)
    raise FetchFailed(url, f"{reason}; gave up after {retries} attempt(s)", attempts=retries)


def _fetch_once(client: httpx.Client, url: str, target: Path) -> None:
    with client.stream("GET", url) as response:
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Transient(f"HTTP {status} {response.reason_phrase}")
        if status >= 400:
            raise _Permanent(f"HTTP {status} {response.reason_phrase}")
        with open(target, "wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)


@dataclass
class Download:
    """Shared state of one source's download: where from, how hard to try, and what happened."""

    source: Source
    client: httpx.Client
    staging: Path
    verify: Verify
    retries: int
    backoff_s: float
    attempts: int = 0

    def fetch(self, url: str, target: Path) -> None:
        try:
            self.attempts += _fetch(self.client, url, target, retries=self.retries, backoff_s=self.backoff_s)
        except FetchFailed as exc:
            self.attempts += exc.attempts
            raise

    def where(self, spec: SourceFile) -> str:
        return f"{self.source.folder}/{spec.name}"


def download_plain(job: Download, base_url: str | None) -> tuple[list[FileReport], dict[str, str]]:
    reports: list[FileReport] = []
    skipped: dict[str, str] = {}
    for spec in job.source.files:
        if not spec.remote:
            skipped[spec.name] = "not published at the source"
            continue
        url = file_url(job.source, spec, base_url)
        try:
            fetch = functools.partial(job.fetch, url)
            report = land_file(spec, job.staging, fetch, job.verify, origin="download", where=job.where(spec))
        except (FetchFailed, DataError) as exc:
            if spec.required:
                raise
            skipped[spec.name] = f"{url}: {exc}"
            log.warning("%s: skipped optional %s: %s", job.source.name, spec.name, exc)
            continue
        reports.append(report)
    return reports, skipped


def download_zip(job: Download, url: str) -> tuple[list[FileReport], dict[str, str]]:
    archive = job.staging / ".archive.zip"
    job.fetch(url, archive)
    try:
        with zipfile.ZipFile(archive) as bundle:
            return _extract(job, bundle, url)
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a valid zip archive ({exc})", file=url) from exc
    finally:
        archive.unlink(missing_ok=True)


def _find_members(names: Iterable[str]) -> dict[str, str]:
    """Map basenames to archive members, preferring the shallowest; skips folders and macOS metadata."""
    found: dict[str, str] = {}
    for member in sorted(names, key=lambda name: (name.count("/"), name)):
        path = PurePosixPath(member)
        if member.endswith("/") or "__MACOSX" in path.parts:
            continue
        found.setdefault(path.name, member)
    return found


def _extract(job: Download, bundle: zipfile.ZipFile, url: str) -> tuple[list[FileReport], dict[str, str]]:
    members = _find_members(bundle.namelist())
    missing = [spec.name for spec in job.source.required_files if spec.name not in members]
    if missing:
        raise DataError(f"archive lacks required file(s) {', '.join(missing)}", file=url)
    reports: list[FileReport] = []
    skipped: dict[str, str] = {}
    for spec in job.source.files:
        if spec.name not in members:
            skipped[spec.name] = "not in the archive"
            continue
        extract = functools.partial(_copy_member, bundle, members[spec.name])
        try:
            report = land_file(
                spec, job.staging, extract, job.verify, origin="download", where=job.where(spec)
            )
        except DataError as exc:
            if spec.required:
                raise
            skipped[spec.name] = str(exc)
            continue
        reports.append(report)
    return reports, skipped


def _copy_member(bundle: zipfile.ZipFile, member: str, target: Path) -> None:
    with bundle.open(member) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
