"""Tile windows over the work grid, and windowed tile reads.

This is the only module that touches torchgeo's sampler API (``RasterDataset`` +
``GriddedPatchSampler``, torchgeo 0.10). torchgeo is imported inside :func:`plan_tiles`
because ``import torchgeo.samplers`` costs seconds.

torchgeo centres its grid on the raster and lets edge tiles overhang both sides; it fills the
overhang with zeros and does not say so. Here every tile keeps its own valid mask, the overhang
is filled by reflection, and tiles are read with rasterio windows (memory does not grow with
the raster).

Public API: Tile, plan_tiles, read_tile, tile_has_data, skip_empty_tiles.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.geo.overview import coarse_valid_mask
from rrsis_geo.geo.radiometry import Normalizer
from rrsis_geo.geo.raster import (
    RasterInfo,
    bounded_gdal_cache,
    check_for_segmentation,
    valid_mask,
)
from rrsis_geo.geo.workgrid import WorkGrid


@dataclass(frozen=True)
class Tile:
    """One square tile of the work grid.

    Attributes:
        index: position in the plan (row-major, top-left first).
        row_off, col_off: top-left corner in work-grid pixels; negative (or extending past the
            grid) where the tile overhangs the raster.
        size: side length in work-grid pixels.
        window_in_grid: the part of the tile inside the grid, a rasterio Window in work-grid
            pixels (integer offsets and sizes).
    """

    index: int
    row_off: int
    col_off: int
    size: int
    window_in_grid: Window

    @property
    def window(self) -> Window:
        """The whole tile (may overhang) as a work-grid Window."""
        return Window(self.col_off, self.row_off, self.size, self.size)

    @property
    def inner_slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the tile array that lie inside the grid."""
        w = self.window_in_grid
        r0 = int(w.row_off) - self.row_off
        c0 = int(w.col_off) - self.col_off
        return slice(r0, r0 + int(w.height)), slice(c0, c0 + int(w.width))

    def transform(self, grid: WorkGrid) -> Affine:
        """Affine transform of the tile array (for stitching / writing)."""
        return grid.transform @ Affine.translation(self.col_off, self.row_off)

    def to_dict(self) -> dict[str, int]:
        w = self.window_in_grid
        return {
            "index": self.index,
            "row_off": self.row_off,
            "col_off": self.col_off,
            "size": self.size,
            "inner_row_off": int(w.row_off),
            "inner_col_off": int(w.col_off),
            "inner_height": int(w.height),
            "inner_width": int(w.width),
        }


