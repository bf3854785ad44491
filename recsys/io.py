"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from recsys.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes owner-only files; outputs are ordinary files, readable like any other.
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def without_keys(value: Any, keys: frozenset[str]) -> Any:
    """``value`` with every mapping entry named in ``keys`` removed, at any depth (lists are walked).

    A DVC output keeps only what its inputs decide, so timings are left out of the files a stage writes
    and a rerun of the same commit writes the same bytes (and ``dvc.lock`` does not change).

    Examples
    --------
    >>> report = {"rows": 3, "seconds": 0.1, "files": [{"seconds": 0.2, "name": "a"}]}
    >>> without_keys(report, frozenset({"seconds"}))
    {'rows': 3, 'files': [{'name': 'a'}]}
    """
    if isinstance(value, dict):
        return {key: without_keys(item, keys) for key, item in value.items() if key not in keys}
    if isinstance(value, list | tuple):
        return [without_keys(item, keys) for item in value]
    return value


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as Parquet (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def read_json(
    path: Path, missing: str = "not found: run the pipeline first (`recsys run` or `dvc repro`)"
) -> Any:
    """An optional JSON object: ``None`` when the file is absent, :class:`DataError` when it is bad."""
    return require_json(path, missing) if path.exists() else None


def require_json(
    path: Path, missing: str = "not found: run the pipeline first (`recsys run` or `dvc repro`)"
) -> dict[str, Any]:
    """The JSON object in ``path`` (the project's one reader of its metrics and reports):
    :class:`DataError` naming the file when it is absent (``missing`` says why), not JSON or not an object."""
    if not path.exists():
        raise DataError(missing, file=str(path))
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(payload, dict):
        raise DataError("expected a JSON object", file=str(path))
    return payload
