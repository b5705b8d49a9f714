"""Decimated whole-raster reads: the overview (global) pass, ``info``'s value ranges and the
coarse valid-data mask. A pass decodes at most :data:`DECODE_BUDGET_PIXELS` native pixels; a
bigger raster without usable overviews is sampled block by block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from rrsis_geo.errors import BadInputError
from rrsis_geo.geo.raster import bounded_gdal_cache

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
