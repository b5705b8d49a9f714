"""Open and describe rasters: the facts every later step relies on.

:func:`open_raster` returns a :class:`RasterInfo` (size, CRS, transform, bands, nodata, masks,
overviews); :func:`check_for_segmentation` refuses rasters a run cannot use; :func:`parse_bands`
picks the three bands; :func:`valid_mask` reads a window's valid-data mask;
:func:`bounded_gdal_cache` caps GDAL's block cache for whole-raster passes.

Everything in ``geo`` reads windows or decimated overviews, never the whole raster at full
resolution, so memory does not grow with the raster size. The siblings:
:mod:`rrsis_geo.geo.overview` (decimated whole-raster reads), :mod:`rrsis_geo.geo.radiometry`
(the global stretch, :class:`~rrsis_geo.geo.radiometry.Normalizer`) and
:mod:`rrsis_geo.geo.workgrid` (the grid the model sees,
:class:`~rrsis_geo.geo.workgrid.WorkGrid`).

Public API:
    RasterInfo, open_raster, check_for_segmentation, parse_bands, valid_mask,
    bounded_gdal_cache.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.env import get_gdal_config
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from rrsis_geo.errors import BadInputError, OptionError

PathLike = str | os.PathLike[str]

# Why: a transform is "rotated" when its off-diagonal terms are not zero; tiny values come from
# floating-point noise in some writers, so compare relative to the pixel size.
_ROTATION_TOLERANCE = 1e-9


# GDAL's block cache defaults to 5 % of RAM and fills with every block a whole-raster pass
# touches, so memory would grow with the raster; reads in this package cap it.
GDAL_CACHE_BYTES = 64 * 2**20


def bounded_gdal_cache(max_bytes: int = GDAL_CACHE_BYTES) -> contextlib.AbstractContextManager:
    """A ``rasterio.Env`` capping GDAL's block cache at ``max_bytes`` (never raising a lower cap).

    Use as ``with bounded_gdal_cache(): ...`` around loops of reads. Inside such a block (an
    environment with the cap already in force) it is a no-op, and rasterio's reads inside it do
    not set up an environment of their own: entering a ``rasterio.Env`` costs ~0.06 ms, which
    adds up over thousands of tile reads.
    """
    current = get_gdal_config("GDAL_CACHEMAX")
    if rasterio.env.hasenv() and current is not None and 0 < int(current) <= max_bytes:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=int(min(int(current or max_bytes), max_bytes)))


def one_line(text: str) -> str:
    """Collapse a (GDAL) message to one line: the CLI contract is one error line."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class RasterInfo:
    """What rrsis_geo needs to know about a raster, read once from its header.

    Attributes:
        path: the file path as given.
        width, height: size in pixels.
        count: number of bands.
        dtypes: numpy dtype name of each band.
        crs: the rasterio CRS, or None when the file has none (``info`` shows it,
            ``segment`` refuses it, see :func:`check_for_segmentation`).
        transform: north-up affine transform (rotation is refused by :func:`open_raster`).
        res: (xres, yres) pixel size in CRS units, both positive.
        bounds: (left, bottom, right, top) in CRS units.
        nodata: the nodata value of band 1 (None when unset).
        colorinterp: colour interpretation name of each band ("red", "gray", "alpha", ...).
        has_alpha: one band is an alpha band.
        has_internal_mask: the file carries a GDAL per-dataset mask (internal or .msk).
        overviews: decimation factors of the overviews of band 1 (empty when none).
        block_shape: (rows, cols) of one internal block of band 1.
        driver: GDAL driver short name.
        has_gcps: georeferenced by ground control points only (no geotransform).
    """

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    res: tuple[float, float]
    bounds: tuple[float, float, float, float]
    nodata: float | None
    colorinterp: tuple[str, ...]
    has_alpha: bool
    has_internal_mask: bool
    overviews: tuple[int, ...] = ()
    block_shape: tuple[int, int] = (256, 256)
    driver: str = "GTiff"
    has_gcps: bool = False

    @property
    def is_geographic(self) -> bool:
        """True for a latitude/longitude CRS (degrees), False for projected or no CRS."""
        return bool(self.crs is not None and self.crs.is_geographic)

    @property
    def has_nodata(self) -> bool:
        """True when some pixels may be invalid (nodata value, internal mask or alpha)."""
        return self.nodata is not None or self.has_alpha or self.has_internal_mask

    def rgb_bands(self) -> tuple[int, int, int]:
        """Default 1-based band indexes shown to the model as R, G, B.

        The bands whose colour interpretation is red/green/blue when all three exist; else the
        first three non-alpha bands; a raster with one non-alpha band gives ``(b, b, b)``.
        """
        names = list(self.colorinterp)
        if all(c in names for c in ("red", "green", "blue")):
            return (names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1)
        data_bands = [i + 1 for i, c in enumerate(names) if c != "alpha"] or [1]
        if len(data_bands) >= 3:
            return (data_bands[0], data_bands[1], data_bands[2])
        return (data_bands[0],) * 3

    def ground_resolution_xy_m(self) -> tuple[float, float]:
        """Pixel size in metres along x and y.

        Projected CRS: CRS units times the unit's size in metres. Geographic CRS: geodesic
        length of one pixel step on the CRS ellipsoid at the raster's centre latitude.

        Raises:
            BadInputError: the raster has no CRS (its units are unknown).
        """
        if self.crs is None:
            raise BadInputError(
                f"{self.path}: raster has no CRS, so its pixel size in metres is unknown"
            )
        xres, yres = self.res
        if self.crs.is_geographic:
            import pyproj  # local: only geographic rasters need it

            geod = pyproj.CRS.from_user_input(self.crs.to_wkt()).get_geod()
            left, bottom, right, top = self.bounds
            lon = (left + right) / 2.0
            lat = max(-89.9, min(89.9, (bottom + top) / 2.0))
            # geodesic length of one pixel along x and along y, centred on the raster centre
            _, _, dx = geod.inv(lon - xres / 2, lat, lon + xres / 2, lat)
            _, _, dy = geod.inv(lon, lat - yres / 2, lon, lat + yres / 2)
            return (abs(dx), abs(dy))
        try:
            factor = float(self.crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - unusual CRS without linear units: assume metres
            factor = 1.0
        return (xres * factor, yres * factor)

    def ground_resolution_m(self) -> float:
        """Metres per pixel: the geometric mean of the x and y pixel sizes (area-preserving)."""
        mx, my = self.ground_resolution_xy_m()
        return math.sqrt(mx * my)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (plain numbers, strings, lists)."""
        crs = None
        if self.crs is not None:
            epsg = self.crs.to_epsg()
            crs = {
                "epsg": epsg,
                "name": _crs_name(self.crs),
                "wkt": self.crs.to_wkt(),
                "is_geographic": self.is_geographic,
            }
        try:
            ground = list(self.ground_resolution_xy_m()) if self.crs is not None else None
        except Exception:  # noqa: BLE001 - description must not fail on an odd CRS
            ground = None
        return {
            "path": self.path,
            "driver": self.driver,
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtypes": list(self.dtypes),
            "crs": crs,
            "transform": list(self.transform)[:6],
            "res": list(self.res),
            "ground_resolution_m": ground,
            "bounds": list(self.bounds),
            "nodata": _json_number(self.nodata),
            "colorinterp": list(self.colorinterp),
            "has_alpha": self.has_alpha,
            "has_internal_mask": self.has_internal_mask,
            "overviews": list(self.overviews),
            "block_shape": list(self.block_shape),
            "default_bands": list(self.rgb_bands()),
            "has_gcps": self.has_gcps,
        }


def _crs_name(crs: CRS) -> str:
    try:
        import pyproj

        return str(pyproj.CRS.from_user_input(crs.to_wkt()).name)
    except Exception:  # noqa: BLE001 - a name is only decoration
        return crs.to_string()


def _json_number(value: float | None) -> float | str | None:
    """JSON has no NaN/inf: write them as strings."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return float(value)


def open_raster(path: PathLike) -> RasterInfo:
    """Open a raster, check that it can be used, and describe it.

    Reads the header plus the last internal block of every band, which is where a truncated
    file usually fails.

    Args:
        path: raster file (any GDAL-readable format; GeoTIFF expected): a local path, a GDAL
            virtual file system path (``/vsizip/…``, ``/vsicurl/…``) or an ``http(s)://``,
            ``s3://``, ``gs://`` or ``az://`` URL (see :mod:`rrsis_geo.geo.sources`).

    Returns:
        The raster's :class:`RasterInfo`.

    Raises:
        BadInputError: missing file, not a raster, zero size, truncated or corrupt pixel
            data, or a rotated/sheared/south-up geotransform. The message is one line.
    """
    from rrsis_geo.geo.sources import gdal_path, is_local, is_remote, network_error

    given = os.fspath(path)
    p = gdal_path(given)
    if is_local(p):
        if not os.path.exists(p):
            raise BadInputError(f"{p}: no such file")
        if os.path.isdir(p):
            raise BadInputError(f"{p}: is a directory, not a raster file")
        if os.path.getsize(p) == 0:
            raise BadInputError(f"{p}: empty file (0 bytes), not a raster")
    try:
        with warnings.catch_warnings():
            # a raster without georeferencing is reported in RasterInfo, not as a warning
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(p) as src:
                info = _describe(src, p)
                _check_readable(src, p)
    except BadInputError:
        raise
    except (RasterioError, OSError) as exc:
        msg = one_line(str(exc))
        if is_remote(p):
            raise BadInputError(network_error(given, msg)) from None
        if not is_local(p) and ("does not exist" in msg or "No such file" in msg):
            raise BadInputError(f"{given}: no such file (GDAL cannot open this path)") from None
        if "not recognized" in msg or "not a supported" in msg.lower():
            raise BadInputError(f"{p}: not a raster file GDAL can read") from None
        raise BadInputError(f"{p}: cannot open raster ({msg})") from None
    return info


def _describe(src: DatasetReader, p: str) -> RasterInfo:
    if src.width <= 0 or src.height <= 0 or src.count <= 0:
        raise BadInputError(
            f"{p}: raster has zero size ({src.width}x{src.height} pixels, {src.count} bands)"
        )
    t = src.transform
    scale = max(abs(t.a), abs(t.e), 1e-300)
    if abs(t.b) > _ROTATION_TOLERANCE * scale or abs(t.d) > _ROTATION_TOLERANCE * scale:
        raise BadInputError(
            f"{p}: rotated or sheared geotransform is not supported; warp it first with gdalwarp"
        )
    crs = src.crs if src.crs else None
    if crs is not None and t.e > 0:
        raise BadInputError(
            f"{p}: south-up geotransform (positive pixel height) is not supported; "
            "warp it first with gdalwarp"
        )
    names = tuple(ci.name for ci in src.colorinterp)
    flags = src.mask_flag_enums
    has_alpha = any(c == ColorInterp.alpha for c in src.colorinterp) or any(
        MaskFlags.alpha in f for f in flags
    )
    # per-dataset without alpha = a real mask band (internal or .msk sidecar)
    has_mask = any(MaskFlags.per_dataset in f and MaskFlags.alpha not in f for f in flags)
    nodata = src.nodata
    try:
        overviews = tuple(src.overviews(1))
    except RasterioError:
        overviews = ()
    bounds = src.bounds
    return RasterInfo(
        path=p,
        width=src.width,
        height=src.height,
        count=src.count,
        dtypes=tuple(src.dtypes),
        crs=crs,
        transform=t,
        res=(abs(t.a), abs(t.e)),
        bounds=(bounds.left, bounds.bottom, bounds.right, bounds.top),
        nodata=None if nodata is None else float(nodata),
        colorinterp=names,
        has_alpha=has_alpha,
        has_internal_mask=has_mask,
        overviews=overviews,
        block_shape=tuple(src.block_shapes[0]),  # type: ignore[arg-type]
        driver=src.driver,
        has_gcps=crs is None and bool(_gcps(src)),
    )


def _gcps(src: DatasetReader) -> list:
    try:
        return list(src.gcps[0])
    except RasterioError:
        return []


def _check_readable(src: DatasetReader, p: str) -> None:
    """Read the last block of every band: a truncated file fails there."""
    bh, bw = src.block_shapes[0]
    row = ((src.height - 1) // bh) * bh
    col = ((src.width - 1) // bw) * bw
    window = Window(col, row, src.width - col, src.height - row)
    try:
        src.read(window=window)
    except (RasterioError, OSError) as exc:
        from rrsis_geo.geo.sources import is_remote, network_error

        if is_remote(p):
            raise BadInputError(network_error(p, one_line(str(exc)))) from None
        raise BadInputError(
            f"{p}: cannot read pixel data (the file is truncated or corrupt)"
        ) from None


def check_for_segmentation(info: RasterInfo, allow_no_crs: bool = False) -> None:
    """Refuse rasters ``info`` can describe but ``segment`` cannot use.

    ``allow_no_crs``: a raster without any georeferencing is accepted (``segment`` reads it in
    pixel coordinates, :mod:`rrsis_geo.geo.localframe`); one georeferenced by GCPs only is not.

    Raises:
        BadInputError: no CRS (unless allowed), GCPs only, complex pixel values, or a palette
            (colour-table) raster.
    """
    if info.crs is None and info.has_gcps:
        raise BadInputError(
            f"{info.path}: raster is georeferenced by GCPs only; warp it first with gdalwarp"
        )
    if info.crs is None and not allow_no_crs:
        raise BadInputError(
            f"{info.path}: raster has no CRS; assign one first, e.g. gdal_edit.py -a_srs EPSG:XXXX"
        )
    complex_types = sorted({d for d in info.dtypes if np.dtype(d).kind == "c"})
    if complex_types:
        raise BadInputError(
            f"{info.path}: complex pixel values ({', '.join(complex_types)}) are not imagery "
            "the model can read; convert them first (e.g. the amplitude with gdal_calc.py)"
        )
    if "palette" in info.colorinterp:
        raise BadInputError(
            f"{info.path}: palette (colour-table) raster; expand it first with "
            "gdal_translate -expand rgb"
        )


def parse_bands(spec: str | Sequence[int] | None, info: RasterInfo) -> tuple[int, int, int]:
    """The three 1-based band indexes fed to the model as R, G, B.

    Args:
        spec: "R,G,B" (e.g. "4,3,2"), a single band "N" (shown as gray, ``(N, N, N)``),
            a sequence of 1 or 3 ints, or None for :meth:`RasterInfo.rgb_bands`.
        info: the raster the bands must exist in.

    Raises:
        OptionError (a UsageError; field ``bands``): not 1 or 3 integers, or an index
            outside 1..count.
    """
    from rrsis_geo.option_text import parse_band_list

    values = parse_band_list(spec)  # the text "4,3,2" or a sequence: 1 or 3 integers
    if values is None:
        return info.rgb_bands()
    for v in values:
        if not 1 <= v <= info.count:
            raise OptionError(
                "bands", f"--bands: band {v} does not exist; the raster has bands 1..{info.count}"
            )
    if len(values) == 1:
        values = values * 3
    return (values[0], values[1], values[2])


def valid_mask(
    src: DatasetReader, window: Window | None = None, out_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Valid-data mask of a window: the GDAL dataset mask (nodata value, internal mask or alpha).

    A pixel with a nodata value is invalid only when every band holds nodata (GDAL's rule).

    Args:
        src: open raster.
        window: native-pixel window (may be fractional); None = whole raster.
        out_shape: (rows, cols) to resample to (nearest), None = window size.

    Returns:
        bool array [rows, cols], True where the data is valid.
    """
    try:
        with bounded_gdal_cache():
            mask = src.dataset_mask(window=window, out_shape=out_shape)
    except (RasterioError, OSError):
        raise BadInputError(
            f"{src.name}: cannot read the valid-data mask (truncated or corrupt file?)"
        ) from None
    return mask > 0
