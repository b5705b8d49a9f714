"""Options shared by several commands, and the one place where errors become exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from rrsis_geo.errors import EXIT_INTERRUPTED, EXIT_OOM, RrsisError


def fail(message: str, code: int) -> None:
    """Print one ``rrsis-geo: error: ...`` line on stderr and exit with ``code``."""
    click.echo(f"rrsis-geo: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a click callback: known errors → one line + documented exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RrsisError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or --tile-size", EXIT_OOM)

    return wrapper


def weights_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--weights PATH``: defaults to the demo model shipped in sample_data/."""
    return click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="Model weights: our .safetensors (+ .json config beside it) or an official FIANet "
        ".pth checkpoint. Default: the shipped demo model.",
    )(func)


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the model runs; auto = CUDA when available, else CPU.",
    )(func)
