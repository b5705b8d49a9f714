"""Open, describe and normalize rasters; the grid the model sees.

Everything here reads windows or decimated overviews, never the whole raster at full
resolution, so memory does not grow with the raster size.

Public API:
    RasterInfo, open_raster, check_for_segmentation, parse_bands, valid_mask,
    read_overview, overview_is_sampled, coarse_valid_mask, bounded_gdal_cache, Normalizer,
    parse_value_range, compute_normalizer, WorkGrid, make_work_grid.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
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

from rrsis_geo.errors import BadInputError, UsageError

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


def _one_line(text: str) -> str:
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
        msg = _one_line(str(exc))
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
            raise BadInputError(network_error(p, _one_line(str(exc)))) from None
        raise BadInputError(
            f"{p}: cannot read pixel data (the file is truncated or corrupt)"
        ) from None


def check_for_segmentation(info: RasterInfo) -> None:
    """Refuse rasters ``info`` can describe but ``segment`` cannot use.

    Raises:
        BadInputError: no CRS, complex pixel values, or a palette (colour-table) raster.
    """
    if info.crs is None and info.has_gcps:
        raise BadInputError(
            f"{info.path}: raster is georeferenced by GCPs only; warp it first with gdalwarp"
        )
    if info.crs is None:
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
        UsageError: not 1 or 3 integers, or an index outside 1..count.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return info.rgb_bands()
    if isinstance(spec, str):
        try:
            values = [int(v) for v in spec.replace(" ", "").split(",")]
        except ValueError:
            raise UsageError(
                f"--bands must be 1 or 3 comma-separated integers, got {spec!r}"
            ) from None
    else:
        values = [int(v) for v in spec]
    if len(values) not in (1, 3):
        raise UsageError(f"--bands takes 1 or 3 band numbers, got {len(values)}: {spec!r}")
    for v in values:
        if not 1 <= v <= info.count:
            raise UsageError(
                f"--bands: band {v} does not exist; the raster has bands 1..{info.count}"
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


# A whole-raster pass decodes at most about this many native pixels (~1-3 s); a bigger raster
# without usable overviews is sampled block by block instead, so ``info`` stays quick.
DECODE_BUDGET_PIXELS = 64_000_000


def _decimation(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Integer (fx, fy) so that (width // fx) * (height // fy) <= max_pixels, both >= 1."""
    max_pixels = max(1, max_pixels)
    f = max(1, math.ceil(math.sqrt(width * height / max_pixels)))
    fx = min(f, width)
    fy = max(1, min(height, math.ceil(width * height / (max_pixels * fx))))
    return fx, fy


def _decoded_pixels(src: DatasetReader, fx: int, fy: int) -> int:
    """Native-resolution pixels GDAL decodes for a whole-raster read decimated by (fx, fy)."""
    try:
        usable = [o for o in src.overviews(1) if o <= min(fx, fy)]
    except RasterioError:
        usable = []
    o = max(usable, default=1)
    return src.width * src.height // (o * o)


