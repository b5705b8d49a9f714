"""Error hierarchy. Each error maps to one documented exit code at the CLI edge (``cli/``).

Exit codes (contract, see README):
    0   success (also "no target found": a valid, empty layer)
    2   usage error (bad option values)
    3   bad input (raster or expression)
    4   weights / model problem
    5   out of memory
    130 interrupted (Ctrl-C, SIGINT)
    143 terminated (SIGTERM: a scheduler, ``timeout``, a container stop, the QGIS plugin's Cancel)
    1   unexpected internal error (one line; ``--debug`` shows the traceback)
"""

from __future__ import annotations


class RrsisError(Exception):
    """Base class of all errors rrsis_geo reports to the user as one line."""

    exit_code = 1


class UsageError(RrsisError):
    """Options that make no sense together or are out of range."""

    exit_code = 2


class OptionError(UsageError):
    """One option's value is malformed or out of range.

    ``field`` names the option (a field of ``SegmentOptions``, e.g. ``"bands"``) for callers of
    the Python API; the message names the command-line flag (``--bands ...``), as ``rrsis-geo``
    prints it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # a worker's error crosses the process pool intact
        return (type(self), (self.field, str(self)))


class BadInputError(RrsisError):
    """The raster or the expression cannot be used (unreadable, rotated, empty, ...)."""

    exit_code = 3


class WeightsError(RrsisError):
    """Model weights are missing, unreadable or do not match the model."""

    exit_code = 4


class OutputError(UsageError):
    """An output cannot be written where asked: it is an input, it names another output of the
    run, its folder is missing or read-only, the disk is full, or another run writes it now."""


class OutOfMemoryError(RrsisError):
    """Inference ran out of memory even after the batch fallbacks."""

    exit_code = 5


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A ``KeyboardInterrupt`` so that every clean-up path treats it like
    Ctrl-C (the scratch of a run is kept for ``--resume``); the CLI exits with 143."""


EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_WEIGHTS = 4
EXIT_OOM = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
