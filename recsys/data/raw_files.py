"""A raw file's checks and landing: sha256 and data rows against the registry, staged then swapped in whole.

:func:`verify_file` checks a staged file against its :class:`recsys.data.sources.SourceFile`;
:func:`staged_folder` lets a source land whole or not at all (an earlier good copy survives a failure).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys.data.sources import FileFormat, SourceFile
from recsys.errors import DataError
from recsys.io import atomic_path

Verify = Literal["sha256", "rows"]
Origin = Literal["local", "download"]
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileReport:
    """What was ingested for one file: size, checksum, data rows, origin and time taken."""

    name: str
    size: int
    sha256: str
    rows: int | None
    origin: Origin
    seconds: float


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
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
        while chunk := handle.read(CHUNK):
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


def verify_file(
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
def staged_folder(final: Path) -> Iterator[Path]:
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
def staged_file(staging: Path, name: str) -> Iterator[Path]:
    """atomic_path into the staging folder, leaving files world-readable like a plain copy."""
    with atomic_path(staging / name) as tmp:
        yield tmp
        tmp.chmod(0o644)


def land_file(
    spec: SourceFile,
    staging: Path,
    write: Callable[[Path], object],
    verify: Verify,
    *,
    origin: Origin,
    where: str,
) -> FileReport:
    """Write ``spec``'s file into ``staging`` with ``write(path)``, then verify it (:func:`verify_file`).

    A file that fails verification is not left in the staging folder; the :class:`DataError` says where.
    """
    start = time.perf_counter()
    with staged_file(staging, spec.name) as tmp:
        write(tmp)
        return verify_file(spec, tmp, verify, origin=origin, where=where, start=start)
