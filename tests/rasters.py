"""Small GeoTIFFs for tests, written into a folder the test owns (usually ``tmp_path``).

Every function writes one file and returns its ``Path``. All take keyword arguments only after
the path, and all defaults give a tiny tiled 3-band uint8 UTM raster, so tests stay fast.

    from tests.rasters import write_raster, smooth_image
    path = write_raster(tmp_path / "a.tif", width=300, height=200, dtype="uint16")

Functions:
    smooth_image(width, height, count=3, dtype="uint8", seed=0) -> np.ndarray [count, H, W]
        deterministic, smooth, full-range test picture (different pattern per band).
    write_raster(path, data=None, *, width, height, count, dtype, crs, res, origin, nodata,
                 colorinterp, alpha, mask, transform, blocksize, overviews, tiled,
                 photometric, gdal_colorinterp) -> Path
        the general writer; the helpers below are thin wrappers around it.
    scene(h, w, boxes, dtype=np.uint8, bands=3) -> np.ndarray [bands, h, w]
        grey-green ground with pure red boxes, for the stand-in red segmenter.
    write_tif(path, arr, *, crs, transform, nodata, mask, photometric, res) -> Path
        an array as a 256-px tiled GeoTIFF with GDAL's own colour interpretation.
    utm_grid(h, w, res=0.5): a work-grid-like namespace (EPSG:32633, top 4,000,000 m).
    utm_raster / geographic_raster: EPSG:32633 at 0.5 m / EPSG:4326 near 45°N (~0.5 m).
    nodata_border_raster: a border of ``border`` px holding the nodata value.
    alpha_raster: RGBA, alpha 0 on the left ``border`` columns.
    masked_raster: internal GDAL mask, 0 on the top ``border`` rows.
    rotated_raster: a rotated geotransform (10°).
    truncated_raster: a valid GeoTIFF cut to 60 % of its bytes.
    not_a_raster: a text file with a .tif name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

UTM = "EPSG:32633"
WGS84 = "EPSG:4326"
UTM_ORIGIN = (500_000.0, 5_000_000.0)  # (left, top) in metres
GEO_ORIGIN = (15.0, 45.0)  # (lon, lat) of the top-left corner


def smooth_image(
    width: int, height: int, count: int = 3, dtype: str = "uint8", seed: int = 0
) -> np.ndarray:
    """Deterministic smooth picture spanning the dtype's range (floats: 0..1).

    Returns:
        array [count, height, width] of ``dtype``.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    bands = []
    for b in range(count):
        fx, fy = rng.uniform(1.0, 4.0, 2) * 2 * math.pi
        ph = rng.uniform(0, 2 * math.pi)
        v = 0.5 + 0.25 * np.sin(fx * x / max(width, 1) + ph)
        v = v + 0.25 * np.cos(fy * y / max(height, 1) + b)
        bands.append(np.clip(v, 0.0, 1.0))
    unit = np.stack(bands)
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return np.round(unit * (info.max - max(info.min, 0)) + max(info.min, 0)).astype(dt)
    return unit.astype(dt)


