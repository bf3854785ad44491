"""A throwaway PostgreSQL server for tests, started and stopped with ``scripts/postgres.sh``.

The tests never install anything: when the server binaries are missing, :func:`postgres_bindir` says so
and the caller decides whether that fails or skips.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.helpers import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "postgres.sh"
INSTALL_HINT = (
    "install the server with `scripts/postgres.sh install` (or `apt-get install -y postgresql`), "
    "or point RECSYS_TEST_POSTGRES_URL at a server, or set RECSYS_SKIP_POSTGRES=1 to skip these tests"
)


@dataclass(frozen=True)
class ThrowawayPostgres:
    """A running server: its SQLAlchemy URL and the folder holding its data."""

    url: str
    folder: Path

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze every process of the server (SIGSTOP) for the block: connections stay open and the kernel
        still acknowledges packets, but nothing answers, like a stalled or paused database host."""
        postmaster = psutil.Process(int((self.folder / "data" / "postmaster.pid").read_text().split()[0]))
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            process.suspend()
        try:
            yield
        finally:
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        subprocess.run(
            ["bash", str(SCRIPT), "stop", "--dir", str(self.folder)], check=True, capture_output=True
        )


def postgres_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None when the server is not installed."""
    result = subprocess.run(["bash", str(SCRIPT), "bindir"], capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def start_postgres(timeout_s: float = 120.0) -> ThrowawayPostgres:
    """Start a server on a free 127.0.0.1 port with a fresh cluster in a new temporary folder.

    Raises
    ------
    RuntimeError
        With the script's output when the server cannot start.
    """
    # A fresh folder under the system temp dir: as root the server runs as the `postgres` user, which
    # cannot enter pytest's private tmp_path folders.
    folder = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    result = subprocess.run(
        ["bash", str(SCRIPT), "start", "--dir", str(folder), "--no-install"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"{SCRIPT.name} start failed (exit {result.returncode}):\n{result.stderr}")
    return ThrowawayPostgres(url=result.stdout.strip().splitlines()[-1], folder=folder)
