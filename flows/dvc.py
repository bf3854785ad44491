"""The one adapter between the flows and DVC (and the project's run lock): nothing else runs ``dvc``.

- the run lock (``<project>/.recsys-train.lock``, :mod:`recsys.run_lock`) that serialises training,
  retraining, monitoring and every promotion;
- ``params.yaml`` overrides written the ``dvc exp run -S`` way (:func:`apply_overrides`);
- ``dvc repro <stage>`` with its output streamed to the run's log and read for each stage's outcome
  (:func:`repro`), and failures reported with the stage's own error lines (:class:`StageFailedError`);
- data versions of feedback exports: ``dvc add`` (:func:`track_with_dvc`), the hashes a ``.dvc`` file pins
  (:func:`feedback_pins`, :func:`changed_feedback_files`), and where copies of them may sit for an erasure
  to delete: the cache and local remotes (:func:`object_folders`), any remote (:func:`remove_from_remotes`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger

from recsys.config import DATA_DIR_ENV, Params
from recsys.errors import ConfigError, RecsysError
from recsys.paths import FEEDBACK_DIR
from recsys.project import venv_first_on_path, venv_tool
from recsys.run_lock import LOCK_NAME as LOCK_NAME
from recsys.run_lock import LockBusyError as LockBusyError
from recsys.run_lock import run_lock as run_lock

USER_ERROR_EXIT = 2
"""Exit code of the ``recsys`` CLI for bad data or settings: rerunning the stage cannot help."""

_TAIL_LINES = 30
_STAGE_LINE = re.compile(r"(Running stage|Stage) '(?P<stage>[^']+)'(?P<rest>.*)")
_CMD_EXIT = re.compile(r"exited with (?P<code>-?\d+)")


class StageFailedError(RecsysError):
    """A DVC stage failed; the message carries the stage's own error lines."""

    def __init__(self, stage: str, returncode: int, command_exit: int | None, detail: str) -> None:
        self.stage, self.returncode, self.command_exit, self.detail = stage, returncode, command_exit, detail
        super().__init__(f"DVC stage {stage!r} failed (dvc exit code {returncode}): {detail}")

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect keeps a failed task's exception: it must pickle
        return (type(self), (self.stage, self.returncode, self.command_exit, self.detail))

    @property
    def one_line(self) -> str:
        """The stage's own error (``recsys``'s ``error: ...`` line), named by stage; else DVC's detail."""
        own = [part.strip() for part in self.detail.split(" | ") if part.strip().startswith("error: ")]
        if own:
            return f"stage {self.stage!r}: {own[-1].removeprefix('error: ')}"
        return f"stage {self.stage!r} failed: {self.detail}"

    @property
    def transient(self) -> bool:
        """False when the stage's command reported bad data or settings (retrying cannot help)."""
        return self.command_exit != USER_ERROR_EXIT


def apply_overrides(params_path: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Write dotted-key overrides (``{"train.search.n_trials": 4}``) into ``params.yaml``.

    Like ``dvc exp run -S``: the file keeps its comments and layout, and the result is validated
    before anything is written.

    Returns
    -------
    dict
        The overrides that changed a value (key -> new value).

    Raises
    ------
    ConfigError
        A key does not lead to a setting, or the result is not valid.
    """
    from ruamel.yaml import YAML

    from recsys.io import atomic_open

    yaml = YAML()
    yaml.preserve_quotes = True  # a round trip changes only the values set: quotes, long lines and
    yaml.width = 4096  # nulls stay as written
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = yaml.load(params_path.read_text(encoding="utf-8"))
    changed = {key: value for key, value in overrides.items() if _set_dotted(document, key, value)}
    try:
        Params.model_validate(json.loads(json.dumps(document)))
    except ValueError as exc:
        raise ConfigError(f"{params_path}: the overrides {dict(overrides)} are invalid: {exc}") from exc
    if changed:
        with atomic_open(params_path, "w", encoding="utf-8") as handle:
            yaml.dump(document, handle)
    return changed


def _set_dotted(document: Any, key: str, value: Any) -> bool:
    """Set ``a.b.c`` in nested mappings; True when the value changed."""
    *parents, leaf = key.split(".")
    node = document
    for part in parents:
        if not isinstance(node.get(part), Mapping):
            raise ConfigError(f"params.yaml: {key!r} does not name a setting ({part!r} is not a section)")
        node = node[part]
    if node.get(leaf) == value:
        return False
    node[leaf] = value
    return True


class UserErrorsWithoutTraceback(logging.Filter):
    """A log handler filter: a stage's bad data or settings is one line, not Prefect's tracebacks.

    ``recsys run`` puts it on Prefect's handlers; the stage's own error was already logged, and the command
    ends with it (exit code 2). Transient failures keep their tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, StageFailedError) and not error.transient:
            record.exc_info, record.exc_text = None, None
            record.msg, record.args = f"{record.getMessage().split(':')[0]}: {error.one_line}", None
        return True