def write_raster(
    path: str | os.PathLike[str],
    data: np.ndarray | None = None,
    *,
    width: int = 64,
    height: int = 48,
    count: int = 3,
    dtype: str = "uint8",
    crs: str | None = UTM,
    res: float | tuple[float, float] = 0.5,
    origin: tuple[float, float] | None = None,
    nodata: float | None = None,
    colorinterp: Sequence[ColorInterp] | None = None,
    alpha: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    transform: Affine | None = None,
    blocksize: int = 64,
    overviews: Sequence[int] = (),
    seed: int = 0,
    tiled: bool | None = None,
    photometric: str | None = None,
    gdal_colorinterp: bool = False,
) -> Path:
    """Write a GeoTIFF.

    Args:
        path: output file.
        data: [count, H, W] pixels; default ``smooth_image(width, height, count, dtype)``.
            When given, its shape and dtype win over width/height/count/dtype.
        crs: CRS string, or None for a raster without CRS.
        res: pixel size in CRS units (one number or (x, y)).
        origin: (left, top); default UTM_ORIGIN, or GEO_ORIGIN for EPSG:4326.
        nodata: nodata value stored in the file (pixels are not changed).
        colorinterp: colour interpretation per band (default: RGB(A) for 3/4 bands when
            ``alpha`` is given or count == 3, gray otherwise).
        alpha: [H, W] uint8 alpha written as an extra band (colorinterp alpha).
        mask: [H, W] bool/uint8 internal GDAL mask (0/False = invalid).
        transform: explicit affine (overrides res/origin), e.g. a rotated one.
        blocksize: internal tile size (multiple of 16); a strip layout is used when the raster
            is smaller than one block.
        overviews: decimation factors of internal overviews to build, e.g. (2, 4).
        seed: pattern seed for the default picture.
        tiled: True tiles with ``blocksize`` whatever the raster's size (None: the rule above).
        photometric: GeoTIFF PHOTOMETRIC creation option (e.g. ``"RGB"``).
        gdal_colorinterp: leave the colour interpretation to GDAL (``colorinterp`` unused).

    Returns:
        the path written.
    """
    path = Path(path)
    if data is None:
        data = smooth_image(width, height, count, dtype, seed)
    count, height, width = data.shape
    if alpha is not None:
        data = np.concatenate([data, alpha.astype(data.dtype)[None]], axis=0)
    if transform is None:
        if isinstance(res, (int, float)):
            res = (float(res), float(res))
        if origin is None:
            origin = GEO_ORIGIN if crs == WGS84 else UTM_ORIGIN
        transform = Affine(res[0], 0.0, origin[0], 0.0, -res[1], origin[1])
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    if tiled or (tiled is None and width >= blocksize and height >= blocksize):
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if photometric:
        profile["photometric"] = photometric
    if alpha is not None:
        profile["photometric"] = "RGB" if count == 3 else "MINISBLACK"
        profile["alpha"] = "YES"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if gdal_colorinterp:
                pass
            elif colorinterp is not None:
                dst.colorinterp = list(colorinterp)
            elif alpha is not None:
                dst.colorinterp = (
                    [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
                    if count == 3
                    else [ColorInterp.gray] * count + [ColorInterp.alpha]
                )
            elif count == 3:
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            else:
                dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (count - 1)
            if mask is not None:
                dst.write_mask(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))
            if overviews:
                dst.build_overviews(list(overviews))
    return path


def utm_raster(path: str | os.PathLike[str], **kw) -> Path:
    """EPSG:32633, 0.5 m pixels (see write_raster for keywords)."""
    kw.setdefault("crs", UTM)
    kw.setdefault("res", 0.5)
    return write_raster(path, **kw)


def geographic_raster(path: str | os.PathLike[str], **kw) -> Path:
    """EPSG:4326 near 45°N with ~0.5 m square pixels (6.36e-6° x 4.5e-6°)."""
    kw.setdefault("crs", WGS84)
    kw.setdefault("res", (6.36e-6, 4.5e-6))
    return write_raster(path, **kw)


def nodata_border_raster(
    path: str | os.PathLike[str], border: int = 8, nodata: float = 0, **kw
) -> Path:
    """Picture with a ``border``-px frame set to ``nodata`` in every band; inside, no pixel
    equals nodata (values are shifted away from it)."""
    width, height = kw.pop("width", 64), kw.pop("height", 48)
    count, dtype = kw.pop("count", 3), kw.pop("dtype", "uint8")
    data = smooth_image(width, height, count, dtype, kw.pop("seed", 0))
    data = np.where(data == nodata, np.asarray(nodata + 1).astype(data.dtype), data)
    data[:, :border, :] = nodata
    data[:, -border:, :] = nodata
    data[:, :, :border] = nodata
    data[:, :, -border:] = nodata
    return write_raster(path, data, nodata=nodata, **kw)


