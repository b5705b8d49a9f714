"""geo.raster: opening, describing, band choice, masks, normalization, work grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.geo.overview import read_overview
from rrsis_geo.geo.radiometry import compute_normalizer, parse_value_range
from rrsis_geo.geo.raster import (
    check_for_segmentation,
    open_raster,
    parse_bands,
    valid_mask,
)
from rrsis_geo.geo.workgrid import make_work_grid
from tests import rasters as R

# ---------------------------------------------------------------------------- open / describe


@pytest.mark.parametrize(
    "maker, kw, expect",
    [
        (R.utm_raster, {}, dict(count=3, dtype="uint8", epsg=32633, geographic=False)),
        (R.geographic_raster, {}, dict(count=3, dtype="uint8", epsg=4326, geographic=True)),
        (R.utm_raster, {"dtype": "uint16"}, dict(count=3, dtype="uint16", epsg=32633, geographic=False)),
        (R.utm_raster, {"dtype": "float32", "count": 1}, dict(count=1, dtype="float32", epsg=32633, geographic=False)),
        (R.utm_raster, {"count": 4}, dict(count=4, dtype="uint8", epsg=32633, geographic=False)),
        (R.alpha_raster, {}, dict(count=4, dtype="uint8", epsg=32633, geographic=False, alpha=True)),
        (R.masked_raster, {}, dict(count=3, dtype="uint8", epsg=32633, geographic=False, mask=True)),
        (R.nodata_border_raster, {"dtype": "uint16"}, dict(count=3, dtype="uint16", epsg=32633, geographic=False, nodata=0.0)),
        (R.utm_raster, {"width": 1537, "height": 911, "blocksize": 256}, dict(count=3, dtype="uint8", epsg=32633, geographic=False)),
    ],
)
def test_open_raster_describes_every_kind(tmp_path, maker, kw, expect):
    path = maker(tmp_path / "r.tif", **kw)
    info = open_raster(path)
    with rasterio.open(path) as src:
        assert (info.width, info.height) == (src.width, src.height)
        assert info.bounds == tuple(src.bounds)
    assert info.count == expect["count"]
    assert set(info.dtypes) == {expect["dtype"]}
    assert info.crs.to_epsg() == expect["epsg"]
    assert info.is_geographic is expect["geographic"]
    assert info.has_alpha is expect.get("alpha", False)
    assert info.has_internal_mask is expect.get("mask", False)
    assert info.nodata == expect.get("nodata")
    assert info.has_nodata is bool(expect.get("alpha") or expect.get("mask") or "nodata" in expect)
    d = info.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # JSON-safe round trip
    assert d["crs"]["epsg"] == expect["epsg"]
    check_for_segmentation(info)  # all of these are usable


def test_ground_resolution_projected_and_geographic(tmp_path):
    utm = open_raster(R.utm_raster(tmp_path / "u.tif", res=0.25))
    assert utm.ground_resolution_xy_m() == (0.25, 0.25)
    assert utm.ground_resolution_m() == pytest.approx(0.25)

    # 1e-5 degrees at 60°N: ~1.11 m north-south, half of that east-west
    geo = open_raster(
        R.geographic_raster(tmp_path / "g.tif", res=1e-5, origin=(10.0, 60.0 + 24e-5))
    )
    mx, my = geo.ground_resolution_xy_m()
    lat = math.radians(60.0)
    # WGS84 metres per degree (standard series), independent of the implementation
    m_per_deg_lat = 111132.92 - 559.82 * math.cos(2 * lat) + 1.175 * math.cos(4 * lat)
    m_per_deg_lon = 111412.84 * math.cos(lat) - 93.5 * math.cos(3 * lat)
    assert my == pytest.approx(1e-5 * m_per_deg_lat, rel=1e-3)
    assert mx == pytest.approx(1e-5 * m_per_deg_lon, rel=1e-3)
    assert geo.ground_resolution_m() == pytest.approx(math.sqrt(mx * my))


def test_feet_crs_converts_to_metres(tmp_path):
    # EPSG:2263 (NY Long Island, US survey feet)
    info = open_raster(R.write_raster(tmp_path / "ft.tif", crs="EPSG:2263", res=1.0, origin=(1e6, 2e5)))
    assert info.ground_resolution_m() == pytest.approx(0.3048006, rel=1e-6)


def test_raster_without_crs_is_described_but_not_segmentable(tmp_path):
    info = open_raster(R.write_raster(tmp_path / "n.tif", crs=None))
    assert info.crs is None and not info.is_geographic
    assert info.to_dict()["crs"] is None
    with pytest.raises(BadInputError, match="no CRS"):
        check_for_segmentation(info)
    with pytest.raises(BadInputError):
        info.ground_resolution_m()


def _bad(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.tif"
    if kind == "directory":
        return tmp_path
    if kind == "empty":
        p = tmp_path / "empty.tif"
        p.write_bytes(b"")
        return p
    if kind == "text":
        return R.not_a_raster(tmp_path / "text.tif")
    if kind == "truncated":
        return R.truncated_raster(tmp_path / "cut.tif")
    if kind == "rotated":
        return R.rotated_raster(tmp_path / "rot.tif")
    if kind == "sheared":
        from affine import Affine

        t = Affine(0.5, 0.1, 500000.0, 0.0, -0.5, 5000000.0)
        return R.write_raster(tmp_path / "shear.tif", transform=t)
    raise AssertionError(kind)


BAD_KINDS = {
    "missing": "no such file",
    "directory": "directory",
    "empty": "empty file",
    "text": "not a raster",
    "truncated": "truncated or corrupt",
    "rotated": "rotated or sheared geotransform is not supported; warp it first with gdalwarp",
    "sheared": "rotated or sheared",
}


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_bad_inputs_raise_one_line_bad_input_error(tmp_path, kind):
    path = _bad(tmp_path, kind)
    with pytest.raises(BadInputError) as exc:
        open_raster(path)
    message = str(exc.value)
    assert BAD_KINDS[kind] in message
    assert "\n" not in message
    assert str(path) in message


def test_truncation_in_the_middle_of_a_big_file_is_caught(tmp_path):
    path = R.truncated_raster(tmp_path / "cut.tif", keep=0.9, width=512, height=512, count=3)
    with pytest.raises(BadInputError, match="truncated"):
        open_raster(path)


# ---------------------------------------------------------------------------- bands


def test_default_bands_follow_colour_interpretation(tmp_path):
    bgr = R.write_raster(
        tmp_path / "bgr.tif", colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    )
    assert open_raster(bgr).rgb_bands() == (3, 2, 1)
    gray = R.utm_raster(tmp_path / "g.tif", count=1)
    assert open_raster(gray).rgb_bands() == (1, 1, 1)
    rgba = R.alpha_raster(tmp_path / "a.tif")
    assert open_raster(rgba).rgb_bands() == (1, 2, 3)
    multi = R.utm_raster(tmp_path / "m.tif", count=5)  # gray + undefined: first three
    assert open_raster(multi).rgb_bands() == (1, 2, 3)
    gray_alpha = R.write_raster(tmp_path / "ga.tif", count=1, alpha=np.full((48, 64), 255, np.uint8))
    info = open_raster(gray_alpha)
    assert info.count == 2 and info.has_alpha
    assert info.rgb_bands() == (1, 1, 1)


def test_parse_bands(tmp_path):
    info = open_raster(R.utm_raster(tmp_path / "r.tif", count=4))
    assert parse_bands(None, info) == info.rgb_bands()
    assert parse_bands("", info) == info.rgb_bands()
    assert parse_bands("4,3,2", info) == (4, 3, 2)
    assert parse_bands(" 4, 3 ,2", info) == (4, 3, 2)
    assert parse_bands("2", info) == (2, 2, 2)
    assert parse_bands([1, 2, 4], info) == (1, 2, 4)
    for bad in ("0", "5", "1,2", "1,2,3,4", "a,b,c", "1.5"):
        with pytest.raises(UsageError):
            parse_bands(bad, info)


# ---------------------------------------------------------------------------- masks


def test_valid_mask_from_nodata_alpha_and_internal_mask(tmp_path):
    nd = R.nodata_border_raster(tmp_path / "nd.tif", border=5, nodata=0)
    al = R.alpha_raster(tmp_path / "al.tif", border=7)
    mk = R.masked_raster(tmp_path / "mk.tif", border=9)
    expected_nd = np.zeros((48, 64), bool)
    expected_nd[5:-5, 5:-5] = True
    expected_al = np.ones((48, 64), bool)
    expected_al[:, :7] = False
    expected_mk = np.ones((48, 64), bool)
    expected_mk[:9] = False
    for path, expected in ((nd, expected_nd), (al, expected_al), (mk, expected_mk)):
        with rasterio.open(path) as src:
            full = valid_mask(src)
            assert full.dtype == bool
            np.testing.assert_array_equal(full, expected)
            win = valid_mask(src, Window(3, 2, 20, 10))
            np.testing.assert_array_equal(win, expected[2:12, 3:23])
            small = valid_mask(src, out_shape=(24, 32))  # decimated by 2
            np.testing.assert_array_equal(small, expected[1::2, 1::2])  # GDAL samples pixel 2i+1


def test_nodata_pixel_is_invalid_only_when_all_bands_are_nodata(tmp_path):
    data = np.full((3, 16, 16), 50, np.uint8)
    data[:, 0, 0] = 0  # all bands nodata -> invalid
    data[0, 1, 1] = 0  # one band 0 (a real dark red value) -> stays valid
    path = R.write_raster(tmp_path / "r.tif", data, nodata=0)
    with rasterio.open(path) as src:
        mask = valid_mask(src)
    assert not mask[0, 0] and mask[1, 1] and mask.sum() == 16 * 16 - 1


def test_read_overview_marks_nan_invalid(tmp_path):
    data = np.ones((1, 32, 32), np.float32)
    data[0, :4] = np.nan
    path = R.write_raster(tmp_path / "f.tif", data, blocksize=16)
    with rasterio.open(path) as src:
        values, valid = read_overview(src, [1])
    assert values.shape == (1, 32, 32)
    assert not valid[:4].any() and valid[4:].all()


# ---------------------------------------------------------------------------- normalizer


def test_uint8_and_uint16_versions_normalize_alike(tmp_path):
    img8 = R.smooth_image(200, 150, 3, "uint8", seed=3)
    img16 = img8.astype(np.uint16) * 257  # same scene, 16-bit
    p8 = R.write_raster(tmp_path / "a8.tif", img8)
    p16 = R.write_raster(tmp_path / "a16.tif", img16)
    n8 = compute_normalizer(p8, (1, 2, 3))
    n16 = compute_normalizer(p16, (1, 2, 3))
    a8, a16 = n8.apply(img8), n16.apply(img16)
    assert a8.dtype == np.float32 and a8.min() >= 0.0 and a8.max() <= 1.0
    assert np.abs(a8 - a16).max() < 1e-3
    # full-range uint8 data maps close to x/255 (the scale the model was trained with)
    assert np.abs(a8 - img8 / 255.0).mean() < 0.03


def test_percentile_stretch_ignores_nodata(tmp_path):
    path = R.nodata_border_raster(tmp_path / "nd.tif", width=120, height=100, border=30, nodata=0, dtype="uint16")
    n = compute_normalizer(path, (1, 2, 3))
    with rasterio.open(path) as src:
        inside = src.read(window=Window(30, 30, 60, 40)).astype(np.float64)
    for i in range(3):
        assert n.low[i] == pytest.approx(np.percentile(inside[i], 2), rel=0.05)
        assert n.high[i] == pytest.approx(np.percentile(inside[i], 98), rel=0.05)
        assert n.low[i] > 0  # the zero border would pull p2 to 0 if it were counted


def test_constant_band_falls_back_to_dtype_range(tmp_path):
    data = np.full((3, 20, 20), 100, np.uint16)
    data[1] = np.arange(400, dtype=np.uint16).reshape(20, 20)
    n = compute_normalizer(R.write_raster(tmp_path / "c.tif", data), (1, 2, 3))
    assert (n.low[0], n.high[0]) == (0.0, 65535.0)
    assert n.high[1] > n.low[1] > 0
    assert any("band 1" in note for note in n.notes)
    out = n.apply(data)
    assert np.isfinite(out).all()


def test_value_range_override_and_validation(tmp_path):
    path = R.utm_raster(tmp_path / "r.tif", dtype="uint16")
    n = compute_normalizer(path, (3, 2, 1), value_range="0,1000")
    assert n.method == "value-range" and n.low == (0.0,) * 3 and n.high == (1000.0,) * 3
    arr = np.array([[[0, 500, 1000, 4000]]] * 3, np.uint16)
    np.testing.assert_allclose(n.apply(arr)[0, 0], [0.0, 0.5, 1.0, 1.0])
    assert parse_value_range("-1.5, 2e3") == (-1.5, 2000.0)
    for bad in ("1", "5,1", "a,b", "1,2,3", "nan,1"):
        with pytest.raises(UsageError):
            compute_normalizer(path, (1, 2, 3), value_range=bad)
    with pytest.raises(UsageError):
        compute_normalizer(path, (1, 2, 3), percentiles=(98, 2))
    d = n.to_dict()
    assert json.loads(json.dumps(d)) == d


def test_repeated_bands_and_overviews(tmp_path):
    path = R.utm_raster(tmp_path / "o.tif", count=1, width=400, height=300, overviews=(2, 4))
    assert open_raster(path).overviews == (2, 4)
    n = compute_normalizer(path, (1, 1, 1), max_pixels=5000)  # decimated read uses overviews
    assert n.bands == (1, 1, 1) and n.low[0] == n.low[1] == n.low[2] < n.high[0]


def test_all_nodata_raster_cannot_be_normalized(tmp_path):
    data = np.zeros((3, 16, 16), np.uint8)
    path = R.write_raster(tmp_path / "z.tif", data, nodata=0)
    with pytest.raises(BadInputError, match="no valid pixel"):
        compute_normalizer(path, (1, 2, 3))


# ---------------------------------------------------------------------------- work grid


def test_native_work_grid(tmp_path):
    info = open_raster(R.utm_raster(tmp_path / "r.tif", width=1537, height=911))
    grid = make_work_grid(info, None)
    assert (grid.width, grid.height) == (1537, 911)
    assert grid.transform == info.transform and grid.scale == 1.0 and grid.is_native
    assert grid.res == (0.5, 0.5) and grid.res_m == pytest.approx(0.5)


@pytest.mark.parametrize("target, scale", [(1.0, 0.5), (0.25, 2.0)])
def test_gsd_work_grid_keeps_extent(tmp_path, target, scale):
    info = open_raster(R.utm_raster(tmp_path / "r.tif", width=1537, height=911))
    grid = make_work_grid(info, target)
    assert grid.scale == pytest.approx(scale, rel=2e-3)
    assert grid.width == round(1537 * scale) and grid.height == round(911 * scale)
    assert grid.res_m == pytest.approx(target, rel=2e-3)
    # the grid spans exactly the raster's bounds
    right, bottom = grid.transform @ (grid.width, grid.height)
    assert (right, bottom) == pytest.approx((info.bounds[2], info.bounds[1]))
    assert grid.to_native(Window(0, 0, grid.width, grid.height)).width == pytest.approx(1537)


def test_gsd_grid_on_geographic_raster_has_square_metre_pixels(tmp_path):
    info = open_raster(
        R.geographic_raster(tmp_path / "g.tif", res=1e-5, origin=(10.0, 60.0), width=300, height=200)
    )
    grid = make_work_grid(info, 1.0)
    mx, my = info.ground_resolution_xy_m()
    assert grid.scale_xy[0] == pytest.approx(mx, rel=0.01)  # ~0.56 px per native px along x
    assert grid.scale_xy[1] == pytest.approx(my, rel=0.01)  # ~1.11 along y
    # each work pixel is ~1 m on both axes
    assert info.width * mx / grid.width == pytest.approx(1.0, rel=0.01)
    assert info.height * my / grid.height == pytest.approx(1.0, rel=0.01)


def test_gsd_validation(tmp_path):
    info = open_raster(R.utm_raster(tmp_path / "r.tif"))
    for bad in (0, -1, float("nan")):
        with pytest.raises(UsageError):
            make_work_grid(info, bad)
    with pytest.raises(UsageError, match="upsample"):
        make_work_grid(info, 0.01)  # 50x finer than 0.5 m


def test_overview_read_samples_big_rasters_without_overviews(tmp_path):
    img = R.smooth_image(600, 400, 3, "uint16", seed=5)
    path = R.write_raster(tmp_path / "big.tif", img, blocksize=64)
    with rasterio.open(path) as src:
        full, full_valid = read_overview(src, [1, 2, 3])  # fits the budget: every pixel
        sampled, valid = read_overview(src, [1, 2, 3], max_pixels=20_000, decode_budget=50_000)
    np.testing.assert_array_equal(full, img.astype(np.float32))
    assert full_valid.all()
    assert sampled.shape[1] * sampled.shape[2] <= 20_000 and valid.all()
    for b in range(3):  # a lattice of windows still estimates the percentiles well
        lo, hi = np.percentile(img[b], [2, 98])
        slo, shi = np.percentile(sampled[b], [2, 98])
        assert abs(slo - lo) < 0.05 * 65535 and abs(shi - hi) < 0.05 * 65535
        assert set(np.unique(sampled[b])) <= set(np.unique(img[b]))  # real pixels, not blends


def test_overview_read_decimation_is_bounded(tmp_path):
    path = R.utm_raster(tmp_path / "r.tif", width=1537, height=911, blocksize=256)
    with rasterio.open(path) as src:
        data, valid = read_overview(src, [2], max_pixels=10_000)
        ref = src.read(2)
    assert data.shape[0] == 1 and 5_000 < data.shape[1] * data.shape[2] <= 10_000
    fy, fx = 911 // data.shape[1], 1537 // data.shape[2]
    # nearest decimation samples the centre pixel of each fx*fy cell
    np.testing.assert_array_equal(data[0], ref[fy // 2 :: fy, fx // 2 :: fx][: data.shape[1], : data.shape[2]])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_gcp_only_raster_is_described_and_refused_for_segmentation(tmp_path):
    from rasterio.control import GroundControlPoint

    path = tmp_path / "gcp.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 32, 32), np.uint8))
        gcps = [
            GroundControlPoint(0, 0, 500000.0, 5000000.0),
            GroundControlPoint(0, 32, 500016.0, 5000000.0),
            GroundControlPoint(32, 0, 500000.0, 4999984.0),
        ]
        dst.gcps = (gcps, "EPSG:32633")
    info = open_raster(path)
    assert info.crs is None and info.has_gcps
    with pytest.raises(BadInputError, match="GCPs only; warp it first with gdalwarp"):
        check_for_segmentation(info)
