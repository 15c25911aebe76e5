"""User-facing errors: one clear line, non-zero exit."""

from __future__ import annotations


class UnredactError(Exception):
    """An error caused by input or environment that the CLI reports as one line (exit code 2)."""

    exit_code = 2


class ModelError(UnredactError):
    """A model spec that cannot be resolved or loaded."""


class BackendError(UnredactError):
    """A backend that cannot be reached or used."""


class ProbeFileError(UnredactError):
    """A malformed probe file."""


class RunDirError(UnredactError):
    """A run directory that does not match the requested run."""
