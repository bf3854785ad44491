"""What the ingest stage will read, by content: the ``sources`` stage writes it so DVC knows when to ingest.

A team's files are named in ``params.yaml`` and the local copy of a source sits wherever
``RECSYS_DATA_DIR`` points: neither can be a dependency in ``dvc.yaml``, so without this a fixed file was
never read again (DVC found ingest up to date and checked its old output out). The stage always runs
(a second for the project's sources) and writes the SHA-256 of every file ingest would copy, or, for a
source to download, the files and checksums it expects; only a changed record makes ingest run again.
Generated data needs nothing: its settings (``dataset.synthetic``) are a parameter of ingest already.
Names only, never a folder's absolute path: the record is the same on every clone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.config import Params
from recsys.data.raw_files import sha256_of
from recsys.data.sources import SOURCES
from recsys.specs import resolve


def fingerprint(params: Params, local_dir: Path | None) -> dict[str, Any]:
    """What ``recsys ingest`` would read for ``params``, with ``local_dir`` as the local copy."""
    from recsys.data.datasets import dataset_of

    record: dict[str, Any] = resolve(dataset_of(params).fingerprint)(params, local_dir)
    return {"dataset": params.dataset.name} | record


def of_sources(params: Params, local_dir: Path | None) -> dict[str, Any]:
    """The raw sources: each local file's size and checksum, or the download it would need."""
    from recsys.data.datasets import source_names

    return {"sources": {name: _source(name, local_dir) for name in source_names(params)}}


def of_files(params: Params, local_dir: Path | None) -> dict[str, Any]:
    """A team's two configured files: size and checksum (or missing)."""
    files = params.dataset.files
    return {"files": {kind: _file(getattr(files, kind)) for kind in ("interactions", "items")}}


def of_generated(params: Params, local_dir: Path | None) -> dict[str, Any]:
    """Generated data: nothing (its settings are a parameter of ingest already)."""
    return {}


def _file(name: str) -> dict[str, Any]:
    path = Path(name)
    if not name or not path.is_file():
        return {"name": path.name, "missing": True}  # ingest says what is wrong
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _source(name: str, local_dir: Path | None) -> dict[str, Any]:
    source = SOURCES.get(name)
    if source is None:
        return {"unknown": True}  # ingest names the known sources
    folder = local_dir / source.folder if local_dir is not None else None
    if folder is not None and folder.is_dir():
        return {"local": {spec.name: _file(str(folder / spec.name)) for spec in source.files}}
    return {"download": source.url, "expected": {spec.name: spec.sha256 for spec in source.files}}
