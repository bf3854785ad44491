"""The ``recsys`` command line: one command per pipeline stage, plus ``run`` for the whole job.

User errors (bad data, bad settings, unavailable sources) print one clear message and exit with code 2.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from recsys import paths, stages
from recsys.cli.cluster import cluster_app
from recsys.cli.experiment import experiment_app
from recsys.cli.monitor import monitor_app
from recsys.cli.registry import model_app
from recsys.cli.reports import model_card, report
from recsys.cli.support import ParamsOpt, echo_json, guarded, params_of
from recsys.errors import RecsysError
from recsys.offline.metrics_files import headline
from recsys.project import venv_first_on_path, venv_tool

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(
    model_app, name="model", help="The model registry (BentoML store): list, show, promote, rollback."
)
app.add_typer(experiment_app, name="experiment", help="Online experiments: start, stop, report, decide.")
app.add_typer(
    cluster_app, name="cluster", help="The reference topology on several hosts (root): up, down, status."
)

T = TypeVar("T")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    # Only our own logger: DVC and Prefect configure theirs, and a root handler would print twice.
    logger = logging.getLogger("recsys")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


@app.command()
def sources(
    params: ParamsOpt = paths.PARAMS_FILE,
    out: Path = paths.SOURCES_RECORD,
    data_dir: Annotated[
        Path | None, typer.Option(help="Local copy of the data sets (default: $RECSYS_DATA_DIR).")
    ] = None,
) -> None:
    """Record what ingest would read, by content (ingest reruns when a file it reads has changed)."""
    settings = params_of(params)
    record = guarded(lambda: stages.sources(settings, out, data_dir))
    typer.echo(f"recorded the sources of {record['dataset']} in {out}")


@app.command()
def ingest(
    params: ParamsOpt = paths.PARAMS_FILE,
    out: Path = paths.RAW_DIR,
    data_dir: Annotated[
        Path | None, typer.Option(help="Local copy of the data sets (default: $RECSYS_DATA_DIR).")
    ] = None,
) -> None:
    """Copy (from a local folder) or download (canonical URLs) the raw data, verified by checksums."""
    settings = params_of(params)
    summary = guarded(lambda: stages.ingest(settings, out, data_dir))
    typer.echo(f"ingested {summary['files']} files ({summary['bytes']:,} bytes) in {summary['seconds']} s")


@app.command()
def prepare(
    params: ParamsOpt = paths.PARAMS_FILE, raw: Path = paths.RAW_DIR, out: Path = paths.PREPARED_DIR
) -> None:
    """Validate, clean and join the raw tables; write Parquet tables and the data-quality report."""
    settings = params_of(params)
    quality = guarded(lambda: stages.prepare(settings, raw, out))
    echo_json({"summary": quality["summary"], "joins": quality["joins"]})


@app.command()
def eda(prepared: Path = paths.PREPARED_DIR, out: Path = paths.EDA_DIR) -> None:
    """Exploratory plots, the HTML report and the popularity-bias signals of the prepared data."""
    summary = guarded(lambda: stages.eda(prepared, out))
    echo_json(summary.get("bias_signals", summary))


@app.command()
def features(
    params: ParamsOpt = paths.PARAMS_FILE,
    prepared: Path = paths.PREPARED_DIR,
    out: Path = paths.FEATURES_DIR,
) -> None:
    """Build the item-feature matrix."""
    settings = params_of(params)
    echo_json(guarded(lambda: stages.features(settings, prepared, out)))


@app.command()
def split(
    params: ParamsOpt = paths.PARAMS_FILE,
    prepared: Path = paths.PREPARED_DIR,
    out: Path = paths.SPLIT_DIR,
) -> None:
    """Make the evaluation splits."""
    settings = params_of(params)
    echo_json(guarded(lambda: stages.split(settings, prepared, out)))


@app.command()
def train(
    params: ParamsOpt = paths.PARAMS_FILE,
    features: Path = paths.FEATURES_DIR,
    split: Path = paths.SPLIT_DIR,
    out: Path = paths.MODELS_DIR,
) -> None:
    """Fit every model once with the tuned settings of params.yaml (the search is `recsys tune`)."""
    settings = params_of(params)
    echo_json(guarded(lambda: stages.train(settings, features, split, out, background=True)))


@app.command()
def tune(
    params: ParamsOpt = paths.PARAMS_FILE,
    features: Path = paths.FEATURES_DIR,
    split: Path = paths.SPLIT_DIR,
    out: Path = paths.SEARCH_DIR,
    apply: Annotated[
        bool, typer.Option(help="Write the winners into params.yaml (as dvc exp run -S).")
    ] = False,
) -> None:
    """The tuning experiment on the validation part (after `dvc repro split features`): writes the trials
    and the winning settings to reports/tuning/tuned_params.yaml for review; --apply also sets them."""
    settings = params_of(params)
    result = guarded(lambda: stages.tune(settings, features, split, out))
    if apply:
        from flows.dvc import apply_overrides

        changed = guarded(lambda: apply_overrides(params, result["tuned"]))
        typer.echo(f"params.yaml: {len(changed)} setting(s) changed: {sorted(changed)}")
    echo_json({key: result[key] for key in ("best_trial", "tuned", "tuned_file")})


@app.command()
def cv(
    folds: Annotated[int, typer.Option(min=2, help="Splits, each drawn with its own seed.")] = 5,
    runner: Annotated[str, typer.Option(help="dask (a local cluster, or --address) or threads")] = "dask",
    address: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler.")] = None,
    n_workers: Annotated[int, typer.Option(min=1, help="Workers of the local Dask cluster.")] = 2,
    params: ParamsOpt = paths.PARAMS_FILE,
    out: Path = paths.CV_DIR,
) -> None:
    """Cross-validation (after `make run`): every model trained and measured on --folds splits with their
    own seeds, as a Prefect flow with a task per fold; mean and spread per model and metric to reports/cv/."""
    from flows.cross_validation import run_cross_validation

    summary = guarded(
        lambda: run_cross_validation(
            folds, runner, address, n_workers, params_path=str(params), out_dir=str(out)
        )
    )
    echo_json({key: summary[key] for key in ("folds", "seeds", "metrics", "leads")})


@app.command()
def evaluate(
    params: ParamsOpt = paths.PARAMS_FILE,
    features: Path = paths.FEATURES_DIR,
    split: Path = paths.SPLIT_DIR,
    models: Path = paths.MODELS_DIR,
    metrics: Path = paths.METRICS_DIR,
    plots: Path = paths.PLOTS_DIR,
) -> None:
    """Ranking, beyond-accuracy, per-group and cold-start metrics of every model."""
    settings = params_of(params)
    report = guarded(lambda: stages.evaluate(settings, features, split, models, metrics, plots))
    echo_json(headline(report, settings.evaluate.primary_k))


@app.command()
def bias(
    params: ParamsOpt = paths.PARAMS_FILE,
    features: Path = paths.FEATURES_DIR,
    split: Path = paths.SPLIT_DIR,
    models: Path = paths.MODELS_DIR,
    metrics: Path = paths.METRICS_DIR,
    plots: Path = paths.PLOTS_DIR,
) -> None:
    """The run's challenger (gate.challenger): popularity re-ranking trade-off curve, default strength and
    served mitigation (metrics/bias.json)."""
    settings = params_of(params)
    report = guarded(lambda: stages.bias(settings, features, split, models, metrics, plots))
    served = report.get("mitigation", {}).get("served")
    echo_json({key: report[key] for key in ("model", "chosen", "rule")} | {"served": served})


@app.command()
def repro(
    target: Annotated[list[str] | None, typer.Argument(help="Stages to reproduce (default: all).")] = None,
) -> None:
    """Run the DVC pipeline (``dvc repro``) with this environment's ``recsys`` on the PATH."""
    guarded(lambda: reproduce(target or []))


