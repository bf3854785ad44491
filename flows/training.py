"""The training flow: every DVC stage as a Prefect task, then reports, the promotion gate and packaging.

Run it once with ``python -m flows.training`` from the project root, or on a schedule through
:mod:`flows.deployments`. Each stage task runs ``dvc repro <stage>`` in a subprocess, so DVC decides
what is stale: unchanged stages are skipped, and a rerun after a failure resumes where it stopped.

Parameter overrides are applied the DVC way, by updating ``params.yaml`` (comments kept) before any
stage runs, exactly as ``dvc exp run -S key=value`` does in the workspace: ``dvc.lock`` then records
the values each stage ran with, and DVC reruns only the stages whose parameters changed. The overrides
stay in ``params.yaml`` afterwards (commit it, or revert it, like any other change). Code is never
edited.

A file lock (``<project_dir>/.recsys-train.lock``) serialises runs on one project: a second run waits
up to ``lock_timeout_s`` and then fails naming the lock. A failed stage ends the flow before the gate,
so the champion is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from recsys.config import DATA_DIR_ENV, Params, load_params
from recsys.errors import ConfigError, RecsysError

if TYPE_CHECKING:
    from recsys.registry import ModelInfo

LOCK_NAME = ".recsys-train.lock"
CHALLENGER = "lightfm_hybrid"
METRICS_FILE = Path("metrics/offline.json")
EDA_REPORT = Path("reports/eda/eda.html")
PLOTS_DIR = Path("plots")
USER_ERROR_EXIT = 2
"""Exit code of the ``recsys`` CLI for bad data or settings: rerunning the stage cannot help."""

_TAIL_LINES = 30
_STAGE_LINE = re.compile(r"(Running stage|Stage) '(?P<stage>[^']+)'(?P<rest>.*)")
_CMD_EXIT = re.compile(r"exited with (?P<code>-?\d+)")


class StageFailedError(RecsysError):
    """A DVC stage failed; the message carries the stage's own error lines."""

    def __init__(self, stage: str, returncode: int, command_exit: int | None, detail: str) -> None:
        self.stage, self.returncode, self.command_exit = stage, returncode, command_exit
        super().__init__(f"DVC stage {stage!r} failed (dvc exit code {returncode}): {detail}")

    @property
    def transient(self) -> bool:
        """False when the stage's command reported bad data or settings (retrying cannot help)."""
        return self.command_exit != USER_ERROR_EXIT


class LockBusyError(RecsysError):
    """Another run holds the project's run lock."""


