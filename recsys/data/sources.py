"""Raw data sources: a declarative registry, and ingest from a local copy or a verified download.

Every source lands in ``dest/<folder>/`` laid out exactly like the canonical local folder (the one
``RECSYS_DATA_DIR`` points at), or not at all: files are staged in a hidden sibling folder, verified,
and the folder is renamed into place only when every required file passed. An earlier good copy
survives any failure.

Examples
--------
>>> SOURCES["lastfm"].folder
'hetrec2011-lastfm-2k'
>>> [spec.name for spec in SOURCES["spotify"].required_files]
['spotify_songs.csv']
>>> resolve_url("https://example.org/a/b.zip", "http://127.0.0.1:8000/mirror")
'http://127.0.0.1:8000/mirror/a/b.zip'
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from recsys.config import DATA_DIR_ENV
from recsys.errors import ConfigError, DataError, SourceUnavailableError
from recsys.io import atomic_path

log = logging.getLogger(__name__)

Verify = Literal["sha256", "rows"]
Origin = Literal["local", "download"]
FileFormat = Literal["lines", "csv", "parquet", "text"]

_CHUNK = 1 << 20
_MAX_BACKOFF_S = 30.0
_USER_AGENT = "recsys-ingest/0.1"


@dataclass(frozen=True)
class SourceFile:
    """One expected file of a source.

    Parameters
    ----------
    name : str
        File name inside the source folder (and the basename of the archive member).
    sha256 : str
        SHA-256 of the official file.
    rows : int or None
        Official number of data rows (header excluded); None for documentation files.
    fmt : {"lines", "csv", "parquet", "text"}
        How rows are counted: one per line, one per (possibly multi-line) CSV record, Parquet metadata,
        or not at all.
    required : bool
        Whether the pipeline needs the file; optional files are skipped (and reported) when absent
        or when they fail verification.
    remote : bool
        Whether the canonical source carries the file; local-only files are never downloaded.
    """

    name: str
    sha256: str
    rows: int | None = None
    fmt: FileFormat = "text"
    required: bool = True
    remote: bool = True


@dataclass(frozen=True)
class Source:
    """A data set: its folder name, canonical URL, archive kind and expected files.

    For ``archive="zip"`` the URL is the archive; for ``"plain"`` it is the main file's URL and the
    other files are fetched from the same directory.
    """

    name: str
    folder: str
    url: str
    archive: Literal["zip", "plain"]
    files: tuple[SourceFile, ...]

    @property
    def required_files(self) -> tuple[SourceFile, ...]:
        """The files the pipeline cannot do without."""
        return tuple(spec for spec in self.files if spec.required)


SOURCES: dict[str, Source] = {
    "lastfm": Source(
        name="lastfm",
        folder="hetrec2011-lastfm-2k",
        url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        archive="zip",
        files=(
            SourceFile(
                "user_artists.dat",
                "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
                92_834,
                "lines",
            ),
            SourceFile(
                "artists.dat",
                "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
                17_632,
                "lines",
            ),
            SourceFile(
                "tags.dat",
                "e95175f259be4c0c47644ae23d66131cd6d5767142a1405000e79f5584691d70",
                11_946,
                "lines",
            ),
            SourceFile(
                "user_taggedartists.dat",
                "d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7",
                186_479,
                "lines",
            ),
            SourceFile(
                "user_friends.dat",
                "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7",
                25_434,
                "lines",
            ),
            SourceFile(
                "readme.txt",
                "44c38757b3a24e68e844ac60c97ba7fd8e0f691cf1b00e9cf6bd8854df0dd64a",
                required=False,
            ),
        ),
    ),
    "spotify": Source(
        name="spotify",
        folder="spotify-songs-tidytuesday-2020-01-21",
        url="https://raw.githubusercontent.com/rfordatascience/tidytuesday/master/data/2020/2020-01-21/spotify_songs.csv",
        archive="plain",
        files=(
            SourceFile(
                "spotify_songs.csv",
                "9902920cfe4940f0914ebb6716801a42f7f19ac88fbd6693eaae7e2822b16845",
                32_833,
                "csv",
            ),
            SourceFile(
                "readme.md",
                "807a0b766ecd7f674d8987a728534e98a3b5e938a9b033e5a6cde5f8265112b5",
                required=False,
            ),
        ),
    ),
    "lyrics": Source(
        name="lyrics",
        folder="poplyrics-1k",
        url="https://raw.githubusercontent.com/ashuwhy/poplyrics-1k/main/poplyric-1k.parquet",
        archive="plain",
        files=(
            SourceFile(
                "poplyric-1k.parquet",
                "a265122acc81f59d165cc3fc4d9c9aa6f8423ffa05fe347700f20fb79e018e09",
                1_000,
                "parquet",
            ),
            # A CSV export of the parquet that local folders may carry; the repository has no such file.
            SourceFile(
                "poplyrics-1k.csv",
                "cdf8923247e46921d3521a7e52118ca99bd4ec7070af6e32d83114887c12f0b7",
                1_000,
                "csv",
                required=False,
                remote=False,
            ),
        ),
    ),
}
"""The three raw data sets, by name."""


@dataclass(frozen=True)
class FileReport:
    """What was ingested for one file: size, checksum, data rows, origin and time taken."""

    name: str
    size: int
    sha256: str
    rows: int | None
    origin: Origin
    seconds: float


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


class _FetchFailed(Exception):
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


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def count_rows(path: Path, fmt: FileFormat) -> int | None:
    """Data rows of a file (header excluded), or None for ``fmt="text"``.

    Raises ValueError, OSError or csv.Error when the file cannot be parsed.
    """
    if fmt == "lines":
        return _count_lines(path) - 1
    if fmt == "csv":
        # latin-1 decodes any byte; the delimiters and quotes that define records are ASCII either way.
        with open(path, encoding="latin-1", newline="") as handle:
            return sum(1 for record in csv.reader(handle) if record) - 1
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    return None


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def _rows_or_none(path: Path, fmt: FileFormat) -> int | None:
    with contextlib.suppress(ValueError, OSError, csv.Error):
        return count_rows(path, fmt)
    return None


def _describe_rows(rows: int | None, spec: SourceFile) -> str:
    if spec.rows is None:
        return ""
    found = "unreadable" if rows is None else f"{rows:,}"
    return f"data rows {found} (official {spec.rows:,})"


def _verify(
    spec: SourceFile, path: Path, verify: Verify, *, origin: Origin, where: str, start: float
) -> FileReport:
    """Check a staged file against its spec; raise DataError naming ``where`` when it differs.

    ``start`` is when work on the file began, so the report's seconds cover fetching and checking.
    """
    sha, rows = sha256_of(path), _rows_or_none(path, spec.fmt)
    rows_ok = spec.rows is None or rows == spec.rows
    if verify == "sha256" and sha != spec.sha256:
        raise DataError(_sha_mismatch(spec, sha, rows, rows_ok, origin), file=where)
    if verify == "rows" and not rows_ok:
        raise DataError(
            f"wrong row count: {_describe_rows(rows, spec)}; replace it with the official file", file=where
        )
    size = path.stat().st_size
    return FileReport(spec.name, size, sha, rows, origin, time.perf_counter() - start)


def _sha_mismatch(spec: SourceFile, sha: str, rows: int | None, rows_ok: bool, origin: Origin) -> str:
    head = f"checksum mismatch: expected sha256 {spec.sha256}, got {sha}"
    counts = _describe_rows(rows, spec)
    if origin == "download":
        return f"{head}{'; ' + counts if counts else ''}. The download was discarded."
    if spec.rows is not None and rows_ok:
        return (
            f"{head}; the {counts} match, so this local copy is probably a re-export (line endings, "
            "encoding or quoting). Use the official file, or pass verify='rows' to accept it."
        )
    if counts:
        return f"{head}; {counts}: this local copy is incomplete or another version. Use the official file."
    return f"{head}: this local copy differs from the official file. Use the official file."


@contextlib.contextmanager
def _staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``final``; on success it replaces ``final``, else it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the result should read like any data folder
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}") if final.exists() else None
    if old is not None:
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _staged_file(staging: Path, name: str) -> Iterator[Path]:
    """atomic_path into the staging folder, leaving files world-readable like a plain copy."""
    with atomic_path(staging / name) as tmp:
        yield tmp
        tmp.chmod(0o644)


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


def _fetch(client: httpx.Client, url: str, target: Path, *, retries: int, backoff_s: float) -> int:
    """Stream ``url`` into ``target``; retry transient failures with exponential backoff.

    Returns the number of attempts made; raises _FetchFailed when giving up.
    """
    reason = "no attempt made"
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(client, url, target)
            return attempt
        except _Permanent as exc:
            raise _FetchFailed(url, f"{exc}, not retried", attempts=attempt) from None
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
    raise _FetchFailed(url, f"{reason}; gave up after {retries} attempt(s)", attempts=retries)


def _fetch_once(client: httpx.Client, url: str, target: Path) -> None:
    with client.stream("GET", url) as response:
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Transient(f"HTTP {status} {response.reason_phrase}")
        if status >= 400:
            raise _Permanent(f"HTTP {status} {response.reason_phrase}")
        with open(target, "wb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)


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
        start = time.perf_counter()
        try:
            with _staged_file(staging, spec.name) as tmp:
                shutil.copyfile(src / spec.name, tmp)
                report = _verify(spec, tmp, verify, origin="local", where=str(src / spec.name), start=start)
        except DataError as exc:
            if spec.required:
                raise
            skipped[spec.name] = str(exc)
            continue
        reports.append(report)
    return reports, skipped


@dataclass
class _Download:
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
        except _FetchFailed as exc:
            self.attempts += exc.attempts
            raise

    def where(self, spec: SourceFile) -> str:
        return f"{self.source.folder}/{spec.name}"


def _download_plain(job: _Download, base_url: str | None) -> tuple[list[FileReport], dict[str, str]]:
    reports: list[FileReport] = []
    skipped: dict[str, str] = {}
    for spec in job.source.files:
        if not spec.remote:
            skipped[spec.name] = "not published at the source"
            continue
        url, start = file_url(job.source, spec, base_url), time.perf_counter()
        try:
            with _staged_file(job.staging, spec.name) as tmp:
                job.fetch(url, tmp)
                report = _verify(spec, tmp, job.verify, origin="download", where=job.where(spec), start=start)
        except (_FetchFailed, DataError) as exc:
            if spec.required:
                raise
            skipped[spec.name] = f"{url}: {exc}"
            log.warning("%s: skipped optional %s: %s", job.source.name, spec.name, exc)
            continue
        reports.append(report)
    return reports, skipped


def _download_zip(job: _Download, url: str) -> tuple[list[FileReport], dict[str, str]]:
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


def _extract(job: _Download, bundle: zipfile.ZipFile, url: str) -> tuple[list[FileReport], dict[str, str]]:
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
        start = time.perf_counter()
        try:
            with _staged_file(job.staging, spec.name) as tmp:
                with bundle.open(members[spec.name]) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                report = _verify(spec, tmp, job.verify, origin="download", where=job.where(spec), start=start)
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
    with _staged_folder(final) as staging:
        if src is not None and origin == "local":
            reports, skipped = _copy_local(source, src, staging, verify)
            attempts = 0
        else:
            client = httpx.Client(
                timeout=timeout_s, follow_redirects=True, headers={"User-Agent": _USER_AGENT}
            )
            with client:
                job = _Download(source, client, staging, verify, retries, backoff_s)
                reports, skipped = _download(job, location, base_url, local_dir)
            attempts = job.attempts
    seconds = time.perf_counter() - start
    log.info("%s: %s %d file(s) into %s in %.2f s", source.name, origin, len(reports), final, seconds)
    return IngestReport(
        source.name, source.folder, str(final), origin, location,
        tuple(reports), tuple(sorted(skipped.items())), attempts, seconds,
    )  # fmt: skip


def _download(
    job: _Download, url: str, base_url: str | None, local_dir: Path | None
) -> tuple[list[FileReport], dict[str, str]]:
    try:
        if job.source.archive == "zip":
            return _download_zip(job, url)
        return _download_plain(job, base_url)
    except _FetchFailed as exc:
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