def _read_strips(
    src: DatasetReader, bands: list[int], fx: int, fy: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decimated picture of the whole raster, read strip by strip so every block is decoded once."""
    h, w = max(1, src.height // fy), max(1, src.width // fx)
    bh = src.block_shapes[0][0]
    rows_per = max(1, math.ceil(max(bh, 256) / fy))  # output rows per strip
    data = np.empty((len(bands), h, w), np.float32)
    valid = np.empty((h, w), bool)
    for i0 in range(0, h, rows_per):
        i1 = min(h, i0 + rows_per)
        win = Window(0, i0 * fy, w * fx, (i1 - i0) * fy)
        data[:, i0:i1] = src.read(bands, window=win, out_shape=(len(bands), i1 - i0, w))
        valid[i0:i1] = src.dataset_mask(window=win, out_shape=(i1 - i0, w)) > 0
    return data, valid


def _read_sampled(
    src: DatasetReader, bands: list[int], max_pixels: int, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic of windows sampled on a regular lattice (statistics only, not a map)."""
    bh, bw = src.block_shapes[0]
    wh = min(src.height, max(256, min(bh, 1024)))
    ww = min(src.width, 1024 if bw >= src.width else max(256, min(bw, 1024)))
    # pixels GDAL decodes per window: whole blocks (a strip layout decodes full rows)
    cost = (math.ceil(wh / bh) * bh) * (math.ceil(ww / bw) * bw)
    n = max(1, budget // max(1, cost))
    aspect = src.width / src.height
    gx = max(1, min(src.width // ww, round(math.sqrt(n * aspect))))
    gy = max(1, min(src.height // wh, n // gx))
    per_window = max(1, max_pixels // (gx * gy))
    fx, fy = _decimation(ww, wh, per_window)
    oh, ow = max(1, wh // fy), max(1, ww // fx)
    data = np.empty((len(bands), gy * oh, gx * ow), np.float32)
    valid = np.empty((gy * oh, gx * ow), bool)
    for j in range(gy):
        # window rows centred in lattice cells, snapped to block boundaries (whole-block reads)
        row = int((j + 0.5) * src.height / gy - wh / 2) // bh * bh
        row = max(0, min(src.height - wh, row))
        for i in range(gx):
            col = int((i + 0.5) * src.width / gx - ww / 2) // bw * bw
            col = max(0, min(src.width - ww, col))
            win = Window(col, row, ow * fx, oh * fy)
            sl = (slice(j * oh, (j + 1) * oh), slice(i * ow, (i + 1) * ow))
            data[:, sl[0], sl[1]] = src.read(bands, window=win, out_shape=(len(bands), oh, ow))
            valid[sl] = src.dataset_mask(window=win, out_shape=(oh, ow)) > 0
    return data, valid


def overview_is_sampled(
    src: DatasetReader, max_pixels: int = 1_000_000, decode_budget: int | None = None
) -> bool:
    """True when :func:`read_overview` samples windows instead of decimating the whole raster."""
    budget = DECODE_BUDGET_PIXELS if decode_budget is None else decode_budget
    fx, fy = _decimation(src.width, src.height, max_pixels)
    return _decoded_pixels(src, fx, fy) > budget


def coarse_valid_mask(
    src: DatasetReader, max_pixels: int = 1_000_000, decode_budget: int | None = None
) -> tuple[np.ndarray, int, int] | None:
    """Decimated valid-data map of the whole raster, or None when that would cost too much.

    Coarse pixel (i, j) is the native pixel near the centre of the native cell
    [i*fy, (i+1)*fy) x [j*fx, (j+1)*fx) (nearest decimation), so a True proves valid data
    inside that cell; a False proves nothing.

    Returns:
        (mask bool [H // fy, W // fx], fx, fy), or None for a raster larger than
        ``decode_budget`` pixels without usable overviews.
    """
    budget = DECODE_BUDGET_PIXELS if decode_budget is None else decode_budget
    fx, fy = _decimation(src.width, src.height, max_pixels)
    if _decoded_pixels(src, fx, fy) > budget:
        return None
    h, w = max(1, src.height // fy), max(1, src.width // fx)
    rows_per = max(1, math.ceil(max(src.block_shapes[0][0], 256) / fy))
    mask = np.empty((h, w), bool)
    try:
        with bounded_gdal_cache():
            for i0 in range(0, h, rows_per):
                i1 = min(h, i0 + rows_per)
                win = Window(0, i0 * fy, w * fx, (i1 - i0) * fy)
                mask[i0:i1] = src.dataset_mask(window=win, out_shape=(i1 - i0, w)) > 0
    except (RasterioError, OSError):
        raise BadInputError(
            f"{src.name}: cannot read the valid-data mask (truncated or corrupt file?)"
        ) from None
    return mask, fx, fy


def read_overview(
    src: DatasetReader,
    bands: Sequence[int],
    max_pixels: int = 1_000_000,
    decode_budget: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decimated read of the whole raster for statistics, in bounded time and memory.

    GDAL uses overviews when present. Without overviews a raster of more than
    ``decode_budget`` pixels is sampled: windows on a regular lattice, mosaicked. Reads go
    strip by strip (or window by window) with a capped GDAL cache.

    Args:
        src: open raster.
        bands: 1-based band indexes.
        max_pixels: upper bound on rows*cols of the result.
        decode_budget: most native pixels decoded before switching to sampling
            (None = ``DECODE_BUDGET_PIXELS``).

    Returns:
        (data float32 [len(bands), h, w], valid bool [h, w]); non-finite values are invalid.
        A faithful decimated picture unless sampled (then a mosaic of windows).
    """
    bands = [int(b) for b in bands]
    budget = DECODE_BUDGET_PIXELS if decode_budget is None else decode_budget
    fx, fy = _decimation(src.width, src.height, max_pixels)
    try:
        with bounded_gdal_cache():
            if _decoded_pixels(src, fx, fy) <= budget:
                data, valid = _read_strips(src, bands, fx, fy)
            else:
                data, valid = _read_sampled(src, bands, max_pixels, budget)
    except (RasterioError, OSError):
        raise BadInputError(
            f"{src.name}: cannot read pixel data (the file is truncated or corrupt)"
        ) from None
    valid &= np.isfinite(data).all(axis=0)
    return data, valid


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
        msg = _one_line(str(exc))
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

    def __post_init__(self) -> None:
        # default: native grid (older callers build WorkGrid without the native size)
        if self.native_width <= 0:
            object.__setattr__(self, "native_width", round(self.width / self.scale_xy[0]))
        if self.native_height <= 0:
            object.__setattr__(self, "native_height", round(self.height / self.scale_xy[1]))

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
