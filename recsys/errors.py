"""Errors that name what was wrong and where; the CLI prints them without a traceback."""

from __future__ import annotations


class RecsysError(Exception):
    """Base class: a problem the user can fix, reported as one clear message and a non-zero exit."""


class ConfigError(RecsysError):
    """``params.yaml`` or an environment setting is invalid."""


class DataError(RecsysError):
    """A data file violates its schema. The message names the file, and the row and column when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file, self.row, self.column = file, row, column
        where = ", ".join(
            part
            for part in (
                file,
                f"row {row}" if row is not None else None,
                f"column {column!r}" if column is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class SourceUnavailableError(RecsysError):
    """A data source could be neither read locally nor downloaded."""


class RegistryError(RecsysError):
    """The model store cannot do what was asked (unknown tag, inconsistent inputs, lock timeout...)."""


class NoChampionError(RegistryError):
    """No model is labelled ``stage=champion``."""


class NothingToRollBackError(RegistryError):
    """No retired model is left to restore."""
