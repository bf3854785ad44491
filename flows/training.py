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

Wiring only: DVC, the lock and the overrides are :mod:`flows.dvc`; the gate's rules
:mod:`recsys.offline.gate`, the champion's comparable metrics :mod:`recsys.registry.comparison`,
packaging :func:`recsys.registry.package_project`, the run's summary :mod:`recsys.reporting.run_summary`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import dvc
from recsys.config import load_params
from recsys.errors import RecsysError
from recsys.feedback.store import feedback_url
from recsys.offline.metrics_files import metrics_rows, read_report
from recsys.paths import PARAMS_FILE
from recsys.project import venv_tool
from recsys.registry.comparison import HOLD, KEEP, RunGate, gate_run
from recsys.registry.publishing import publish_champion
from recsys.reporting.model_card import refresh_model_card
from recsys.reporting.run_summary import closing_summary, report_paths, reports_markdown


def _retry_when_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the stage reported bad data or settings."""
    error = state.data
    return not isinstance(error, dvc.StageFailedError) or error.transient


@task(
    name="dvc-stage",
    task_run_name="dvc repro {stage}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_when_transient,
    cache_policy=NO_CACHE,
)
def dvc_stage(
    stage: str, project_dir: str, data_dir: str | None = None, single_item: bool = False
) -> dvc.StageRun:
    """``dvc repro <stage>`` (:func:`flows.dvc.repro`); retried unless the stage reported bad input."""
    return dvc.repro(stage, project_dir, data_dir, single_item)


def run_stages(
    project_dir: Path, data_dir: str | None, retries: int, retry_delay_s: float
) -> dict[str, dvc.StageRun]:
    """Every stage of ``dvc.yaml`` in order, each as one (retried) task; stops at the first failure."""
    stage_task = dvc_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_s)
    return {
        stage: stage_task(stage, str(project_dir), data_dir, single_item=True)
        for stage in dvc.pipeline_stages(project_dir)
    }


@task(name="publish-reports", cache_policy=NO_CACHE)
def publish_reports(project_dir: str, report: dict[str, Any], k: int) -> dict[str, Any]:
    """The model card rewritten from this run's metrics; artifacts: the metrics table, links to the EDA
    report, the metrics and the card, and a list of the plots."""
    rows = metrics_rows(report, k)
    create_table_artifact(rows, key="offline-metrics", description=f"Test-split metrics @{k} per model")
    card = refresh_model_card(Path(project_dir))
    paths = report_paths(Path(project_dir)) | {"model_card": str(card)}
    links = {"eda": ("EDA report", "eda-report"), "metrics": ("Offline metrics (JSON)", "metrics-report")}
    links["model_card"] = ("Model card", "model-card")  # artifact keys: lowercase letters, digits, dashes
    for name, (label, key) in links.items():
        if name in paths:
            create_link_artifact(Path(paths[name]).as_uri(), link_text=label, key=key)
    create_markdown_artifact(reports_markdown(paths), key="training-reports", description="Report files")
    return paths


SUMMARY_KEYS = ("promote", "reasons", "comparison", "champion_tag", "champion_metrics", "served", "model")
"""The gate's verdict as the run's summary shows it (the challenger's full numbers are in ``metrics/``)."""


@task(name="gate", cache_policy=NO_CACHE)
def gate(project_dir: str, report: dict[str, Any]) -> RunGate:
    """The run's challenger (``gate.challenger``) against the champion, both as served
    (:func:`recsys.registry.comparison.gate_run`)."""
    project = Path(project_dir)
    verdict = gate_run(project, load_params(project / PARAMS_FILE), report)
    create_markdown_artifact(verdict.markdown(), key="gate-decision", description="Gate")
    return verdict


@task(name="package", cache_policy=NO_CACHE)
def package(project_dir: str, verdict: RunGate, candidate: bool = False) -> tuple[str | None, str | None]:
    """Save and promote the challenger when the gate says so, then ``bentoml build`` if there is a bentofile.

    With ``gate.online: required`` (and a champion to compare with) a challenger that passes is saved as a
    candidate but not promoted: an online experiment decides (:mod:`flows.experiment`). ``candidate``
    (``recsys run --candidate``) saves the challenger as a candidate whatever the offline gate said, so
    listeners can judge a model the held-out history does not favour (:meth:`RunGate.placement`).

    Returns
    -------
    tuple
        The champion's tag after this run (None when there is none), and the candidate's tag awaiting an
        experiment (None unless ``gate.online`` held one back).
    """
    from recsys import registry

    logger = get_run_logger()
    root = Path(project_dir)
    params = load_params(root / PARAMS_FILE)
    placement = verdict.placement(params.gate.online, candidate)
    if placement == KEEP:
        logger.info("gate kept the champion %s: nothing to package", verdict.champion_tag)
        return verdict.champion_tag, None
    tag = registry.package_project(
        root, verdict.challenger, params.model_dump(mode="json"), source_model=verdict.model
    )
    if placement == HOLD:
        # Listeners decide: `recsys experiment start --challenger <tag>`, then `decide`.
        logger.info("candidate %s awaits an online experiment", tag)
        return verdict.champion_tag, tag
    registry.promote(tag)
    logger.info("promoted %s to champion", tag)
    try:
        publish_champion(tag, feedback_url(root.resolve()), params.dataset.name)
    except RecsysError as err:  # the promotion stands: a replica learns of it at the next announcement
        logger.warning("%s not announced to the services (%s): POST /admin/reload on each", tag, err)
    build_bento(root)
    return tag, None


def build_bento(project_dir: Path) -> bool:
    """``bentoml build`` when the project has a ``bentofile.yaml``; True when it ran."""
    logger = get_run_logger()
    if not (project_dir / "bentofile.yaml").exists():
        logger.info("no bentofile.yaml in %s yet: skipping bentoml build", project_dir)
        return False
    command = [venv_tool("bentoml"), "build"]
    # BentoML's banner and deployment advice are not this run's news: only the built tag is logged.
    code, lines = dvc.stream_command(
        command, project_dir, dvc.stage_environment(None), "bentoml build", log_lines=False
    )
    if code != 0:
        raise RecsysError(f"bentoml build failed (exit code {code}): {' | '.join(lines[-5:])}")
    built = [line for line in lines if "Successfully built" in line]
    logger.info("bentoml build: %s", built[-1].strip() if built else "done")
    return True


@flow(name="training")
def training_flow(
    data_dir: str | None = None,
    params_overrides: dict[str, Any] | None = None,
    project_dir: str = ".",
    retries: int = 2,
    retry_delay_s: float = 10.0,
    lock_timeout_s: float = 3600.0,
    candidate: bool = False,
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
    candidate : bool
        Package the challenger as a candidate for an online experiment whatever the offline gate says
        (never promoted by this run); a first model, with no champion to test against, is promoted.

    Returns
    -------
    dict
        ``{"stages", "stage_seconds", "metrics", "decision", "model_tag", "reports", "overrides",
        "seconds"}``.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    root = Path(project_dir).resolve()
    with dvc.run_lock(root, lock_timeout_s):
        overrides = dvc.apply_overrides(root / PARAMS_FILE, params_overrides or {})
        if overrides:
            logger.info("params.yaml overrides applied: %s", overrides)
        stages = run_stages(root, data_dir, retries, retry_delay_s)
        report = read_report(root)
        k = load_params(root / PARAMS_FILE).evaluate.primary_k
        reports = publish_reports(str(root), report, k)
        verdict = gate(str(root), report)
        tag, held = package(str(root), verdict, candidate)
        decision = verdict.to_dict()
        dataset = load_params(root / PARAMS_FILE).dataset.name
    summary = {
        "dataset": dataset,
        "stages": {name: result.outcome for name, result in stages.items()},
        "stage_seconds": {name: result.seconds for name, result in stages.items()},
        "metrics": metrics_rows(report, k),
        "decision": {key: decision[key] for key in SUMMARY_KEYS},
        "model_tag": tag,
        "candidate": held,
        "reports": reports,
        "overrides": overrides,
        "seconds": round(time.perf_counter() - start, 1),
    }
    logger.info(closing_summary(summary))
    return summary


if __name__ == "__main__":
    training_flow()