def reproduce(targets: list[str]) -> None:
    """``dvc repro`` in-process; the stage commands find this interpreter's ``recsys`` first."""
    from dvc.cli import main as dvc_main

    venv_first_on_path(os.environ)
    code = dvc_main(["repro", *targets])
    if code != 0:
        raise RecsysError(f"dvc repro failed with exit code {code} (see the stage output above)")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 3000,
) -> None:
    """Serve the champion model with BentoML (API, web page at /, OpenAPI at /docs)."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    bentoml = venv_tool("bentoml")
    target = "recsys.serving.service:Recommender"
    os.execv(bentoml, [bentoml, "serve", target, "--host", host, "--port", str(port)])


@app.command()
def run(
    data_dir: Annotated[
        Path | None, typer.Option(help="Local copy of the data sets (default: $RECSYS_DATA_DIR).")
    ] = None,
    set_param: Annotated[
        list[str] | None,
        typer.Option("--set", "-S", help="Override a parameter, e.g. -S train.search.n_trials=2."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="A data set's settings from recsys/presets/<name>.yaml, e.g. spotify-songs."),
    ] = None,
    candidate: Annotated[
        bool,
        typer.Option(
            "--candidate",
            help="Package the challenger for an online experiment, whatever the offline gate says.",
        ),
    ] = False,
) -> None:
    """The main job: the Prefect training flow (every DVC stage, gate, package) in ephemeral mode; ends
    with a table of the metrics, the gate's verdict, the champion and the reports (the full summary:
    reports/run.json)."""
    from flows.dvc import StageFailedError, UserErrorsWithoutTraceback
    from flows.training import training_flow
    from recsys.io import write_json
    from recsys.reporting.run_summary import summary_table

    overrides = guarded(lambda: (load_preset(preset) if preset else {}) | parse_overrides(set_param or []))
    quiet = UserErrorsWithoutTraceback()
    handlers = [h for name in ("prefect", "") for h in logging.getLogger(name).handlers]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        summary = training_flow(
            data_dir=str(data_dir) if data_dir else None, params_overrides=overrides, candidate=candidate
        )
    except StageFailedError as error:
        # The documented contract: bad data or settings end in one line and exit code 2.
        typer.secho(f"error: {error.one_line}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2 if not error.transient else 1) from None
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
    write_json(paths.RUN_SUMMARY, summary)
    typer.echo(summary_table(summary | {"reports": summary["reports"] | {"summary": str(paths.RUN_SUMMARY)}}))


def load_preset(name: str) -> dict[str, Any]:
    """The dotted-key settings of ``recsys/presets/<name>.yaml`` (applied like ``-S``, which wins)."""
    import yaml

    folder = Path(__file__).parent.parent / "presets"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise RecsysError(f"no preset {name!r}; known presets: {known}")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise RecsysError(f"{path}: a preset is a mapping of dotted keys to values")
    return {str(key): value for key, value in loaded.items()}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> ``{"a.b": 3, "c": "x"}`` (values parsed as YAML scalars)."""
    import yaml

    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecsysError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


