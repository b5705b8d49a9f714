"""The work grid: the pixel grid the model sees, the raster's extent resampled to a target
ground resolution (:class:`WorkGrid`, :func:`make_work_grid`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.geo.raster import RasterInfo

#: a work grid narrower than this (where the raster is not) has collapsed (see make_work_grid)
MIN_GRID_SIDE = 8


@dataclass(frozen=True)
class WorkGrid:
    """The pixel grid the model sees: the raster's extent, resampled to a target resolution.

    Attributes:
        width, height: size in work-grid pixels.
        transform: affine of the work grid (same origin and CRS as the raster).
        crs: the raster's CRS.
        scale: native pixel size / work pixel size (mean of x and y; 1.0 = native,
            0.5 = the model sees half as many pixels per side).
        scale_xy: (x, y) scale, exact: ``width / native_width``, ``height / native_height``.
        res_m: work pixel size in metres (None when the CRS is unknown).
        native_width, native_height: the raster's size in native pixels.
    """

    width: int
    height: int
    transform: Affine
    crs: CRS | None
    scale: float = 1.0
    scale_xy: tuple[float, float] = (1.0, 1.0)
    res_m: float | None = None
    native_width: int = 0
    native_height: int = 0

    @property
    def res(self) -> tuple[float, float]:
        """(xres, yres) of the work grid in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def is_native(self) -> bool:
        return self.scale_xy == (1.0, 1.0)

    def to_native(self, window: Window) -> Window:
        """A work-grid window (inside the grid) in native pixels (fractional when resampled).

        Edges are computed as exact ratios and clamped, so a window that ends on the grid's
        edge ends exactly on the raster's edge (GDAL refuses windows past it).
        """
        if self.is_native:
            return window
        kx = self.native_width / self.width
        ky = self.native_height / self.height
        x0 = min(self.native_width, max(0.0, window.col_off * kx))
        y0 = min(self.native_height, max(0.0, window.row_off * ky))
        x1 = min(float(self.native_width), (window.col_off + window.width) * kx)
        y1 = min(float(self.native_height), (window.row_off + window.height) * ky)
        return Window(x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "transform": list(self.transform)[:6],
            "scale": self.scale,
            "scale_xy": list(self.scale_xy),
            "res_m": self.res_m,
            "native_width": self.native_width,
            "native_height": self.native_height,
        }


def make_work_grid(
    info: RasterInfo, target_res_m: float | None, max_upsample: float = 8.0
) -> WorkGrid:
    """The grid tiles are read on: native, or resampled to ``target_res_m`` metres per pixel.

    With a target resolution, x and y are scaled separately so that work pixels are square in
    metres (this matters for geographic CRSs away from the equator). The extent is unchanged:
    the grid spans exactly the raster's bounds.

    Args:
        info: the raster.
        target_res_m: metres per work pixel, or None for the native grid.
        max_upsample: refuse grids more than this many times finer than native (per axis).

    Raises:
        UsageError: target_res_m <= 0, or more upsampling than ``max_upsample``.
        BadInputError: a target resolution on a raster without CRS, or a grid that collapses
            to fewer than ``MIN_GRID_SIDE`` pixels on a side where the raster has more (pixels
            far from square on the ground, e.g. EPSG:4326 near a pole).
    """
    res_m: float | None
    if target_res_m is None:
        try:
            res_m = info.ground_resolution_m() if info.crs is not None else None
        except BadInputError:
            res_m = None
        return WorkGrid(
            info.width, info.height, info.transform, info.crs, 1.0, (1.0, 1.0), res_m,
            info.width, info.height,
        )
    target = float(target_res_m)
    if not (math.isfinite(target) and target > 0):
        raise UsageError(f"--gsd must be a positive number of metres, got {target_res_m!r}")
    mx, my = info.ground_resolution_xy_m()
    sx, sy = mx / target, my / target
    if max(sx, sy) > max_upsample:
        raise UsageError(
            f"--gsd {target:g} m would upsample the raster's {min(mx, my):.3g} m pixels "
            f"{max(sx, sy):.1f}x (limit {max_upsample:g}x); choose a coarser --gsd"
        )
    width = max(1, round(info.width * sx))
    height = max(1, round(info.height * sy))
    if width < min(MIN_GRID_SIDE, info.width) or height < min(MIN_GRID_SIDE, info.height):
        why = ("its pixels are far from square on the ground (a geographic CRS near a pole?): "
               "warp it to a projected CRS first (gdalwarp -t_srs)"
               if max(mx, my) > 2 * min(mx, my) else "too few pixels for the model")
        raise BadInputError(
            f"{info.path}: at {target:g} m per work pixel the raster collapses to {width} x "
            f"{height} pixels (native pixels {mx:.3g} m x {my:.3g} m); {why}, or use "
            "--gsd native"
        )
    exact = (width / info.width, height / info.height)
    transform = info.transform @ Affine.scale(info.width / width, info.height / height)
    return WorkGrid(
        width=width,
        height=height,
        transform=transform,
        crs=info.crs,
        scale=math.sqrt(exact[0] * exact[1]),
        scale_xy=exact,
        res_m=math.sqrt((mx / exact[0]) * (my / exact[1])),
        native_width=info.width,
        native_height=info.height,
    )
