"""Radiometry: the global per-band linear stretch (:class:`Normalizer`) that maps raster values
to [0, 1] the same way for every tile, from percentiles of an overview read, a user value range
or the data type's range.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.geo.overview import read_overview
from rrsis_geo.geo.raster import PathLike, one_line


@dataclass(frozen=True)
class Normalizer:
    """One global linear stretch per band: ``(x - low) / (high - low)`` clipped to [0, 1].

    Attributes:
        bands: the 1-based band indexes the stretch belongs to (order of ``apply``'s channels).
        low, high: per-band values mapped to 0 and 1.
        method: "percentile", "value-range" (user) or "dtype" (fallback).
        percentiles: the percentiles used (None for a user range).
    """

    bands: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    method: str = "percentile"
    percentiles: tuple[float, float] | None = (2.0, 98.0)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Map raw values to [0, 1].

        Args:
            arr: [C, H, W] raw values, C == len(self.bands).

        Returns:
            float32 [C, H, W] in [0, 1]; NaN stays NaN (callers mask it).
        """
        if arr.shape[0] != len(self.low):
            raise ValueError(f"normalizer has {len(self.low)} bands, array has {arr.shape[0]}")
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = (np.asarray(self.high, dtype=np.float32) - np.asarray(self.low, dtype=np.float32))
        out = (arr.astype(np.float32, copy=False) - low) / span[:, None, None]
        return np.clip(out, 0.0, 1.0, out=out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bands": list(self.bands),
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "method": self.method,
            "percentiles": list(self.percentiles) if self.percentiles else None,
            "notes": list(self.notes),
        }


def parse_value_range(spec: str | Sequence[float]) -> tuple[float, float]:
    """Parse ``--value-range MIN,MAX``.

    Raises:
        UsageError: not two numbers with MIN < MAX.
    """
    if isinstance(spec, str):
        parts = spec.replace(" ", "").split(",")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
    else:
        values = [float(v) for v in spec]
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--value-range must be MIN,MAX (two numbers), got {spec!r}")
    lo, hi = values
    if not lo < hi:
        raise UsageError(f"--value-range needs MIN < MAX, got {lo},{hi}")
    return lo, hi


#: radiometric stretch choices of :func:`compute_normalizer` (``--stretch``)
STRETCHES = ("auto", "joint", "per-band", "none")


def _dtype_range(dtype: str, value: float) -> tuple[float, float]:
    """Fallback stretch for a constant band: the integer type's range, or a unit interval."""
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        ii = np.iinfo(dt)
        return float(ii.min), float(ii.max)
    if 0.0 <= value <= 1.0:
        return 0.0, 1.0
    return value - 1.0, value + 1.0


def compute_normalizer(
    path: PathLike | DatasetReader,
    bands: Sequence[int],
    value_range: str | Sequence[float] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_pixels: int = 1_000_000,
    stretch: str = "per-band",
) -> Normalizer:
    """Global radiometric stretch from a decimated read of the whole raster.

    ``stretch`` (see :data:`STRETCHES`): "per-band" percentile stretch (each band its own
    low/high), "joint" (one low/high from all bands pooled, so colour balance — and colour words
    like "blue roof" — survive), "none" (the integer dtype's full range: 8-bit imagery reaches the
    model exactly as the 8-bit chips it was trained on; floats fall back to "joint"), or "auto"
    ("none" for 8-bit rasters, "joint" otherwise).

    Invalid pixels (nodata, mask, alpha, non-finite) are ignored. A band whose percentiles
    coincide (constant band) falls back to its dtype's range. Same stretch for every tile, so
    there are no tile-to-tile brightness jumps, and uint8/uint16/float rasters of one scene
    reach the model alike.

    Args:
        path: raster path or open dataset.
        bands: 1-based band indexes (repeats allowed, e.g. (1, 1, 1)).
        value_range: "MIN,MAX" (or a pair) applied to all bands instead of statistics.
        percentiles: (low, high) percentiles in 0..100.
        max_pixels: size bound of the decimated read.

    Raises:
        UsageError: bad value_range or percentiles.
        BadInputError: unreadable raster, or no valid pixel at all.
    """
    bands = tuple(int(b) for b in bands)
    if value_range is not None:
        lo, hi = parse_value_range(value_range)
        return Normalizer(bands, (lo,) * len(bands), (hi,) * len(bands), "value-range", None)
    p_lo, p_hi = (float(percentiles[0]), float(percentiles[1]))
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise UsageError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")

    if stretch not in STRETCHES:
        raise UsageError(f"--stretch must be one of {', '.join(STRETCHES)}, got {stretch!r}")
    if isinstance(path, DatasetReader):
        return _normalizer_from(path, bands, p_lo, p_hi, max_pixels, stretch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(os.fspath(path)) as src:
                return _normalizer_from(src, bands, p_lo, p_hi, max_pixels, stretch)
    except (RasterioError, OSError) as exc:
        msg = one_line(str(exc))
        raise BadInputError(f"{os.fspath(path)}: cannot open raster ({msg})") from None


def _normalizer_from(
    src: DatasetReader, bands: tuple[int, ...], p_lo: float, p_hi: float, max_pixels: int,
    stretch: str = "per-band",
) -> Normalizer:
    unique = sorted(set(bands))
    if stretch == "auto":
        stretch = "none" if all(src.dtypes[b - 1] == "uint8" for b in unique) else "joint"
    if stretch == "none":
        dts = {np.dtype(src.dtypes[b - 1]) for b in unique}
        if all(np.issubdtype(d, np.integer) for d in dts):
            lo = min(float(np.iinfo(d).min) for d in dts)
            hi = max(float(np.iinfo(d).max) for d in dts)
            return Normalizer(bands, (lo,) * len(bands), (hi,) * len(bands), "dtype", None)
        stretch = "joint"
    data, valid = read_overview(src, unique, max_pixels)
    if not valid.any():
        raise BadInputError(
            f"{src.name}: raster has no valid pixel (everything is nodata or masked)"
        )
    stats: dict[int, tuple[float, float]] = {}
    notes: list[str] = []
    if stretch == "joint":
        values = data[:, valid].ravel()
        lo, hi = (float(v) for v in np.percentile(values, [p_lo, p_hi]))
        if not hi > lo:
            lo, hi = _dtype_range(src.dtypes[unique[0] - 1], lo)
            notes.append(f"bands are constant in the overview; using range {lo:g}..{hi:g}")
        return Normalizer(bands, (lo,) * len(bands), (hi,) * len(bands), "joint-percentile",
                          (p_lo, p_hi), tuple(notes))
    for i, b in enumerate(unique):
        values = data[i][valid]
        lo, hi = (float(v) for v in np.percentile(values, [p_lo, p_hi]))
        if not hi > lo:
            lo, hi = _dtype_range(src.dtypes[b - 1], lo)
            notes.append(f"band {b} is constant in the overview; using range {lo:g}..{hi:g}")
        stats[b] = (lo, hi)
    return Normalizer(
        bands=bands,
        low=tuple(stats[b][0] for b in bands),
        high=tuple(stats[b][1] for b in bands),
        method="percentile",
        percentiles=(p_lo, p_hi),
        notes=tuple(notes),
    )
