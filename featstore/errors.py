"""Exceptions with one clear line each. Jobs map them to exit codes (see jobs/cli.py)."""

from __future__ import annotations


class FeatstoreError(Exception):
    """Base class. str(exc) is the one line shown to the user."""


class InputError(FeatstoreError, ValueError):
    """Bad input or configuration: the job stops before writing anything (exit code 2)."""


class AnnotationError(InputError):
    """An annotation file is malformed or disagrees with another. Names the file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(InputError):
    """Unknown model, layer, option value, missing weights file, ..."""


class StoreError(InputError):
    """The store or a table in it is missing, uncommitted, or inconsistent."""
