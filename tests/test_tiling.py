"""geo.tiling: torchgeo grid → tiles, coverage, windowed reads, padding, empty-tile skipping."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.geo.radiometry import compute_normalizer
from rrsis_geo.geo.raster import open_raster
from rrsis_geo.geo.tiling import plan_tiles, read_tile, skip_empty_tiles, tile_has_data
from rrsis_geo.geo.workgrid import make_work_grid
from tests import rasters as R


def coverage(tiles, grid) -> np.ndarray:
    """How many tiles cover each work-grid pixel; also checks each tile's clipped window."""
    count = np.zeros((grid.height, grid.width), np.int32)
    for t in tiles:
        w = t.window_in_grid
        r0, c0 = max(0, t.row_off), max(0, t.col_off)
        r1, c1 = min(grid.height, t.row_off + t.size), min(grid.width, t.col_off + t.size)
        assert (int(w.row_off), int(w.col_off), int(w.height), int(w.width)) == (r0, c0, r1 - r0, c1 - c0)
        assert w.height > 0 and w.width > 0  # every tile touches the raster
        count[r0:r1, c0:c1] += 1
    return count


def test_plan_passes_torchgeo_centred_grid_through(tmp_path):
    info = open_raster(R.utm_raster(tmp_path / "r.tif", width=1000, height=700))
    tiles = plan_tiles(info, make_work_grid(info, None), 512, 64)
    # torchgeo 0.10: ceil((L - 512) / 448) + 1 tiles per axis, centred with equal overhang
    assert sorted({t.col_off for t in tiles}) == [-204, 244, 692]
    assert sorted({t.row_off for t in tiles}) == [-130, 318]
    assert [t.index for t in tiles] == list(range(6))
    assert [(t.row_off, t.col_off) for t in tiles] == sorted((t.row_off, t.col_off) for t in tiles)


@pytest.mark.parametrize("maker", [R.utm_raster, R.geographic_raster])
@pytest.mark.parametrize("tile_size, overlap", [(512, 128), (256, 0), (333, 77)])
def test_odd_size_raster_fully_covered(tmp_path, maker, tile_size, overlap):
    info = open_raster(maker(tmp_path / "r.tif", width=1537, height=911, blocksize=256))
    grid = make_work_grid(info, None)
    tiles = plan_tiles(info, grid, tile_size, overlap)
    count = coverage(tiles, grid)
    assert count.min() >= 1
    assert all(t.size == tile_size for t in tiles)
    # centred: overhang on the left and right differ by at most one pixel
    left = -min(t.col_off for t in tiles)
    right = max(t.col_off + t.size for t in tiles) - grid.width
    assert abs(left - right) <= 1


@pytest.mark.parametrize("width, height, overlap", [(300, 200, 128), (10, 7, 448), (512, 1, 0)])
def test_raster_smaller_than_a_tile_gets_one_centred_tile(tmp_path, width, height, overlap):
    info = open_raster(R.utm_raster(tmp_path / "s.tif", width=width, height=height))
    grid = make_work_grid(info, None)
    tiles = plan_tiles(info, grid, 512, overlap)
    assert len(tiles) == 1
    t = tiles[0]
    assert coverage(tiles, grid).min() == 1
    assert abs(-t.row_off - (t.row_off + 512 - height)) <= 1
    assert abs(-t.col_off - (t.col_off + 512 - width)) <= 1


@pytest.mark.parametrize("target, scale", [(1.0, 0.5), (0.25, 2.0)])
def test_gsd_grid_fully_covered(tmp_path, target, scale):
    info = open_raster(R.utm_raster(tmp_path / "r.tif", width=1537, height=911, blocksize=256))
    grid = make_work_grid(info, target)
    assert grid.scale == pytest.approx(scale, rel=2e-3)
    tiles = plan_tiles(info, grid, 256, 64)
    assert coverage(tiles, grid).min() >= 1
    native = plan_tiles(info, make_work_grid(info, None), 256, 64)
    assert (len(tiles) < len(native)) if scale < 1 else (len(tiles) > len(native))


