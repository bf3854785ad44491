"""``recsys model-card`` and ``recsys report [--slides]``: documents of the latest run for people."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recsys import paths, specs, stages
from recsys.cli.support import ParamsOpt, guarded


def model_card(
    params: ParamsOpt = paths.PARAMS_FILE,
    metrics: Path = paths.METRICS_DIR,
    prepared: Path = paths.PREPARED_DIR,
    eda: Path = paths.EDA_DIR,
    out: Annotated[
        Path | None, typer.Option(help="Default: docs/model_card.md, or docs/model_card_<dataset>.md.")
    ] = None,
) -> None:
    """Render the data set's model card from the run's metrics and params.yaml."""
    from recsys.reporting.model_card import card_path, load_card_inputs, write_model_card

    inputs = guarded(lambda: load_card_inputs(params, metrics, prepared, eda))
    typer.echo(f"wrote {write_model_card(inputs, out or card_path(inputs.params))}")


def report(
    params: ParamsOpt = paths.PARAMS_FILE,
    metrics: Path = paths.METRICS_DIR,
    eda: Path = paths.EDA_DIR,
    monitoring: Path = paths.REPORTS_DIR / "monitoring",
    out: Annotated[
        Path | None, typer.Option(help="Default: reports/stakeholder.html, or reports/slides.html.")
    ] = None,
    feedback_url: Annotated[
        str | None,
        typer.Option(envvar="RECSYS_FEEDBACK_URL", help="The feedback store with the listeners' ratings."),
    ] = None,
    slides: Annotated[bool, typer.Option("--slides", help="A slide deck instead of the report.")] = False,
    catalogue_map: Annotated[
        bool, typer.Option("--map/--no-map", help="Include the catalogue map (~9 s on the artists).")
    ] = True,
) -> None:
    """One self-contained HTML report (or, with --slides, a slide deck) of the latest run for stakeholders."""
    import dataclasses

    from recsys.reporting.stakeholder import load_report_inputs, write_report

    ratings = _ratings(feedback_url)
    inputs = guarded(lambda: load_report_inputs(params, metrics, eda, monitoring, ratings))
    if catalogue_map:
        inputs = dataclasses.replace(inputs, catalogue_map=_catalogue_map_png(one=slides, items=inputs.items))
    if slides:
        from recsys.reporting.slides import write_slides

        typer.echo(f"wrote {write_slides(inputs, out or paths.REPORTS_DIR / 'slides.html')}")
    else:
        typer.echo(f"wrote {write_report(inputs, out or paths.REPORTS_DIR / 'stakeholder.html')}")


def _catalogue_map_png(one: bool = False, items: str = "artists") -> bytes | None:
    """The catalogue map of the project's trained hybrid (``one``: the deck's single panel), or None (with a
    note) when there is none."""
    from recsys.reporting.catalogue_map import load_map, map_figure, one_map_figure
    from recsys.reporting.html_parts import figure_png

    model, features, split, prepared = (
        paths.model_file(specs.HYBRID),
        paths.FEATURES_DIR,
        paths.SPLIT_DIR,
        paths.PREPARED_DIR,
    )
    missing = [str(path) for path in (model, features, split, prepared) if not path.exists()]
    if missing:
        typer.secho(f"note: no catalogue map: {', '.join(missing)} missing", err=True, fg=typer.colors.YELLOW)
        return None
    found = guarded(lambda: load_map(model, *stages.training_inputs(features, split), prepared))
    return figure_png(one_map_figure(found, items) if one else map_figure(found, items))


def _ratings(url: str | None) -> Any:
    """The store's ratings, or None (with a note) when there is no store or it cannot be read."""
    from recsys.feedback.store import FeedbackStore, FeedbackUnavailableError, feedback_url
    from recsys.feedback.tables import store_exists

    url = url or feedback_url()
    if not store_exists(url):
        return None  # no listener has used the page with this store yet
    try:
        with FeedbackStore(url, create=False) as store:
            return store.ratings_frame()
    except FeedbackUnavailableError as err:
        typer.secho(f"note: listeners' ratings left out: {err}", err=True, fg=typer.colors.YELLOW)
        return None