# --- the run lock ------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(project_dir: Path, timeout_s: float) -> Iterator[Path]:
    """Hold ``<project_dir>/.recsys-train.lock`` for the block; wait at most ``timeout_s`` for it.

    Raises
    ------
    LockBusyError
        Another run kept the lock for longer than ``timeout_s``.
    """
    from filelock import FileLock, Timeout

    path = project_dir / LOCK_NAME
    lock = FileLock(str(path), timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise LockBusyError(
            f"another run holds the lock {path} (waited {timeout_s:g} s): wait for it to finish and retry. "
            "The lock is released when that process ends, even if it crashed."
        ) from None
    try:
        yield path
    finally:
        lock.release()


# --- params.yaml overrides ---------------------------------------------------------------------------


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


# --- the DVC stage task ------------------------------------------------------------------------------


def pipeline_stages(project_dir: Path) -> list[str]:
    """The stage names of ``dvc.yaml``, in the file's order (upstream first)."""
    import yaml

    stages = yaml.safe_load((project_dir / "dvc.yaml").read_text(encoding="utf-8")).get("stages", {})
    return list(stages)


def stage_environment(data_dir: str | None) -> dict[str, str]:
    """The environment for stage commands: this interpreter's bin dir first on PATH, and the data dir."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    if data_dir is not None:
        env[DATA_DIR_ENV] = str(Path(data_dir).expanduser().resolve())
    return env


def stream_command(
    command: list[str], cwd: Path, env: Mapping[str, str], prefix: str
) -> tuple[int, list[str]]:
    """Run ``command``, logging each output line (stdout and stderr) as it comes.

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


def _retry_when_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the stage reported bad data or settings."""
    error = state.data
    return not isinstance(error, StageFailedError) or error.transient


@task(
    name="dvc-stage",
    task_run_name="dvc repro {stage}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_when_transient,
    cache_policy=NO_CACHE,
)
def dvc_stage(stage: str, project_dir: str, data_dir: str | None = None) -> dict[str, Any]:
    """``dvc repro <stage>`` (upstream stages included; DVC skips whatever is up to date).

    Returns
    -------
    dict
        ``{"stage", "outcome": "ran" | "skipped" | "restored" | "unknown", "seconds"}``.

    Raises
    ------
    StageFailedError
        DVC exited non-zero; the message holds the stage's error lines.
    """
    start = time.perf_counter()
    command = [dvc_executable(), "repro", stage]
    code, lines = stream_command(command, Path(project_dir), stage_environment(data_dir), stage)
    if code != 0:
        detail, command_exit = failure_detail(lines)
        raise StageFailedError(stage, code, command_exit, detail)
    outcome = stage_outcomes(lines).get(stage, "unknown")
    return {"stage": stage, "outcome": outcome, "seconds": round(time.perf_counter() - start, 2)}


def dvc_executable() -> str:
    """The ``dvc`` beside this Python (the project's virtualenv), else the one on ``PATH``."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else "dvc"


def run_stages(
    project_dir: Path, data_dir: str | None, retries: int, retry_delay_s: float
) -> dict[str, dict[str, Any]]:
    """Every stage of ``dvc.yaml`` in order, each as one (retried) task; stops at the first failure."""
    stage_task = dvc_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_s)
    return {stage: stage_task(stage, str(project_dir), data_dir) for stage in pipeline_stages(project_dir)}


# --- reports -----------------------------------------------------------------------------------------


def read_report(project_dir: Path) -> dict[str, Any]:
    """``metrics/offline.json`` of the project."""
    path = project_dir / METRICS_FILE
    if not path.exists():
        raise RecsysError(f"{path} is missing: the evaluate stage did not write it")
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


def metrics_rows(report: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """One row per model with its headline metrics (the table ``recsys evaluate`` prints)."""
    from recsys.offline.metrics_files import headline

    return [{"model": name} | values for name, values in headline(report, k).items()]


def report_paths(project_dir: Path) -> dict[str, Any]:
    """Where the run's reports are: EDA HTML, offline metrics, plot tables (existing files only)."""
    plots = sorted(str(path) for path in (project_dir / PLOTS_DIR).glob("*.csv"))
    paths: dict[str, Any] = {
        "eda": str(project_dir / EDA_REPORT),
        "metrics": str(project_dir / METRICS_FILE),
        "plots": plots,
    }
    return {key: value for key, value in paths.items() if value and (key == "plots" or Path(value).exists())}


@task(name="publish-reports", cache_policy=NO_CACHE)
def publish_reports(project_dir: str, report: dict[str, Any], k: int) -> dict[str, Any]:
    """Artifacts: the metrics table, links to the EDA report and the metrics, and a list of the plots."""
    root = Path(project_dir)
    rows = metrics_rows(report, k)
    create_table_artifact(rows, key="offline-metrics", description=f"Test-split metrics @{k} per model")
    paths = report_paths(root)
    for key, label in (("eda", "EDA report"), ("metrics", "Offline metrics (JSON)")):
        if key in paths:
            create_link_artifact(Path(paths[key]).as_uri(), link_text=label, key=f"{key}-report")
    create_markdown_artifact(_reports_markdown(paths), key="training-reports", description="Report files")
    return paths


def _reports_markdown(paths: Mapping[str, Any]) -> str:
    lines = ["## Reports of this run", ""]
    if "eda" in paths:
        lines.append(f"- EDA: [{paths['eda']}]({Path(paths['eda']).as_uri()})")
    if "metrics" in paths:
        lines.append(f"- Offline metrics: [{paths['metrics']}]({Path(paths['metrics']).as_uri()})")
    if paths.get("plots"):
        lines += ["- Plot tables (`dvc plots show` renders them):", *(f"  - {p}" for p in paths["plots"])]
    return "\n".join(lines) + "\n"


# --- gate and package --------------------------------------------------------------------------------


@task(name="gate", cache_policy=NO_CACHE)
def gate(project_dir: str, report: dict[str, Any]) -> dict[str, Any]:
    """The challenger (``lightfm_hybrid`` of this run) against the champion's stored test metrics.

    The champion is measured on this run's test split (:func:`comparable_champion`): its recorded
    metrics while the data version is the same, re-measured otherwise.

    Returns
    -------
    dict
        ``{"promote", "reasons", "comparison", "champion_tag", "champion_metrics", "challenger"}``.
    """
    from recsys import registry
    from recsys.offline import gate as gating

    project = Path(project_dir)
    params = load_params(project / "params.yaml")
    challenger = gating.candidate_from_report(report, CHALLENGER)
    champion = registry.champion()
    measured, how = comparable_champion(project, params, champion) if champion else (None, "no champion")
    decision = gating.decide(challenger, measured, params.gate)
    markdown = gating.render_markdown(decision) + f"\nChampion metrics: {how}.\n"
    create_markdown_artifact(markdown, key="gate-decision", description="Gate")
    return decision.to_dict() | {
        "champion_tag": champion.tag if champion else None,
        "champion_metrics": how,
        "challenger": challenger,
    }


def comparable_champion(project: Path, params: Params, champion: ModelInfo) -> tuple[dict[str, Any], str]:
    """The champion's gate input on this run's test split, and how it was obtained.

    The metrics recorded when the champion was packaged are used while its data version (split and
    features) is this run's. Otherwise (new data, other split settings, or a champion of the retraining
    flow, whose training data grew with feedback) it is re-measured on ``data/split`` when its items and
    first users are the split's; if they are not (the catalogue changed), it cannot be measured on this
    split and the recorded metrics are used, which the returned note says.
    """
    from recsys import registry
    from recsys.offline.evaluation import evaluate
    from recsys.offline.popularity import mainstreaminess, user_groups
    from recsys.offline.split import load_split

    split_dir, features_dir = project / "data" / "split", project / "data" / "features"
    if champion.metadata.get("data_version") == registry.data_version(split_dir, features_dir):
        return champion.candidate, "recorded when it was packaged, on this test split"
    artifact = registry.load_artifact(champion.tag)
    split = load_split(split_dir)
    n_users = len(split.user_ids)
    if artifact.item_ids != split.item_ids or artifact.user_ids[:n_users] != split.user_ids:
        return (
            champion.candidate,
            "recorded on another test split (its users or artists differ from this one)",
        )
    groups = user_groups(mainstreaminess(split.train_full), params.evaluate.groups)
    result = evaluate(artifact.model.score, split.train_full, split.test, params.evaluate, groups)
    return {"metrics": dict(result.metrics), "groups": result.groups}, "re-measured on this test split"


@task(name="package", cache_policy=NO_CACHE)
def package(project_dir: str, decision: dict[str, Any]) -> str | None:
    """Save and promote the challenger when the gate says so, then ``bentoml build`` if there is a bentofile.

    Returns
    -------
    str or None
        The champion's tag after this run (None when there is none).
    """
    from recsys import registry

    logger = get_run_logger()
    root = Path(project_dir)
    if not decision["promote"]:
        logger.info("gate kept the champion %s: nothing to package", decision["champion_tag"])
        return str(decision["champion_tag"]) if decision["champion_tag"] else None
    params = load_params(root / "params.yaml")
    tag = registry.save_champion_candidate(
        root / "models",
        root / "data/features",
        root / "data/split",
        decision["challenger"],
        params_dict=params.model_dump(mode="json"),
        dvc_lock_hash=registry.dvc_lock_hash(root / "dvc.lock"),
        git_commit=registry.git_commit(root),
        prepared_dir=root / "data/prepared",
    )
    registry.promote(tag)
    logger.info("promoted %s to champion", tag)
    build_bento(root)
    return tag


def build_bento(project_dir: Path) -> bool:
    """``bentoml build`` when the project has a ``bentofile.yaml``; True when it ran."""
    logger = get_run_logger()
    if not (project_dir / "bentofile.yaml").exists():
        logger.info("no bentofile.yaml in %s yet: skipping bentoml build", project_dir)
        return False
    bentoml = Path(sys.executable).parent / "bentoml"
    command = [str(bentoml) if bentoml.exists() else "bentoml", "build"]
    code, lines = stream_command(command, project_dir, stage_environment(None), "bentoml build")
    if code != 0:
        raise RecsysError(f"bentoml build failed (exit code {code}): {' | '.join(lines[-5:])}")
    return True


# --- the flow ----------------------------------------------------------------------------------------


@flow(name="training")
def training_flow(
    data_dir: str | None = None,
    params_overrides: dict[str, Any] | None = None,
    project_dir: str = ".",
    retries: int = 2,
    retry_delay_s: float = 10.0,
    lock_timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Train, evaluate, gate and package, each DVC stage as a task.

    Parameters
    ----------
    data_dir : str, optional
        Raw-data folder for the ingest stage (sets ``RECSYS_DATA_DIR``); default: the environment's.
    params_overrides : dict, optional
        Dotted keys written into ``params.yaml`` first, e.g. ``{"train.search.n_trials": 4}``.
    project_dir : str
        The project root (``dvc.yaml``, ``params.yaml``).
    retries, retry_delay_s : int, float
        Retries of a stage that failed for a reason other than bad data or settings.
    lock_timeout_s : float
        How long to wait for another run to release the project's lock.

    Returns
    -------
    dict
        ``{"stages", "metrics", "decision", "model_tag", "reports", "overrides", "seconds"}``.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    with run_lock(root, lock_timeout_s):
        overrides = apply_overrides(root / "params.yaml", params_overrides or {})
        if overrides:
            logger.info("params.yaml overrides applied: %s", overrides)
        stages = run_stages(root, data_dir, retries, retry_delay_s)
        report = read_report(root)
        k = load_params(root / "params.yaml").evaluate.primary_k
        reports = publish_reports(str(root), report, k)
        decision = gate(str(root), report)
        tag = package(str(root), decision)
    summary = {
        "stages": {name: result["outcome"] for name, result in stages.items()},
        "metrics": metrics_rows(report, k),
        "decision": {
            key: decision[key]
            for key in ("promote", "reasons", "comparison", "champion_tag", "champion_metrics")
        },
        "model_tag": tag,
        "reports": reports,
        "overrides": overrides,
        "seconds": round(time.perf_counter() - start, 1),
    }
    logger.info(closing_summary(summary))
    return summary


def closing_summary(summary: Mapping[str, Any]) -> str:
    """One paragraph for the log: what ran, the challenger's numbers, the verdict and the model tag."""
    ran = [name for name, outcome in summary["stages"].items() if outcome == "ran"]
    hybrid: dict[str, Any] = next((row for row in summary["metrics"] if row["model"] == CHALLENGER), {})
    numbers = ", ".join(f"{key}={value}" for key, value in hybrid.items() if key != "model")
    verdict = "promoted" if summary["decision"]["promote"] else "kept the champion"
    return (
        f"training finished in {summary['seconds']} s; "
        f"stages run: {', '.join(ran) or 'none (all up to date)'}; "
        f"{CHALLENGER}: {numbers}; gate {verdict} ({'; '.join(summary['decision']['reasons'])}); "
        f"champion: {summary['model_tag']}"
    )


if __name__ == "__main__":
    training_flow()
