"""``recsys experiment ...``: run an online experiment on the service, measure it, and act on the result.

``start`` and ``stop`` call the service's admin API (``POST /admin/experiment``, token from
``$RECSYS_ADMIN_TOKEN``); ``report`` measures the experiment from the feedback store; ``decide`` runs the
experiment flow (:mod:`flows.experiment`): promote a winner, stop a loser, else wait. Mount with
``app.add_typer(experiment_app, name="experiment")``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys import paths
from recsys.cli.support import guarded
from recsys.errors import RecsysError

experiment_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ServiceOpt = Annotated[str, typer.Option(help="The service's base URL.")]
TokenOpt = Annotated[str | None, typer.Option(envvar="RECSYS_ADMIN_TOKEN", help="The admin token.")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="The parameters file.")]
StoreOpt = Annotated[
    str | None,
    typer.Option(envvar="RECSYS_FEEDBACK_URL", help="The feedback store (default: the project's)."),
]


@experiment_app.command()
def start(
    mode: Annotated[str, typer.Option(help="shadow | ab | interleave")],
    challenger: Annotated[str, typer.Option(help="The challenger's model tag (recsys model list).")],
    share: Annotated[float | None, typer.Option(help="A/B share (default: experiment.share).")] = None,
    salt: Annotated[
        str | None,
        typer.Option(help="A/B salt (default: experiment.salt, else a secret one drawn by the service)."),
    ] = None,
    traffic: Annotated[
        float, typer.Option(help="Share of listeners interleaved or shadowed (the others: the champion).")
    ] = 1.0,
    service_url: ServiceOpt = "http://127.0.0.1:3000",
    token: TokenOpt = None,
    params_file: ParamsOpt = paths.PARAMS_FILE,
) -> None:
    """Load the challenger beside the champion on every worker and run the experiment."""
    from recsys.config import load_params

    settings = guarded(lambda: load_params(params_file)).experiment
    design = {"mode": mode, "challenger": challenger, "share": settings.share if share is None else share}
    if salt or settings.salt:
        design["salt"] = salt or settings.salt
    design["traffic"] = traffic
    if mode == "ab" and not design["share"]:
        guarded(lambda: _refuse("an A/B test with share 0 sends nobody to the challenger: pass --share"))
    typer.echo(json.dumps(guarded(lambda: _admin(service_url, token, design)), indent=2))


@experiment_app.command()
def stop(service_url: ServiceOpt = "http://127.0.0.1:3000", token: TokenOpt = None) -> None:
    """Stop the running experiment: every listener meets the champion again."""
    typer.echo(json.dumps(guarded(lambda: _admin(service_url, token, {"mode": "off"})), indent=2))


@experiment_app.command()
def report(
    challenger: Annotated[str | None, typer.Option(help="Default: the latest experiment logged.")] = None,
    feedback_url: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="Where the report goes.")] = paths.REPORTS_DIR / "experiment.json",
    params_file: ParamsOpt = paths.PARAMS_FILE,
) -> None:
    """Per-arm like, skip and hit rates with confidence intervals, or the interleaving preference and its
    sign test, and the decision (challenger wins, loses, or needs more traffic)."""
    typer.echo(json.dumps(guarded(lambda: measure(challenger, feedback_url, out, params_file)), indent=2))


@experiment_app.command()
def decide(
    challenger: Annotated[str | None, typer.Option(help="Default: the latest experiment logged.")] = None,
    feedback_url: StoreOpt = None,
    service_url: Annotated[str | None, typer.Option(help="Stop the experiment and reload here.")] = None,
    token: TokenOpt = None,
) -> None:
    """The experiment flow: measure, then promote a winning challenger or stop a losing experiment."""
    from flows.experiment import experiment_flow
    from recsys.serving.settings import ADMIN_TOKEN_ENV

    if token:  # read by the flow's calls to the service, never passed as a parameter Prefect would store
        os.environ[ADMIN_TOKEN_ENV] = token
    result = guarded(lambda: experiment_flow(".", feedback_url, service_url, challenger=challenger))
    typer.echo(f"{result['decision']} -> {result['action']}: {result['reason']}")


def measure(challenger: str | None, feedback_url: str | None, out: Path, params_file: Path) -> dict[str, Any]:
    """The experiment report from the store, written to ``out``."""
    from recsys.config import load_params
    from recsys.experiments.report import measure_experiment
    from recsys.feedback.store import feedback_url as default_url

    settings = load_params(params_file).experiment
    return measure_experiment(feedback_url or default_url(), settings, challenger, out)


def _admin(service_url: str, token: str | None, design: dict[str, Any]) -> dict[str, Any]:
    from recsys.serving.admin_client import AdminClient

    return AdminClient(service_url, token or "", timeout_s=60).experiment(design).body


def _refuse(message: str) -> None:
    raise RecsysError(message)
