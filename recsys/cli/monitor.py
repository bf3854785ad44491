"""``recsys monitor run|ui|history``: monitor now, the Evidently UI, the recorded runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from recsys import paths
from recsys.cli.support import ParamsOpt, guarded, params_of
from recsys.io import require_json
from recsys.project import venv_tool

monitor_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The monitoring history.")


@monitor_app.command("run")
def monitor_run(
    params_file: ParamsOpt = paths.PARAMS_FILE,
    evaluate: Annotated[
        bool,
        typer.Option(help="Refresh the offline metrics first (dvc repro evaluate), as the schedule does."),
    ] = True,
    feedback_url: Annotated[
        str | None,
        typer.Option(envvar="RECSYS_FEEDBACK_URL", help="The feedback store (default: the project's)."),
    ] = None,
) -> None:
    """Monitor once, now: drift of the recent feedback and popularity bias of the served lists, each against
    its threshold, recorded in the workspace (what the nightly deployment runs)."""
    from flows.monitoring import BIAS_JSON, DRIFT_JSON, drift_monitoring_flow, monitoring_flow
    from recsys.monitoring.decisions import run_lines

    params = params_of(params_file)
    if evaluate:
        monitoring_flow(project_dir=".", feedback_url=feedback_url)
        out = paths.MONITORING_DIR
        report = guarded(
            lambda: require_json(out / DRIFT_JSON, "missing: the monitoring flow did not write it")
        )
        bias = guarded(lambda: require_json(out / BIAS_JSON, "missing: the monitoring flow did not write it"))
    else:
        result = drift_monitoring_flow(project_dir=".", feedback_url=feedback_url)
        report, bias = result, result["bias"]
    typer.echo("\n".join(run_lines(report, bias, params.monitoring, params.monitoring.workspace)))


@monitor_app.command("ui")
def monitor_ui(host: str = "127.0.0.1", port: int = 8000, params_file: ParamsOpt = paths.PARAMS_FILE) -> None:
    """Start the Evidently UI on the monitoring workspace (its dashboard shows every recorded run)."""
    workspace = Path(params_of(params_file).monitoring.workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    if not any(workspace.iterdir()):
        typer.echo(
            f"no monitoring run is recorded in {workspace} yet: the UI will show no project until one is."
            " Run `recsys monitor run` (or let the nightly deployment run), then reload the page."
        )
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry
    evidently = venv_tool("evidently")
    command = [evidently, "ui", "--workspace", str(workspace), "--host", host, "--port", str(port)]
    os.execv(evidently, command)


@monitor_app.command("history")
def monitor_history(params_file: ParamsOpt = paths.PARAMS_FILE) -> None:
    """The headline numbers of every monitoring run recorded in the workspace, oldest first (JSON lines)."""
    from recsys.monitoring.workspace import read_history

    params = params_of(params_file)
    frame = guarded(lambda: read_history(Path(params.monitoring.workspace), params.dataset.name))
    for row in frame.to_dict("records"):
        stamp = row.pop("timestamp")
        values = {key: value for key, value in row.items() if value == value}  # NaN: not measured that run
        typer.echo(json.dumps({"timestamp": stamp.isoformat()} | values))
