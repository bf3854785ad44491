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
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recsys import paths
from recsys.cli.support import guarded
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from recsys.serving.state import ServingState

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


@experiment_app.command()
def replay(
    challenger: Annotated[str, typer.Option(help="The model tag to estimate (recsys model list).")],
    feedback_url: StoreOpt = None,
    bias_strength: Annotated[
        float | None,
        typer.Option(help="The challenger's popularity re-ranking strength (default: its own)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the estimate goes.")] = paths.REPORTS_DIR / "replay.json",
    params_file: ParamsOpt = paths.PARAMS_FILE,
) -> None:
    """Estimate how the challenger's lists would have been liked, from the served log alone: the lists the
    service showed (exploring, with each item's logged propensity) and the likes they drew, weighed by inverse
    propensity (IPS and self-normalised IPS, 95 % intervals per listener). Nobody meets the challenger."""
    estimate = guarded(lambda: measure_replay(challenger, feedback_url, out, params_file, bias_strength))
    typer.echo(json.dumps(estimate, indent=2))


def measure_replay(
    challenger: str,
    feedback_url: str | None,
    out: Path,
    params_file: Path,
    bias_strength: float | None = None,
) -> dict[str, Any]:
    """:func:`recsys.experiments.replay.replay` of the model ``challenger`` on the store's served log, written
    to ``out``: the challenger ranks every listener of a replayable list as it would serve them (the list as
    trained, their dislikes left out, erased listeners unknown, as many items as each logged list holds)."""
    import pandas as pd

    from recsys import registry
    from recsys.config import load_params
    from recsys.experiments.replay import replay as estimate
    from recsys.experiments.replay import replayable
    from recsys.feedback.store import FeedbackStore
    from recsys.feedback.store import feedback_url as default_url
    from recsys.feedback.tables import Served
    from recsys.io import write_json
    from recsys.serving.state import ServingState

    settings = load_params(params_file).experiment
    artifact = registry.load_artifact(challenger)
    state = ServingState(artifact, artifact.bias_strength if bias_strength is None else bias_strength)
    with FeedbackStore(feedback_url or default_url(), create=False) as store:
        if store.is_revoked(state.version):
            raise RecsysError(f"{state.version} holds an erased listener's feedback: revoked, never replayed")
        # An erased listener the model still holds feedback of is unknown to it, as on the service.
        state.hide_erased(frozenset(store.erasure_watermarks()[0]), store.pseudonym)
        served, events = store.served_frame(), store.export_frame()
        lists = replayable(served)
        users = sorted(set(lists[Served.USER]))
        disliked = {user: store.disliked_items(user) for user in users}
    if lists.empty:
        raise RecsysError(
            "no logged list carries propensities: serve with exploration on (params.yaml explore.share, "
            "RECSYS_EXPLORE_SHARE) and the served log on, then replay"
        )
    lengths = lists.groupby(Served.USER)[Served.ITEMS].agg(lambda col: sorted({len(items) for items in col}))
    ranked = challenger_lists(state, lengths.to_dict(), disliked)
    horizon = pd.Timedelta(hours=settings.horizon_hours)
    report = {"challenger": state.version, "bias_strength": state.bias_strength}
    report |= estimate(served, events, ranked, horizon, settings.alpha)
    write_json(out, report)
    return report


def challenger_lists(
    state: ServingState, lengths: dict[str, list[int]], disliked: dict[str, set[str]]
) -> dict[tuple[str, int], list[str]]:
    """The ``k`` items the model of ``state`` would show each known listener for each ``k`` of ``lengths``
    (``user -> list lengths``; as trained, their dislikes left out), keyed ``(user, k)``: a calibrated list
    of 5 is not the first 5 of its list of 10. Listeners it does not know get none (it would answer a
    popularity list)."""
    from recsys.serving import logic
    from recsys.serving.schemas import RecommendRequest

    ranked = {}
    for user, ks in lengths.items():
        for k in ks:
            request = RecommendRequest(user_id=user, k=k, session=False)
            answer = logic.recommend(state, request, disliked.get(user, set()))
            if not answer["cold_start"]:
                ranked[(user, k)] = [item["item_id"] for item in answer["items"]]
    return ranked


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