def centred_origin(centre: int, size: int, length: int) -> int:
    """Top/left of a ``size`` window centred on ``centre``, kept inside ``length`` when it fits
    (else centred on the raster, overhanging both sides)."""
    if length <= size:
        return (length - size) // 2
    return min(max(0, centre - size // 2), length - size)


def make_tile(index: int, row: int, col: int, size: int, grid: WorkGrid) -> Tile:
    """The ``size``-pixel tile of ``grid`` whose top-left corner is at (row, col) (it may
    overhang the grid; :func:`read_tile` mirrors the inside there)."""
    r0, c0 = max(0, row), max(0, col)
    r1, c1 = min(grid.height, row + size), min(grid.width, col + size)
    return Tile(index, row, col, size, Window(c0, r0, c1 - c0, r1 - r0))


def _validate(tile_size: int, overlap: int) -> None:
    if isinstance(tile_size, bool) or int(tile_size) != tile_size or tile_size < 1:
        raise UsageError(f"--tile-size must be a positive integer, got {tile_size!r}")
    if isinstance(overlap, bool) or int(overlap) != overlap or overlap < 0:
        raise UsageError(f"--overlap must be an integer >= 0, got {overlap!r}")
    if overlap >= tile_size:
        raise UsageError(f"--overlap ({overlap}) must be smaller than --tile-size ({tile_size})")


def _torchgeo_offsets(
    info: RasterInfo, grid: WorkGrid, tile_size: int, stride: int
) -> list[tuple[int, int]]:
    """(row_off, col_off) of torchgeo's GriddedPatchSampler tiles, in work-grid pixels."""
    from torchgeo.datasets import RasterDataset  # local: importing torchgeo takes seconds
    from torchgeo.samplers import GriddedPatchSampler

    xres, yres = grid.res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = RasterDataset(paths=[info.path], res=(xres, yres))
        except Exception as exc:  # noqa: BLE001 - torchgeo raises several kinds here
            raise BadInputError(f"{info.path}: torchgeo cannot index the raster ({exc})") from None
        sampler = GriddedPatchSampler(dataset, size=tile_size, stride=stride)
        left, top = info.bounds[0], info.bounds[3]
        offsets = []
        for xs, ys in sampler:
            col = round((float(xs.start) - left) / xres)
            row = round((top - float(ys.stop)) / yres)
            offsets.append((row, col))
    return offsets


def _cover_axis(offsets: Iterable[int], size: int, length: int) -> list[int]:
    """Add offsets so that tiles [o, o+size) cover every pixel of [0, length)."""
    # keep only tiles that touch the raster (defensive: torchgeo may warp odd CRSs)
    result = sorted({o for o in offsets if o < length and o + size > 0})
    if length <= size:
        # one tile holds everything; keep torchgeo's (centred) one if it covers, else centre it
        if any(o <= 0 and o + size >= length for o in result):
            return [next(o for o in result if o <= 0 and o + size >= length)]
        return [-((size - length) // 2)]
    covered_to = 0  # every pixel < covered_to is covered
    extra: list[int] = []
    for o in result:
        if o > covered_to:
            # gap [covered_to, o): fill with tiles kept inside the raster
            pos = covered_to
            while pos < o:
                start = min(pos, length - size)
                extra.append(start)
                pos = start + size
        covered_to = max(covered_to, o + size)
    pos = covered_to
    while pos < length:
        start = min(pos, length - size)
        extra.append(start)
        pos = start + size
    return sorted(set(result) | set(extra))


def plan_tiles(info: RasterInfo, grid: WorkGrid, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles over the whole work grid, from torchgeo's ``GriddedPatchSampler``.

    torchgeo 0.10 centres its grid on the raster (equal overhang on both sides). The tiles it
    yields are converted to work-grid pixel offsets; any grid row or column it leaves
    uncovered gets extra tiles, and a raster smaller than one tile gets exactly one centred
    tile. Every work-grid pixel is covered by at least one tile.

    Args:
        info: the raster (must have a CRS; see ``check_for_segmentation``).
        grid: the work grid (``make_work_grid``).
        tile_size: tile side in work-grid pixels.
        overlap: overlap between neighbouring tiles in pixels (stride = tile_size - overlap).

    Returns:
        Tiles in row-major order, ``index`` 0..n-1.

    Raises:
        UsageError: tile_size/overlap out of range (need tile_size > overlap >= 0).
        BadInputError: raster without CRS or palette raster.
    """
    _validate(tile_size, overlap)
    check_for_segmentation(info)
    tile_size, overlap = int(tile_size), int(overlap)
    offsets = _torchgeo_offsets(info, grid, tile_size, tile_size - overlap)
    rows = _cover_axis((r for r, _ in offsets), tile_size, grid.height)
    cols = _cover_axis((c for _, c in offsets), tile_size, grid.width)
    # torchgeo yields the full product of its rows and columns for a rectangular raster; using
    # the product of the (completed) axes keeps that structure and guarantees coverage.
    tiles = []
    for r in rows:
        for c in cols:
            tiles.append(make_tile(len(tiles), r, c, tile_size, grid))
    return tiles


def _reflect_pad(arr: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Pad the last two axes by mirroring (edge pixel repeated), any pad length."""
    top, bottom, left, right = pads
    if not any(pads):
        return arr
    width = [(0, 0)] * (arr.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(arr, width, mode="symmetric")


def read_tile(
    src: DatasetReader,
    info: RasterInfo,
    grid: WorkGrid,
    tile: Tile,
    bands: Sequence[int],
    normalizer: Normalizer,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one tile, normalized, with its valid mask.

    The native window under the tile's in-grid part is read with ``out_shape`` = its size in
    work-grid pixels (plain read on the native grid; GDAL "average" when downsampling and
    bilinear when upsampling; both ignore invalid pixels). Invalid
    pixels (nodata, mask, alpha, non-finite) get the mean of the tile's valid pixels; the part
    of the tile outside the raster is filled by mirroring the inside.

    Args:
        src: the open raster (``rasterio.open(info.path)``).
        info: its RasterInfo.
        grid: the work grid the tile belongs to.
        tile: the tile.
        bands: 1-based band indexes (3 of them, from ``parse_bands``).
        normalizer: global stretch for those bands.

    Returns:
        image float32 [len(bands), T, T] in [0, 1]; valid bool [T, T] (False outside the
        raster and on invalid pixels).

    Raises:
        BadInputError: the pixels cannot be read (truncated or corrupt file).
    """
    size = tile.size
    win = tile.window_in_grid
    h, w = int(win.height), int(win.width)
    n = len(bands)
    if h <= 0 or w <= 0:
        return np.full((n, size, size), 0.5, np.float32), np.zeros((size, size), bool)
    native = grid.to_native(win)
    if grid.is_native:
        resampling = Resampling.nearest  # same grid: a plain copy
    elif max(grid.scale_xy) <= 1.0:
        resampling = Resampling.average  # downsampling: box filter (anti-aliased, 2x faster)
    else:
        resampling = Resampling.bilinear
    try:
        with bounded_gdal_cache():
            raw = src.read(list(bands), window=native, out_shape=(n, h, w), resampling=resampling)
    except (RasterioError, OSError):
        raise BadInputError(
            f"{info.path}: cannot read pixel data (the file is truncated or corrupt)"
        ) from None
    valid = valid_mask(src, native, out_shape=(h, w)) if info.has_nodata else np.ones((h, w), bool)
    image = normalizer.apply(raw)
    finite = np.isfinite(raw).all(axis=0)  # NaN and ±inf are nodata (the stretch clips inf)
    if not finite.all():
        valid &= finite
    if not valid.all():
        if valid.any():
            fill = np.array([image[i][valid].mean() for i in range(n)], np.float32)
        else:
            fill = np.full(n, 0.5, np.float32)
        image = np.where(valid[None], image, fill[:, None, None]).astype(np.float32, copy=False)
    rows, cols = tile.inner_slices
    pads = (rows.start, size - rows.stop, cols.start, size - cols.stop)
    image = _reflect_pad(image, pads)
    if any(pads):
        full = np.zeros((size, size), bool)
        full[rows, cols] = valid
        valid = full
    return np.ascontiguousarray(image, dtype=np.float32), valid


def tile_has_data(src: DatasetReader, info: RasterInfo, grid: WorkGrid, tile: Tile) -> bool:
    """True when a native pixel under the tile is valid (full-resolution mask read).

    Pixels the tile only partly covers count, so a tile is never called empty wrongly.
    """
    if not info.has_nodata:
        return True
    native = grid.to_native(tile.window_in_grid)
    # the whole native pixels the (possibly fractional) window touches, at native resolution
    c0, r0 = math.floor(native.col_off), math.floor(native.row_off)
    c1 = min(src.width, math.ceil(native.col_off + native.width))
    r1 = min(src.height, math.ceil(native.row_off + native.height))
    if c1 <= c0 or r1 <= r0:
        return False
    return bool(valid_mask(src, Window(c0, r0, c1 - c0, r1 - r0)).any())


def skip_empty_tiles(
    src: DatasetReader,
    info: RasterInfo,
    grid: WorkGrid,
    tiles: Sequence[Tile],
    max_pixels: int = 1_000_000,
) -> list[Tile]:
    """Drop tiles without any valid pixel; indexes are kept as planned.

    A coarse mask of the whole raster (one decimated read, see ``coarse_valid_mask``) keeps
    most tiles without reading anything: a valid coarse cell lying inside the tile shows that
    the tile holds data. Any other tile is checked with a full-resolution mask read of its
    window, so a thin strip of valid data is never lost. A tile is never dropped wrongly; with
    overviews (whose cells need not align with the coarse cells) an empty tile may rarely be
    kept, so callers should still skip tiles whose ``read_tile`` mask is all False.

    Args:
        src: the open raster.
        info, grid: raster and work grid of the tiles.
        tiles: planned tiles.
        max_pixels: size bound of the coarse mask.

    Returns:
        The tiles that hold data, in plan order.
    """
    if not info.has_nodata:
        return list(tiles)
    coarse = coarse_valid_mask(src, max_pixels)
    kept = []
    for tile in tiles:
        if coarse is not None:
            mask, fx, fy = coarse
            native = grid.to_native(tile.window_in_grid)
            # coarse cells whose whole footprint lies inside the tile's native window
            r0 = math.ceil(native.row_off / fy)
            c0 = math.ceil(native.col_off / fx)
            r1 = math.floor((native.row_off + native.height) / fy)
            c1 = math.floor((native.col_off + native.width) / fx)
            if r1 > r0 and c1 > c0 and mask[r0:r1, c0:c1].any():
                kept.append(tile)
                continue
        if tile_has_data(src, info, grid, tile):
            kept.append(tile)
    return kept