app.add_typer(monitor_app, name="monitor")

flows_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prefect flows and schedules.")
app.add_typer(flows_app, name="flows")


@flows_app.command("serve")
def flows_serve(
    data_dir: Annotated[Path | None, typer.Option(help="Raw-data folder for scheduled runs.")] = None,
) -> None:
    """Serve the nightly retraining and hourly monitoring schedules from this process (Ctrl-C stops)."""
    from flows.deployments import serve_all

    serve_all(project_dir=str(Path.cwd()), data_dir=str(data_dir) if data_dir else None)


@flows_app.command("search")
def flows_search(
    runner: Annotated[str, typer.Option(help="threads or dask")] = "threads",
    address: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler.")] = None,
) -> None:
    """The tuning experiment as Prefect tasks (threads, a local Dask cluster, or a remote one)."""
    from flows.tuning import run_search

    echo_json(guarded(lambda: run_search(runner=runner, address=address)))


app.command("model-card")(model_card)
app.command()(report)


def main() -> None:
    """The ``recsys`` script: the project's stores and data folder as ``make`` sets them, then the CLI."""
    from recsys import project

    project.apply_defaults()
    try:
        app()
    finally:
        # Prefect's "Stopping temporary server" at exit would follow a run's summary or its error: the
        # command's last line is its own.
        logging.getLogger("prefect").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
