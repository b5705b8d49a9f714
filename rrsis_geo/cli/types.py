"""Click parameter types: flags parsed into typed values at the command-line edge.

Each type turns the text of one flag into the value the library takes (see
:mod:`rrsis_geo.option_text`): ``--gsd 0.5`` → ``0.5``, ``--batch-size auto`` → ``"auto"``.
``--bands`` is checked here but keeps its text among click's parameters (what the QGIS plugin's
contract test reads back); :func:`rrsis_geo.cli.segment.options_from` hands the library the
tuple ``(4, 3, 2)``. A bad value ends the command
before anything runs, as every other usage error does: one ``rrsis-geo: error: --flag ...``
line and exit 2 (not click's usage text).

``--roi`` stays text on the command line: besides bounds it may be a vector file, WKT or GeoJSON,
read in the raster's CRS once the raster is open (:func:`rrsis_geo.geo.roi.parse_region`), and
its messages quote it as typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rrsis_geo.errors import EXIT_USAGE, OptionError
from rrsis_geo import option_text


class OptionValueError(click.ClickException):
    """A flag's value is malformed: printed as our one error line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        from rrsis_geo.cli.options import error_line

        click.echo(error_line(self.message), err=True)


class _ParsedType(click.ParamType):
    """A click type that parses with one function of :mod:`rrsis_geo.option_text`."""

    def __init__(self, name: str, parse: Callable[[Any], Any], keep_text: bool = False) -> None:
        self.name = name
        self._parse = parse
        self._keep_text = keep_text

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        try:
            parsed = self._parse(value)
        except OptionError as exc:
            raise OptionValueError(str(exc)) from None
        return value if self._keep_text else parsed


BANDS = _ParsedType("bands", option_text.parse_band_list, keep_text=True)
BATCH_SIZE = _ParsedType("auto|N", option_text.parse_batch_size)
CHECK_BUDGET = _ParsedType("auto|N", option_text.parse_check_budget)
GSD = _ParsedType("gsd", option_text.parse_gsd)
