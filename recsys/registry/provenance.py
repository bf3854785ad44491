"""Provenance of a packaged model: the pipeline's lock file, the code's commit, the data's version.

Each is a plain string recorded in the model's metadata, so a served model can be traced back to the
exact data and code that made it, and the gate can tell whether two models saw the same split.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def dvc_lock_hash(path: str | Path = "dvc.lock") -> str:
    """sha256 of ``dvc.lock`` (the pipeline's exact inputs and outputs), or ``"unknown"`` without one."""
    path = Path(path)
    return sha256_file(path) if path.is_file() else "unknown"


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` in ``cwd``, or ``"unknown"`` outside a git work tree (or without git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def data_version(*folders: Path) -> str:
    """sha256 over the names and bytes of the files in ``folders``: changes exactly when the data does."""
    digest = hashlib.sha256()
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(folder).as_posix()}\n".encode())
            digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
