"""The ``rrsis_geo`` logger: what the library reports beyond progress bars and JSON lines.

The library logs to ``logging.getLogger("rrsis_geo")`` (and its children, one per module) and adds
no handler of its own: a script or notebook decides what it sees (``logging.basicConfig(level=
logging.INFO)``). The CLI installs one stderr handler through :func:`configure`, driven by the
global ``-v`` / ``-q`` flags. Progress (bars, ``--progress jsonl``) stays with
:class:`rrsis_geo.progress.Reporter`.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "rrsis_geo"
_HANDLER_FLAG = "_rrsis_geo_cli_handler"


def level_for(verbosity: int) -> int:
    """CLI verbosity (``-v`` count minus ``-q`` count) → logging level."""
    if verbosity <= -1:
        return logging.ERROR
    if verbosity == 0:
        return logging.WARNING
    if verbosity == 1:
        return logging.INFO
    return logging.DEBUG


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and logging.getLogger(LOGGER_NAME).level <= logging.DEBUG:
            text += "\n" + self.formatException(record.exc_info)
        name = record.name if record.levelno <= logging.DEBUG else ""
        return f"rrsis-geo: {record.levelname.lower()}: " + (f"[{name}] " if name else "") + text


def configure(verbosity: int = 0) -> logging.Logger:
    """Send the ``rrsis_geo`` logger to stderr at the level ``verbosity`` asks for (CLI only)."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if getattr(h, _HANDLER_FLAG, False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_FLAG, True)
    handler.setFormatter(_Format())
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    logger.propagate = False
    return logger
