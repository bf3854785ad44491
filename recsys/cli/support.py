"""Shared by the command-line modules: user errors become one line and exit code 2; the parameters file
option; results as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from recsys.config import Params, load_params
from recsys.errors import RecsysError

T = TypeVar("T")


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a RecsysError becomes one red line on stderr and exit code 2 (no traceback)."""
    try:
        return action()
    except RecsysError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None


ParamsOpt = Annotated[Path, typer.Option("--params", help="The parameters file.")]


def params_of(path: Path) -> Params:
    """``params.yaml`` at ``path``, validated; a bad file is a user error."""
    return guarded(lambda: load_params(path))


def echo_json(summary: Any) -> None:
    """A command's result as indented JSON on stdout."""
    typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
