"""The training flow killed with SIGKILL in the middle of its train stage, then run again.

A crash (OOM killer, power cut) must leave the registry's champion untouched and loadable, and must not
leave a lock that blocks the next run: the run lock is an OS file lock (``filelock``), released when
the process that held it dies, even though the lock file itself stays on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from filelock import FileLock

from flows.dvc import LOCK_NAME
from flows.training import training_flow
from recsys import registry
from tests.helpers import PROJECT_ROOT, TINY_OVERRIDES, TinyProject, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "registry_home")]
TRAIN_STARTED = "Running stage 'train'"
# Another hybrid setting: the train stage (and what follows) must run again, not be skipped.
RETRAIN = TINY_OVERRIDES | {"train.lightfm.no_components": 6}
_CHILD = """
import sys
from flows.training import training_flow
training_flow(
    data_dir=sys.argv[1], project_dir=sys.argv[2], params_overrides={overrides!r}, retry_delay_s=0.0
)
"""


def run_in_process(project: TinyProject, overrides: dict[str, Any]) -> dict[str, Any]:
    state = training_flow(
        data_dir=str(project.raw),
        project_dir=str(project.root),
        params_overrides=overrides,
        retry_delay_s=0.0,
        lock_timeout_s=30.0,
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary: dict[str, Any] = state.result()
    return summary


def start_child_run(project: TinyProject, log: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """The training flow in its own process group, its output going to ``log``."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}
    sink = open(log, "wb")  # noqa: SIM115 - closed by the caller once the child is gone
    command = [sys.executable, "-c", _CHILD.format(overrides=RETRAIN), str(project.raw), str(project.root)]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
    )
    return process, sink


def wait_for_line(process: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float = 300.0) -> None:
    """Wait until the run's log holds ``text``; fail at once if the run ends before it."""

    def written() -> bool:
        output = log.read_text(encoding="utf-8", errors="replace")
        assert process.poll() is None or text in output, f"the run ended before {text!r}:\n{output[-4000:]}"
        return text in output

    assert wait_for(written, timeout_s, 0.1), (
        f"no {text!r} in {timeout_s:g} s:\n{log.read_text(errors='replace')[-4000:]}"
    )


def kill_run(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the flow and every process it started (dvc, ``recsys train``)."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive


def test_sigkill_during_train_keeps_the_champion_and_the_next_run_completes(
    tiny_project: TinyProject, registry_home: Path, tmp_path: Path
) -> None:
    first = run_in_process(tiny_project, TINY_OVERRIDES)
    champion = registry.champion()
    assert champion is not None and first["model_tag"] == champion.tag

    log = tmp_path / "killed-run.log"
    process, sink = start_child_run(tiny_project, log)
    try:
        wait_for_line(process, log, TRAIN_STARTED)
        kill_run(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        sink.close()
    assert "training finished" not in log.read_text(encoding="utf-8", errors="replace")

    after_crash = registry.champion()
    assert after_crash is not None and after_crash.tag == champion.tag
    artifact = registry.load_artifact("champion", home=registry_home)
    assert artifact.user_ids and artifact.item_ids

    lock_path = tiny_project.root / LOCK_NAME
    assert lock_path.exists()  # the file stays behind, but the OS released the lock with its holder
    with FileLock(str(lock_path), timeout=0):
        pass

    second = run_in_process(tiny_project, RETRAIN)
    assert second["stages"]["train"] == "ran"
    final = registry.champion()
    assert final is not None and final.tag == (second["model_tag"] or champion.tag)
    assert registry.load_artifact("champion", home=registry_home).item_ids