def alpha_raster(path: str | os.PathLike[str], border: int = 8, **kw) -> Path:
    """RGBA raster (4 bands): alpha 0 on the left ``border`` columns, 255 elsewhere."""
    width, height = kw.get("width", 64), kw.get("height", 48)
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, :border] = 0
    return write_raster(path, alpha=alpha, **kw)


def masked_raster(path: str | os.PathLike[str], border: int = 8, **kw) -> Path:
    """Raster with an internal GDAL mask: invalid on the top ``border`` rows."""
    width, height = kw.get("width", 64), kw.get("height", 48)
    mask = np.ones((height, width), bool)
    mask[:border] = False
    return write_raster(path, mask=mask, **kw)


def rotated_raster(path: str | os.PathLike[str], degrees: float = 10.0, **kw) -> Path:
    """Raster whose geotransform is rotated by ``degrees``."""
    t = Affine.translation(*UTM_ORIGIN) @ Affine.rotation(degrees) @ Affine.scale(0.5, -0.5)
    return write_raster(path, transform=t, **kw)


def truncated_raster(path: str | os.PathLike[str], keep: float = 0.6, **kw) -> Path:
    """A valid GeoTIFF cut to ``keep`` of its bytes (header intact, pixel data missing)."""
    path = Path(path)
    kw.setdefault("width", 256)
    kw.setdefault("height", 256)
    write_raster(path, **kw)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])
    return path


def not_a_raster(path: str | os.PathLike[str]) -> Path:
    """A plain text file (named like a raster)."""
    path = Path(path)
    path.write_text("this is not a raster, just some words\n")
    return path


def scene(h: int, w: int, boxes: Sequence[tuple[int, int, int, int]], dtype=np.uint8,
          bands: int = 3) -> np.ndarray:
    """Grey-green ground with red boxes (r0, c0, r1, c1): ``[bands, h, w]``."""
    top = 255 if dtype == np.uint8 else 4000
    arr = np.zeros((bands, h, w), dtype=dtype)
    rng = np.random.default_rng(0)
    # grey ground with a dark-to-bright ramp so the percentile stretch stays near identity
    ramp = np.linspace(0.05, 0.95, w)[None, :] * np.ones((h, 1))
    tint = np.array([0.95, 1.0, 0.9, 1.0])[:bands]
    for b in range(bands):
        arr[b] = ((ramp * tint[b] + rng.normal(0, 0.02, (h, w))) * top).clip(0, top).astype(dtype)
    for r0, c0, r1, c1 in boxes:
        arr[0, r0:r1, c0:c1] = top
        if bands > 1:
            arr[1:3, r0:r1, c0:c1] = 0
    return arr


def write_tif(path: str | os.PathLike[str], arr: np.ndarray, *, crs: str | None = UTM,
              transform: Affine | None = None, nodata: float | None = None,
              mask: np.ndarray | None = None, photometric: str | None = None,
              res: float = 0.5) -> str | os.PathLike[str]:
    """``arr`` [C, H, W] as a GeoTIFF tiled by 256 px, colour interpretation left to GDAL.

    ``mask``: bool [H, W] valid pixels written as an internal GDAL mask. Returns ``path`` as
    given (many tests pass it on as a string or a Path).
    """
    write_raster(path, arr, crs=crs, transform=transform, res=res, origin=UTM_ORIGIN,
                 nodata=nodata, mask=mask, blocksize=256, tiled=True, photometric=photometric,
                 gdal_colorinterp=True)
    return path


def utm_grid(h: int, w: int, res: float = 0.5) -> SimpleNamespace:
    """The attributes of a work grid the stitching and vectorizing code reads (EPSG:32633)."""
    return SimpleNamespace(height=h, width=w, crs=CRS.from_epsg(32633),
                           transform=Affine(res, 0, 500000.0, 0, -res, 4000000.0))
