"""Shared by the command-line modules: user errors become one line and exit code 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer

from recsys.errors import RecsysError

T = TypeVar("T")


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a RecsysError becomes one red line on stderr and exit code 2 (no traceback)."""
    try:
        return action()
    except RecsysError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
