"""The project a command runs in, and the environment the Makefile gives every command run from it.

``make run`` exports ``BENTOML_HOME=.bentoml``, ``PREFECT_HOME=.prefect`` and
``RECSYS_DATA_DIR=../shared/data`` (next to the project). ``recsys`` started any other way
(``.venv/bin/recsys run``, an activated virtualenv) applies the same defaults, so a model trained by one
path is served by the other: without them BentoML writes to ``~/bentoml`` and ``make serve`` answers 503
over a store it never reads. A value already set in the environment always wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

MARKERS: tuple[str, ...] = ("dvc.yaml", "params.yaml")
"""A folder holding both is a project root."""
QUIET: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
}
"""No telemetry from a run, as in the Makefile."""


VENV_BIN = Path(sys.executable).parent
"""The bin folder of the Python running this: the project's virtualenv when run through ``make``."""


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding ``dvc.yaml`` and ``params.yaml``, or None."""
    for folder in (start.resolve(), *start.resolve().parents):
        if all((folder / marker).is_file() for marker in MARKERS):
            return folder
    return None


def defaults(root: Path) -> dict[str, str]:
    """The Makefile's environment for the project at ``root``: stores inside it, data beside it."""
    values = {"BENTOML_HOME": str(root / ".bentoml"), "PREFECT_HOME": str(root / ".prefect"), **QUIET}
    shared = root.parent / "shared" / "data"
    if shared.is_dir():
        values["RECSYS_DATA_DIR"] = str(shared)
    return values


def apply_defaults(
    start: Path | None = None, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Set each of the project's defaults that ``environ`` (the process's) lacks; returns those set.

    Outside a project (no ``dvc.yaml`` and ``params.yaml`` at or above ``start``) nothing is set.
    """
    env = os.environ if environ is None else environ
    root = find_root(start or Path.cwd())
    if root is None:
        return {}
    added = {key: value for key, value in defaults(root).items() if not env.get(key, "").strip()}
    env.update(added)
    return added


def venv_tool(name: str) -> str:
    """The command ``name`` installed beside this Python (the project's virtualenv: ``dvc``, ``bentoml``,
    ``evidently``, ``prefect``, ``recsys``), else ``name`` itself, looked up on ``PATH``."""
    beside = VENV_BIN / name
    return str(beside) if beside.exists() else name


def venv_first_on_path(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``env`` with this Python's bin folder first on ``PATH``, so commands it starts (the DVC stages'
    ``recsys``) are the project's own; returns ``env``."""
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
