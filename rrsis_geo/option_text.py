"""Text forms of option values → typed values, checked once.

The command line parses its flags with these (through the click types of
:mod:`rrsis_geo.cli.types`), so the library receives typed values: bands as a tuple of ints,
``"auto"`` or an int for counts, ``"auto"`` / ``"native"`` / a float for the resolution, a bounds
tuple or a path / geometry text for the region. :class:`rrsis_geo.inference.pipeline.SegmentOptions`
still accepts the text forms (the Python API took strings before) and parses them here.

What needs the raster (does band 5 exist, the region in the raster's CRS) is checked where the
raster is open: :func:`rrsis_geo.geo.raster.parse_bands`, :func:`rrsis_geo.geo.roi.parse_region`.

Errors are :class:`~rrsis_geo.errors.OptionError` carrying the option's field name; their text
names the command-line flag, which is what the user of ``rrsis-geo`` typed (tests pin it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Union

from rrsis_geo.errors import OptionError

#: bands fed to the model as R, G, B: three 1-based indexes, or one (shown as gray)
Bands = tuple[int, ...]
#: ``"auto"`` or a whole number of at least 1 (``batch_size``, ``check_budget``)
Count = Union[Literal["auto"], int]
#: ground resolution the model sees: ``"auto"``, ``"native"`` or metres per pixel
Gsd = Union[Literal["auto", "native"], float]
#: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS
Bounds = tuple[float, float, float, float]
#: ``single``: the one referred object; ``all``: every object above ``min_score``
Mode = Literal["single", "all"]

MODES: tuple[str, ...] = ("single", "all")

_WKT = re.compile(r"^\s*(MULTI)?POLYGON\b", re.IGNORECASE)


def parse_band_list(spec: str | Sequence[int] | None) -> Bands | None:
    """``"4,3,2"`` / ``"2"`` / a sequence of 1 or 3 ints → a tuple; None or blank → None."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, str):
        try:
            values = [int(v) for v in spec.replace(" ", "").split(",")]
        except ValueError:
            raise OptionError(
                "bands", f"--bands must be 1 or 3 comma-separated integers, got {spec!r}"
            ) from None
    else:
        values = [int(v) for v in spec]
    if len(values) not in (1, 3):
        raise OptionError("bands",
                          f"--bands takes 1 or 3 band numbers, got {len(values)}: {spec!r}")
    return tuple(values)


def _auto_or_int(value: str | int) -> Count | None:
    """``"auto"`` (any case, spaces around), the whole number ``value`` holds, or None."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def parse_batch_size(value: str | int) -> Count:
    """``batch_size``: ``"auto"`` (any case, spaces around) or a whole number of at least 1."""
    n = _auto_or_int(value)
    if n is None:
        raise OptionError("batch_size", f"--batch-size must be auto or a whole number of at "
                          f"least 1 (got {value!r})")
    if n != "auto" and n < 1:
        raise OptionError("batch_size", "--batch-size must be at least 1")
    return n


def parse_check_budget(value: str | int) -> Count:
    """``check_budget``: ``"auto"`` (any case, spaces around) or a whole number of at least 1."""
    budget = _auto_or_int(value)
    if budget is None or (budget != "auto" and budget < 1):
        raise OptionError("check_budget", "--check-budget must be auto or a whole number of at "
                          f"least 1 (got {value!r}; --no-class-check turns the check off)")
    return budget


def parse_gsd(value: str | float) -> Gsd:
    """``gsd``: ``"auto"``, ``"native"`` or a finite number of metres > 0 (→ float)."""
    if value in ("auto", "native"):
        return value  # type: ignore[return-value]
    try:
        gsd = float(value)
    except (TypeError, ValueError):
        gsd = float("nan")
    if not (math.isfinite(gsd) and gsd > 0):
        raise OptionError("gsd", "--gsd must be auto, native or a positive number of metres")
    return gsd


def parse_mode(value: str) -> Mode:
    """``mode``: ``single`` or ``all``."""
    if value not in MODES:
        raise OptionError("mode", "--mode must be single or all")
    return value  # type: ignore[return-value]


def parse_bounds_text(spec: str) -> Bounds | None:
    """``"XMIN,YMIN,XMAX,YMAX"`` → bounds; None when ``spec`` is another kind of region (a WKT
    polygon, GeoJSON text, a vector file — an existing path of that shape is a file)."""
    spec = (spec or "").strip()
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 4 or _WKT.match(spec) or Path(spec).exists():
        return None
    try:
        xmin, ymin, xmax, ymax = (float(p) for p in parts)
    except ValueError:
        raise OptionError("roi", f"--roi {spec!r}: expected XMIN,YMIN,XMAX,YMAX (numbers in the "
                          "raster's CRS), a WKT polygon or a vector file") from None
    bounds = (xmin, ymin, xmax, ymax)
    check_bounds(bounds, spec)
    return bounds


def check_bounds(bounds: Sequence[float], spec: object = None) -> Bounds:
    """Four finite numbers with XMIN < XMAX and YMIN < YMAX (``spec``: what the user wrote)."""
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise OptionError("roi", f"--roi {bounds!r}: expected four numbers XMIN, YMIN, XMAX, "
                          "YMAX in the raster's CRS") from None
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)) \
            or xmin >= xmax or ymin >= ymax:
        shown = spec if spec is not None else ",".join(f"{v:g}" for v in bounds)
        raise OptionError("roi", f"--roi {shown!r}: need XMIN < XMAX and YMIN < YMAX")
    return (xmin, ymin, xmax, ymax)


def parse_roi_value(value: str | Sequence[float] | None) -> Bounds | str | None:
    """``roi``: None, bounds (a sequence, or the text ``XMIN,YMIN,XMAX,YMAX``), or the text of
    another region (path, WKT, GeoJSON — read once the raster is open)."""
    if value is None:
        return None
    if isinstance(value, str):
        bounds = parse_bounds_text(value)
        return bounds if bounds is not None else value
    return check_bounds(value)