def pipeline_stages(project_dir: Path) -> list[str]:
    """The stage names of ``dvc.yaml``, in the file's order (upstream first)."""
    import yaml

    stages = yaml.safe_load((project_dir / "dvc.yaml").read_text(encoding="utf-8")).get("stages", {})
    return list(stages)


def stage_environment(data_dir: str | None) -> dict[str, str]:
    """The environment for stage commands: this interpreter's bin dir first on PATH, and the data dir."""
    env = dict(venv_first_on_path(dict(os.environ)))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    if data_dir is not None:
        env[DATA_DIR_ENV] = str(Path(data_dir).expanduser().resolve())
    return env


def stream_command(
    command: list[str], cwd: Path, env: Mapping[str, str], prefix: str, log_lines: bool = True
) -> tuple[int, list[str]]:
    """Run ``command``, logging each output line (stdout and stderr) as it comes (unless ``log_lines`` is
    false: the caller logs what matters).

    Returns
    -------
    tuple
        The exit code and all output lines.
    """
    logger = get_run_logger()
    lines: list[str] = []
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            if line:
                lines.append(line)
                if log_lines:
                    logger.info("[%s] %s", prefix, line)
    return process.returncode, lines


def stage_outcomes(lines: list[str]) -> dict[str, str]:
    """``stage -> "ran" | "skipped" | "restored"`` from ``dvc repro`` output."""
    outcomes: dict[str, str] = {}
    for line in lines:
        match = _STAGE_LINE.search(line)
        if match is None:
            continue
        rest = match["rest"]
        if match.group(1) == "Running stage":
            outcomes[match["stage"]] = "ran"
        elif "didn't change" in rest:
            outcomes[match["stage"]] = "skipped"
        elif "cached" in rest:
            outcomes[match["stage"]] = "restored"
    return outcomes


def failure_detail(lines: list[str]) -> tuple[str, int | None]:
    """The error lines of a failed ``dvc repro`` (else its last lines) and the stage command's exit code."""
    tail = list(deque(lines, maxlen=_TAIL_LINES))
    errors = [line for line in tail if line.lower().startswith(("error", "traceback")) or "Error:" in line]
    exits = [int(match["code"]) for line in tail if (match := _CMD_EXIT.search(line))]
    detail = " | ".join(errors or tail[-5:]) or "no output"
    return detail, (exits[-1] if exits else None)


def dvc_executable() -> str:
    """The ``dvc`` beside this Python (the project's virtualenv), else the one on ``PATH``."""
    return venv_tool("dvc")


@dataclass(frozen=True)
class StageRun:
    """One ``dvc repro`` of a stage; its outcome: ``"ran"``, ``"skipped"``, ``"restored"``, ``"unknown"``."""

    stage: str
    outcome: str
    seconds: float


def repro(stage: str, project_dir: str, data_dir: str | None = None, single_item: bool = False) -> StageRun:
    """``dvc repro <stage>`` (upstream stages included; DVC skips whatever is up to date).

    ``single_item`` leaves upstream stages alone (``--single-item``): for a caller that has just run them
    in order, so the always-run ``sources`` stage runs once per run, not once per stage. A stage whose
    command fails gets its previous outputs back (:func:`restore_outputs`).

    Returns
    -------
    StageRun
        The stage, its outcome and how long it took.

    Raises
    ------
    StageFailedError
        DVC exited non-zero; the message holds the stage's error lines.
    """
    start = time.perf_counter()
    command = [dvc_executable(), "repro", *(["--single-item"] if single_item else []), stage]
    code, lines = stream_command(command, Path(project_dir), stage_environment(data_dir), stage)
    if code != 0:
        detail, command_exit = failure_detail(lines)
        failed = [name for name, outcome in stage_outcomes(lines).items() if outcome == "ran"]
        if failed:
            restore_outputs(failed[-1], Path(project_dir))
        raise StageFailedError(failed[-1] if failed else stage, code, command_exit, detail)
    outcome = stage_outcomes(lines).get(stage, "unknown")
    return StageRun(stage, outcome, round(time.perf_counter() - start, 2))


