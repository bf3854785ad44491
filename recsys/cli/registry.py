"""``recsys model ...``: list, inspect, promote and roll back the models in the BentoML store.

Mount with ``app.add_typer(model_app, name="model")``. Registry errors print one line and exit with code 2.
Promotions and rollbacks take the project's run lock (the current folder's), as every flow that promotes does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from recsys.cli.support import guarded

model_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
T = TypeVar("T")

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar="BENTOML_HOME", help="The BentoML home (default: $BENTOML_HOME, ~/bentoml)."
    ),
]
SHOWN_METRICS: tuple[str, ...] = ("ndcg@10", "precision@10", "coverage@10", "arp@10", "auc")
PROMOTION_LOCK_TIMEOUT_S = 30.0
"""How long a promotion by hand waits for a training or retraining run to release the project's lock."""


@model_app.command("list")
def list_command(home: HomeOpt = None) -> None:
    """Every stored model, oldest first, with its stage and headline metrics."""
    from recsys import registry

    models = guarded(lambda: registry.list_models(home))
    if not models:
        typer.echo(f"no {registry.model_name()} models in {registry.bentoml_home(home)}")
        return
    header = ["tag", "stage", "created (UTC)", "served at", *SHOWN_METRICS, "data", "commit"]
    rows = [
        [
            info.tag,
            info.stage,
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{info.candidate['bias_strength']:g}",
            *(_number(info.metrics.get(name)) for name in SHOWN_METRICS),
            str(info.metadata.get("data_version", ""))[:12],
            str(info.metadata.get("git_commit", ""))[:8],
        ]
        for info in models
    ]
    typer.echo(_table(header, rows))
    typer.echo(
        "metrics as served: re-ranked against popularity at the 'served at' strength (bias.serve); the table"
        " of `recsys run` shows each model unmitigated (strength 0)"
    )


@model_app.command("show")
def show_command(
    tag: Annotated[str, typer.Argument(help="A tag, a version (prefix) or 'champion'.")] = "champion",
    home: HomeOpt = None,
) -> None:
    """One model's stage, labels, metadata (params, metrics, data version, commit) and size, as JSON."""
    from recsys import registry

    info = guarded(lambda: registry.get_model(tag, home))
    typer.echo(json.dumps(info.to_dict(), indent=2, sort_keys=True, default=str))


@model_app.command("promote")
def promote_command(
    tag: Annotated[str, typer.Argument(help="The tag (or version) to make the champion.")],
    home: HomeOpt = None,
) -> None:
    """Make TAG the champion; the previous champion is retired (kept for rollback)."""
    from recsys import registry

    before = guarded(lambda: registry.champion(home))
    after = guarded(lambda: _locked(lambda: registry.promote(tag, home)))
    if before is not None and before.tag == after.tag:
        typer.echo(f"{after.tag} is already the champion")
        return
    retired = f"; {before.tag} retired" if before is not None else " (first champion)"
    typer.echo(f"promoted {after.tag} to champion{retired}")
    _publish(after.tag, home)


@model_app.command("rollback")
def rollback_command(home: HomeOpt = None) -> None:
    """Restore the most recently retired model; the current champion is marked rolled_back."""
    from recsys import registry

    before = guarded(lambda: registry.champion(home))
    restored = guarded(lambda: _locked(lambda: registry.rollback(home)))
    demoted = f"{before.tag} is rolled_back; " if before is not None else ""
    typer.echo(f"rolled back: {demoted}{restored.tag} is the champion again")
    _publish(restored.tag, home)


def _publish(tag: str, home: Path | None) -> None:
    """Announce the new champion to every service replica (:mod:`recsys.registry.publishing`); a store that is
    down is reported, not fatal: the promotion stands, and ``POST /admin/reload`` reaches one service."""
    from recsys.errors import RecsysError
    from recsys.feedback.store import feedback_url
    from recsys.registry.publishing import publish_champion

    try:
        published = publish_champion(tag, feedback_url(Path.cwd()), home=home)
    except RecsysError as err:
        typer.echo(f"not announced to the services ({err}): POST /admin/reload on each", err=True)
        return
    if published["announced"] is not None:
        typer.echo(f"announced {tag}: every service replica loads it within a few seconds")


def _locked(change: Callable[[], T]) -> T:
    """Run a promotion under the project's run lock (:mod:`recsys.run_lock`), as the flows do."""
    from recsys.run_lock import run_lock

    with run_lock(Path.cwd(), PROMOTION_LOCK_TIMEOUT_S):
        return change()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
