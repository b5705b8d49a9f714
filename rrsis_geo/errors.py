"""Error hierarchy. Each error maps to one documented exit code at the CLI edge (``cli/``).

Exit codes (contract, see README):
    0   success (also "no target found": a valid, empty layer)
    2   usage error (bad option values)
    3   bad input (raster or expression)
    4   weights / model problem
    5   out of memory
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations


class RrsisError(Exception):
    """Base class of all errors rrsis_geo reports to the user as one line."""

    exit_code = 1


class UsageError(RrsisError):
    """Options that make no sense together or are out of range."""

    exit_code = 2


class BadInputError(RrsisError):
    """The raster or the expression cannot be used (unreadable, rotated, empty, ...)."""

    exit_code = 3


class WeightsError(RrsisError):
    """Model weights are missing, unreadable or do not match the model."""

    exit_code = 4


class OutOfMemoryError(RrsisError):
    """Inference ran out of memory even after the batch fallbacks."""

    exit_code = 5


EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_WEIGHTS = 4
EXIT_OOM = 5
EXIT_INTERRUPTED = 130