def restore_outputs(stage: str, project_dir: Path) -> None:
    """Put back the outputs ``dvc.lock`` records for ``stage`` after its command failed.

    DVC deletes a stage's outputs before running its command, so a failed prepare used to leave no
    prepared tables at all; the lock still names the last good ones, and the cache holds them. Best effort:
    a stage that never succeeded has nothing to restore, and what cannot be restored is logged.
    """
    lock = project_dir / "dvc.lock"
    recorded = yaml.safe_load(lock.read_text(encoding="utf-8")) if lock.is_file() else None
    if stage not in ((recorded or {}).get("stages") or {}):
        return  # never succeeded: nothing to put back
    command = [dvc_executable(), "checkout", stage]
    done = subprocess.run(
        command, cwd=project_dir, env=stage_environment(None), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        get_run_logger().warning("could not restore the outputs of %r: %s", stage, lines[-1] if lines else "")


def _pinned(pointer: Path) -> list[str]:
    """The md5 of each output a ``.dvc`` file pins."""
    outs = yaml.safe_load(pointer.read_text(encoding="utf-8")).get("outs") or []
    return [str(out["md5"]) for out in outs if out.get("md5")]


def is_dvc_project(root: Path) -> bool:
    """Whether ``root`` holds a DVC project (``.dvc/``)."""
    return (root / ".dvc").is_dir()


def dvc_versions(root: Path, files: list[str]) -> list[str]:
    """The md5 each of ``files``' ``.dvc`` files pins now (files without one are left out)."""
    pointers = [root / f"{file}.dvc" for file in files]
    return [md5 for pointer in pointers if pointer.exists() for md5 in _pinned(pointer)]


def feedback_pins(root: Path) -> dict[str, list[str]]:
    """``exported file -> md5s its .dvc file pins``, for every ``data/feedback/*.dvc`` (paths relative)."""
    return {
        str(pointer.relative_to(root).with_suffix("")): _pinned(pointer)
        for pointer in sorted((root / FEEDBACK_DIR).glob("*.dvc"))
    }


def changed_feedback_files(root: Path) -> list[str]:
    """Exported files whose content is no longer what their ``.dvc`` file pins (purged since it was added):
    they need a ``dvc add`` so that the pin, and a later checkout, hold the purged content."""
    changed = []
    for file, pins in feedback_pins(root).items():
        path = root / file
        if path.is_file() and pins and _md5(path) not in pins:
            changed.append(file)
    return changed


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def track_with_dvc(root: str, files: list[str]) -> list[str]:
    """``dvc add`` the feedback ``files`` (relative to ``root``) when ``root`` is a DVC project.

    Each export then is a data version of its own: its ``.dvc`` file (visible to git through
    ``.gitignore``'s ``!/data/feedback/*.dvc``) pins the content, and a purge for an erasure re-adds the
    file, so the ``.dvc`` moves to the purged content. Returns the ``.dvc`` files written (none outside a
    DVC project).
    """
    project = Path(root)
    if not files or not is_dvc_project(project):
        return []
    done = subprocess.run(
        [dvc_executable(), "add", "-q", *files], cwd=project, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RecsysError(f"dvc add {' '.join(files)} failed in {project}: {' / '.join(detail)}")
    return [f"{file}.dvc" for file in files]


def untrack(root: Path, file: str) -> None:
    """Delete an exported file and its ``.dvc`` file (a run that failed before its cursor advanced wrote it;
    its events are exported again)."""
    for path in (root / file, root / f"{file}.dvc"):
        path.unlink(missing_ok=True)


def cache_dir(root: Path) -> Path:
    """The project's DVC cache folder (``cache.dir`` of its config, else ``.dvc/cache``)."""
    configured = _dvc_config(root).get("cache", {}).get("dir")
    return (root / ".dvc" / configured).resolve() if configured else root / ".dvc" / "cache"


def object_folders(root: Path) -> dict[str, Path]:
    """Every content-addressed folder of the project a copy of an export may sit in: ``"cache"`` and each
    remote that is a local folder (``remote:<name>``), by what it is called in an erasure's record."""
    folders = {"cache": cache_dir(root)}
    for name, url in _remotes(root).items():
        path = _local_path(root, url)
        if path is not None and path.is_dir():
            folders[f"remote:{name}"] = path
    return folders


def remove_from_remotes(root: Path, md5s: list[str]) -> dict[str, list[str]]:
    """Delete the objects ``md5s`` from every DVC remote of the project, of any kind (a local folder
    directly, any other through DVC's own file systems); ``remote name -> md5s deleted``. Deleting what is
    already gone is a no-op."""
    return _remote_objects(root, md5s, delete=True)


def objects_in_remotes(root: Path, md5s: list[str]) -> dict[str, list[str]]:
    """``remote name -> which of md5s it still holds``, for every DVC remote of the project."""
    return _remote_objects(root, md5s, delete=False)


def _remote_objects(root: Path, md5s: list[str], delete: bool) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    others = []
    for name, url in _remotes(root).items():
        path = _local_path(root, url)
        if path is None:
            others.append(name)
            continue
        present = [md5 for md5 in dict.fromkeys(md5s) if _object_files(path, md5)]
        if delete:
            for md5 in present:
                for file in _object_files(path, md5):
                    file.unlink()
        found[name] = present
    if others and md5s:
        found |= _dvc_python(root, _OBJECTS_SCRIPT, json.dumps(md5s), "1" if delete else "0", *others)
    return found | {name: [] for name in others if name not in found}


def _object_files(folder: Path, md5: str) -> list[Path]:
    # DVC 3 keeps objects under files/md5/; a remote or cache from DVC 2 has them at the top.
    return [
        path
        for path in (folder / "files" / "md5" / md5[:2] / md5[2:], folder / md5[:2] / md5[2:])
        if path.is_file()
    ]


def _dvc_config(root: Path) -> dict[str, Any]:
    """The project's DVC config, ``.dvc/config`` under ``.dvc/config.local``, read as DVC does (no ``dvc``
    process: starting one costs about a second)."""
    from configobj import ConfigObj

    merged: dict[str, Any] = {}
    for name in ("config", "config.local"):
        path = root / ".dvc" / name
        if path.is_file():
            for section, values in ConfigObj(str(path)).items():
                merged[section] = {**merged.get(section, {}), **dict(values)}
    return merged


def _remotes(root: Path) -> dict[str, str]:
    """``name -> url`` of every remote in the project's DVC config."""
    found = {}
    for section, values in _dvc_config(root).items():
        match = re.fullmatch(r'remote "(?P<name>[^"]+)"', section)
        if match and values.get("url"):
            found[match["name"]] = str(values["url"])
    return found


def _local_path(root: Path, url: str) -> Path | None:
    """The folder of a remote that is a local path (relative ones are relative to ``.dvc``), else None."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    if "://" in url:
        return None
    return (root / ".dvc" / url).resolve()


# DVC's Python API runs in a process of its own, only for remotes that are not local folders: a flow loaded
# by Prefect from its entrypoint file has flows/ on sys.path, where this module's name shadows the package.
_OBJECTS_SCRIPT = """
import json, sys
from dvc.repo import Repo
repo = Repo(sys.argv[1])
md5s, delete, names = json.loads(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
try:
    out = {}
    for name in names:
        odb = repo.cloud.get_remote_odb(name)
        found = []
        for md5 in dict.fromkeys(md5s):
            path = odb.oid_to_path(md5)
            if odb.fs.exists(path):
                if delete:
                    odb.fs.rm(path)
                found.append(md5)
        out[name] = found
    print(json.dumps(out))
finally:
    repo.close()
"""


def _dvc_python(root: Path, script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RecsysError(f"DVC remotes of {root}: {' '.join(detail) or 'failed'}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