def test_tile_options_are_validated(tmp_path):
    info = open_raster(R.utm_raster(tmp_path / "r.tif"))
    grid = make_work_grid(info, None)
    for size, overlap in ((0, 0), (64, 64), (64, 100), (64, -1), (64.5, 0), (True, 0)):
        with pytest.raises(UsageError):
            plan_tiles(info, grid, size, overlap)


def test_plan_refuses_raster_without_crs(tmp_path):
    info = open_raster(R.write_raster(tmp_path / "n.tif", crs=None))
    with pytest.raises(BadInputError, match="no CRS"):
        plan_tiles(info, make_work_grid(info, None), 64, 0)


def _identity_normalizer(path, bands, top=255):
    return compute_normalizer(path, bands, value_range=f"0,{top}")


def test_tile_content_equals_raster_pixels_and_padding_reflects(tmp_path):
    path = R.utm_raster(tmp_path / "r.tif", width=1537, height=911, blocksize=256)
    info = open_raster(path)
    grid = make_work_grid(info, None)
    tiles = plan_tiles(info, grid, 512, 128)
    bands = (3, 1, 2)
    norm = _identity_normalizer(path, bands)
    with rasterio.open(path) as src:
        full = src.read(list(bands)).astype(np.float32)
        for tile in (tiles[0], tiles[len(tiles) // 2], tiles[-1]):
            img, valid = read_tile(src, info, grid, tile, bands, norm)
            assert img.shape == (3, 512, 512) and img.dtype == np.float32
            assert valid.shape == (512, 512) and valid.dtype == bool
            rows, cols = tile.inner_slices
            w = tile.window_in_grid
            expect = full[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
            np.testing.assert_allclose(img[:, rows, cols] * 255, expect, atol=1e-3)
            assert valid[rows, cols].all()
            assert valid.sum() == w.height * w.width  # False everywhere in the overhang

    # first tile overhangs top and left: mirrored copy of the inside
    t = tiles[0]
    with rasterio.open(path) as src:
        img, valid = read_tile(src, info, grid, t, bands, norm)
    top, left = -t.row_off, -t.col_off
    assert top > 0 and left > 0
    for k in (0, 1, top // 2, top - 1):
        np.testing.assert_array_equal(img[:, top - 1 - k, :], img[:, top + k, :])
    for k in (0, 1, left - 1):
        np.testing.assert_array_equal(img[:, :, left - 1 - k], img[:, :, left + k])
    assert not valid[:top].any() and not valid[:, :left].any()


def test_small_raster_tile_is_padded_by_reflection(tmp_path):
    path = R.utm_raster(tmp_path / "s.tif", width=40, height=30)
    info = open_raster(path)
    grid = make_work_grid(info, None)
    (tile,) = plan_tiles(info, grid, 128, 32)
    with rasterio.open(path) as src:
        img, valid = read_tile(src, info, grid, tile, (1, 2, 3), _identity_normalizer(path, (1, 2, 3)))
        raw = src.read().astype(np.float32) / 255
    assert valid.sum() == 40 * 30
    rows, cols = tile.inner_slices
    np.testing.assert_allclose(img[:, rows, cols], raw, atol=1e-6)
    # the pad is wider than the raster: repeated mirroring, every value comes from the raster
    assert np.isin(img[0], raw[0]).all()
    np.testing.assert_array_equal(img[:, rows.start - 1, cols], img[:, rows.start, cols])


def test_invalid_pixels_get_neutral_fill_and_false_mask(tmp_path):
    for maker in (R.nodata_border_raster, R.alpha_raster, R.masked_raster):
        path = maker(tmp_path / f"{maker.__name__}.tif", width=64, height=48, border=6)
        info = open_raster(path)
        grid = make_work_grid(info, None)
        (tile,) = plan_tiles(info, grid, 64, 0)
        bands = info.rgb_bands()
        norm = compute_normalizer(path, bands)
        with rasterio.open(path) as src:
            img, valid = read_tile(src, info, grid, tile, bands, norm)
            mask = src.dataset_mask() > 0
        rows, cols = tile.inner_slices
        np.testing.assert_array_equal(valid[rows, cols], mask)
        inner = img[:, rows, cols]
        for b in range(3):
            fill = inner[b][~mask]
            assert fill.size and np.allclose(fill, inner[b][mask].mean(), atol=1e-6)


def test_nan_pixels_are_invalid(tmp_path):
    data = R.smooth_image(64, 64, 1, "float32")
    data[0, 10:20, 10:20] = np.nan
    path = R.write_raster(tmp_path / "f.tif", data)
    info = open_raster(path)
    grid = make_work_grid(info, None)
    (tile,) = plan_tiles(info, grid, 64, 0)
    with rasterio.open(path) as src:
        img, valid = read_tile(src, info, grid, tile, (1, 1, 1), compute_normalizer(path, (1, 1, 1)))
    assert np.isfinite(img).all()
    assert not valid[10:20, 10:20].any() and valid.sum() == 64 * 64 - 100


@pytest.mark.parametrize("target", [1.0, 0.25])
def test_resampled_tile_reads_align_with_native_pixels(tmp_path, target):
    # band 1 = column index, band 2 = row index (at pixel centres): a misplaced window shows
    h, w = 911, 1537
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    path = R.write_raster(tmp_path / "ramp.tif", np.stack([cols, rows]), blocksize=256)
    info = open_raster(path)
    grid = make_work_grid(info, target)
    sx, sy = grid.scale_xy
    tiles = plan_tiles(info, grid, 256, 32)
    norm = _identity_normalizer(path, (1, 2, 2), top=100000)
    with rasterio.open(path) as src:
        for tile in tiles[:: max(1, len(tiles) // 5)]:
            img, valid = read_tile(src, info, grid, tile, (1, 2, 2), norm)
            rs, cs = tile.inner_slices
            win = tile.window_in_grid
            got_c = img[0, rs, cs] * 100000
            got_r = img[1, rs, cs] * 100000
            gc = np.arange(win.col_off, win.col_off + win.width)
            gr = np.arange(win.row_off, win.row_off + win.height)
            exp_c = (gc + 0.5) / sx - 0.5  # native centre of each work pixel
            exp_r = (gr + 0.5) / sy - 0.5
            # away from the raster edge (where bilinear clamps) the ramp is reproduced exactly
            ci = (exp_c > 2) & (exp_c < w - 3)
            ri = (exp_r > 2) & (exp_r < h - 3)
            np.testing.assert_allclose(got_c[:, ci], np.broadcast_to(exp_c[ci], got_c[:, ci].shape), atol=0.02)
            np.testing.assert_allclose(got_r[ri, :], np.broadcast_to(exp_r[ri, None], got_r[ri, :].shape), atol=0.02)
            assert valid[rs, cs].all()


def test_all_nodata_tiles_are_skipped_and_thin_strips_kept(tmp_path):
    h, w = 500, 700
    data = R.smooth_image(w, h, 3, "uint8")
    data = np.maximum(data, 1)
    data[:, :, 400:] = 0  # right part is nodata...
    data[:, 100:110, 600] = 77  # ...except a one-pixel-wide valid strip
    path = R.write_raster(tmp_path / "nd.tif", data, nodata=0, blocksize=128)
    info = open_raster(path)
    grid = make_work_grid(info, None)
    tiles = plan_tiles(info, grid, 128, 0)
    norm = compute_normalizer(path, (1, 2, 3))
    with rasterio.open(path) as src:
        kept = skip_empty_tiles(src, info, grid, tiles, max_pixels=2000)  # coarse map misses the strip
        truth = [t for t in tiles if read_tile(src, info, grid, t, (1, 2, 3), norm)[1].any()]
        assert [t.index for t in kept] == [t.index for t in truth]
        assert all(tile_has_data(src, info, grid, t) for t in kept)
    assert len(kept) < len(tiles)
    strip = [t for t in kept if t.col_off <= 600 < t.col_off + t.size and t.row_off <= 105 < t.row_off + t.size]
    assert len(strip) == 1


def test_skip_empty_keeps_everything_without_nodata(tmp_path):
    path = R.utm_raster(tmp_path / "r.tif", width=300, height=200)
    info = open_raster(path)
    grid = make_work_grid(info, None)
    tiles = plan_tiles(info, grid, 128, 16)
    with rasterio.open(path) as src:
        assert skip_empty_tiles(src, info, grid, tiles) == tiles


def test_tile_transform_places_the_tile_on_the_map(tmp_path):
    info = open_raster(R.utm_raster(tmp_path / "r.tif", width=1000, height=700))
    grid = make_work_grid(info, 1.0)
    tile = plan_tiles(info, grid, 128, 0)[0]
    t = tile.transform(grid)
    x, y = t @ (0, 0)
    gx, gy = grid.transform @ (tile.col_off, tile.row_off)
    assert (x, y) == pytest.approx((gx, gy))
    assert t.a == pytest.approx(grid.transform.a)


@pytest.mark.parametrize("kind", ["nodata", "mask"])
@pytest.mark.parametrize("target", [1.0, 0.37, 0.25])
def test_resampling_does_not_blend_invalid_pixels_into_valid_ones(tmp_path, kind, target):
    data = np.full((3, 151, 151), 200, np.uint8)
    data[:, :, :76] = 0
    if kind == "nodata":
        path = R.write_raster(tmp_path / "h.tif", data, nodata=0)
    else:
        mask = np.ones((151, 151), bool)
        mask[:, :76] = False
        path = R.write_raster(tmp_path / "h.tif", data, mask=mask)
    info = open_raster(path)
    grid = make_work_grid(info, target)
    norm = _identity_normalizer(path, (1, 2, 3))
    seen_valid = seen_invalid = 0
    with rasterio.open(path) as src:
        for tile in plan_tiles(info, grid, 48, 0):
            img, valid = read_tile(src, info, grid, tile, (1, 2, 3), norm)
            np.testing.assert_allclose(img[:, valid] * 255, 200, atol=0.5)
            rows, cols = tile.inner_slices
            seen_valid += valid.sum()
            seen_invalid += (~valid[rows, cols]).sum()
    assert seen_valid > 0 and seen_invalid > 0


@pytest.mark.parametrize("overviews", [(), (2, 4, 8)])
@pytest.mark.parametrize("target", [None, 0.3])
def test_skip_empty_with_overviews_and_resampled_grid(tmp_path, overviews, target):
    h, w = 400, 600
    data = np.maximum(R.smooth_image(w, h, 3, "uint8"), 1)
    data[:, :, 250:] = 0
    data[:, 300:303, 555] = 9  # a thin valid strip in the nodata part
    path = R.write_raster(tmp_path / "o.tif", data, nodata=0, blocksize=64, overviews=overviews)
    info = open_raster(path)
    grid = make_work_grid(info, target)
    tiles = plan_tiles(info, grid, 96, 16)
    norm = compute_normalizer(path, (1, 2, 3))
    with rasterio.open(path) as src:
        kept = {t.index for t in skip_empty_tiles(src, info, grid, tiles, max_pixels=3000)}
        has_valid = {t.index for t in tiles if read_tile(src, info, grid, t, (1, 2, 3), norm)[1].any()}
    assert has_valid <= kept  # never drops a tile with data
    assert len(kept) < len(tiles)
    assert len(kept - has_valid) <= 2  # and keeps hardly any empty one


def test_cover_axis_fills_gaps_and_drops_outside_offsets():
    from rrsis_geo.geo.tiling import _cover_axis

    def covered(offsets, size, length):
        hit = np.zeros(length, bool)
        for o in offsets:
            hit[max(0, o) : max(0, o + size)] = True
        return hit.all()

    assert _cover_axis([], 100, 250) == [0, 100, 150]
    got = _cover_axis([-30, 500, 5000], 100, 260)  # 500/5000 lie outside: dropped
    assert covered(got, 100, 260) and all(o < 260 and o + 100 > 0 for o in got)
    assert _cover_axis([], 100, 40) == [-30]  # smaller than a tile: one centred tile
    assert _cover_axis([-5, 90], 100, 190) == [-5, 90]  # already covering: unchanged
    got = _cover_axis([0, 300], 100, 400)  # a gap in the middle
    assert covered(got, 100, 400) and set(got) >= {0, 300}
