"""Options shared by several commands, and the one place where errors become exit codes."""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from rrsis_geo.errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OOM, EXIT_TERMINATED,
                              EXIT_USAGE, RrsisError, Terminated)
from rrsis_geo.safety import os_error_message


#: set by ``rrsis-geo --debug`` or ``RRSIS_GEO_DEBUG=1``: unexpected errors show their traceback
DEBUG = False


def debug_enabled() -> bool:
    return DEBUG or os.environ.get("RRSIS_GEO_DEBUG", "").strip() not in ("", "0", "no", "false")


def error_line(message: str) -> str:
    """``rrsis-geo: error: ...``: the message on one line, printable in any terminal encoding."""
    text = " ".join(str(message).split()) or "error"
    # the line must be printable whatever the terminal's encoding (a path may hold odd bytes)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"rrsis-geo: error: {text}"


def fail(message: str, code: int) -> None:
    """Print one ``rrsis-geo: error: ...`` line on stderr and exit with ``code``."""
    click.echo(error_line(message), err=True)
    sys.exit(code)


def _unexpected(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"unexpected {type(exc).__name__}" + (f": {first}" if first else "")


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a click callback: every error → one line + documented exit code, never a traceback.

    Our errors carry their exit code; Ctrl-C → 130, SIGTERM → 143, ``MemoryError`` → 5, a
    disk full or read-only output → 2; anything else is a bug or an unforeseen condition: one
    line with exit 1 and a hint to rerun with ``--debug``, which prints the traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RrsisError as exc:
            if debug_enabled():
                traceback.print_exc()
            fail(str(exc), exc.exit_code)
        except Terminated:
            fail("terminated (SIGTERM); an interrupted segment keeps its finished tiles: rerun "
                 "it with --resume to continue", EXIT_TERMINATED)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or --tile-size", EXIT_OOM)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors end
            if debug_enabled():
                traceback.print_exc()
            if isinstance(exc, OSError):
                msg = os_error_message(exc, exc.filename or "the output folder")
                if msg:
                    fail(msg, EXIT_USAGE)
            fail(f"{_unexpected(exc)} (rerun with --debug for the traceback)", EXIT_INTERNAL)

    return wrapper


def install_signal_handlers() -> None:
    """SIGTERM (schedulers, ``timeout``, container stops, the QGIS plugin's Cancel) ends a run
    like Ctrl-C: clean-up runs and an interrupted segment keeps its tiles for ``--resume``."""

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        pass


def weights_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--weights PATH|URL``: defaults to the demo model shipped inside the package."""
    return click.option(
        "--weights",
        type=str,  # checked by the loader: one line with exit 4, not click's usage text
        default=None,
        help="Model weights: our .safetensors (+ .json config beside it) or an official FIANet "
        ".pth checkpoint; also an https:// URL or hf://OWNER/REPO[@REV]/FILE, downloaded once "
        "into ~/.cache/rrsis_geo ($RRSIS_GEO_CACHE). Default: $RRSIS_GEO_WEIGHTS, else the demo "
        "model installed with the package.",
    )(func)


DEVICE_HELP = "Where the model runs: auto (CUDA when available, else CPU), cpu, cuda or cuda:N."


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    text = (value or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise click.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    return text


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--device",
        type=str,
        metavar="auto|cpu|cuda|cuda:N",
        default="auto",
        show_default=True,
        callback=_check_device,
        help=DEVICE_HELP,
    )(func)


def threads_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N``: torch's CPU threads (``segment-many``: per worker)."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads torch uses for the model (segment-many: per worker). Default: all "
        "cores (segment-many: cores / workers). On a machine shared with other work, fewer "
        "threads than cores is often faster.",
    )(func)
