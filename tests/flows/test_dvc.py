"""The DVC adapter (flows/dvc.py): params overrides, DVC output parsing, the run lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.dvc import (
    LOCK_NAME,
    LockBusyError,
    StageFailedError,
    apply_overrides,
    failure_detail,
    pipeline_stages,
    run_lock,
    stage_outcomes,
)
from recsys.config import load_params
from recsys.errors import ConfigError
from tests.helpers import PROJECT_ROOT

PARAMS = """\
# top comment
seed: 42
train:
  # why two threads
  num_threads: 2
  search:
    n_trials: 8
"""

REPRO_OUTPUT = [
    "Stage 'ingest' didn't change, skipping",
    "Stage 'prepare' is cached - skipping run, checking out outputs",
    "Running stage 'features':",
    "> recsys features",
]


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS, encoding="utf-8")
    return path


def test_overrides_update_values_and_keep_comments(params_file: Path) -> None:
    changed = apply_overrides(params_file, {"train.search.n_trials": 3, "seed": 42})
    text = params_file.read_text(encoding="utf-8")
    assert changed == {"train.search.n_trials": 3}
    assert load_params(params_file).train.search.n_trials == 3
    assert "# why two threads" in text and "# top comment" in text


def test_overrides_that_change_nothing_leave_the_file_alone(params_file: Path) -> None:
    before = params_file.stat().st_mtime_ns
    assert apply_overrides(params_file, {"train.num_threads": 2}) == {}
    assert params_file.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.nope": 1}, "nope"),
        ({"seed.deeper": 1}, "seed"),
        ({"train.search.n_trials": 0}, "n_trials"),
    ],
)
def test_bad_overrides_raise_and_write_nothing(
    params_file: Path, overrides: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(params_file, overrides)
    assert params_file.read_text(encoding="utf-8") == PARAMS


def test_stage_outcomes_read_dvc_output() -> None:
    assert stage_outcomes(REPRO_OUTPUT) == {"ingest": "skipped", "prepare": "restored", "features": "ran"}


def test_failure_detail_keeps_the_stage_error_and_its_exit_code() -> None:
    lines = [
        *REPRO_OUTPUT,
        "error: data/raw/x.dat, row 3, column 'weight': not an integer",
        "ERROR: failed to reproduce 'features': failed to run: recsys features, exited with 2",
    ]
    detail, command_exit = failure_detail(lines)
    assert "row 3, column 'weight'" in detail
    assert command_exit == 2
    assert not StageFailedError("features", 255, command_exit, detail).transient


def test_failure_without_an_exit_code_is_transient() -> None:
    detail, command_exit = failure_detail(["Killed"])
    error = StageFailedError("train", 1, command_exit, detail)
    assert command_exit is None and error.transient
    assert "'train'" in str(error) and "Killed" in str(error)


def test_pipeline_stages_follow_dvc_yaml() -> None:
    stages = pipeline_stages(PROJECT_ROOT)
    assert stages[:2] == ["sources", "ingest"] and stages[-1] == "bias"
    assert stages.index("split") < stages.index("train") < stages.index("evaluate") < stages.index("bias")


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the lock for ``seconds``; returns once it holds it.

    Just before releasing, the holder writes ``<lock>.released``.
    """
    code = (
        "import pathlib, sys, time; from filelock import FileLock; "
        "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
        "time.sleep(float(sys.argv[2])); pathlib.Path(sys.argv[1] + '.released').touch(); lock.release()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_lock_held_elsewhere_fails_with_its_path(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / LOCK_NAME, 30)
    try:
        with pytest.raises(LockBusyError, match=LOCK_NAME) as raised, run_lock(tmp_path, timeout_s=0.2):
            pytest.fail("the lock was acquired while another process held it")
        assert "another run holds the lock" in str(raised.value)
    finally:
        holder.kill()
        holder.wait()


def test_lock_waits_for_the_other_run(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / LOCK_NAME, 1.0)
    try:
        with run_lock(tmp_path, timeout_s=60) as path:
            # Only a run that waited for the holder to finish can see the file it wrote before releasing.
            assert (tmp_path / f"{LOCK_NAME}.released").exists()
            assert path == tmp_path / LOCK_NAME
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()


def test_a_user_error_is_one_line_in_the_log_and_a_transient_one_keeps_its_traceback() -> None:
    import logging
    import pickle

    from flows.dvc import UserErrorsWithoutTraceback

    lines = [
        "Running stage 'prepare':",
        "error: x.csv, row 5, column 'n': 'lots' is not a number",
        "exited with 2",
    ]
    bad_data = StageFailedError("prepare", 255, 2, failure_detail(lines)[0])
    killed = StageFailedError("train", 255, None, "Killed")
    assert bad_data.one_line == "stage 'prepare': x.csv, row 5, column 'n': 'lots' is not a number"
    assert pickle.loads(pickle.dumps(bad_data)).one_line == bad_data.one_line  # Prefect keeps it
    records = []
    for error in (bad_data, killed):
        record = logging.LogRecord(
            "prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered: %s", ("x",), None
        )
        record.exc_info = (type(error), error, None)
        assert UserErrorsWithoutTraceback().filter(record)
        records.append(record)
    assert records[0].exc_info is None and records[0].getMessage() == f"Encountered: {bad_data.one_line}"
    assert records[1].exc_info is not None  # a transient failure's traceback is kept
