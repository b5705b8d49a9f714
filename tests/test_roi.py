"""--roi: a run restricted to a region behaves as if that region were the whole scene."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from shapely.geometry import box

from rrsis_geo.cli.main import cli
from rrsis_geo.errors import UsageError
from rrsis_geo.geo.raster import open_raster
from rrsis_geo.geo.roi import parse_roi, roi_window, write_window_vrt
from rrsis_geo.inference.pipeline import work_dir_for
from tests.rasters import scene, write_tif
from tests.standin import run_pipeline

X0, Y0, RES = 500000.0, 5000000.0, 0.5  # write_tif's origin and pixel size


def _xy(row: float, col: float) -> tuple[float, float]:
    return X0 + col * RES, Y0 - row * RES


def _box(r0, c0, r1, c1) -> tuple[float, float, float, float]:
    """CRS bounds (xmin, ymin, xmax, ymax) of pixel rows r0..r1, columns c0..c1."""
    (xmin, ymax), (xmax, ymin) = _xy(r0, c0), _xy(r1, c1)
    return xmin, ymin, xmax, ymax


def _bounds(r0, c0, r1, c1) -> str:
    return ",".join(str(v) for v in _box(r0, c0, r1, c1))


def test_roi_window_rounds_outwards_and_clips(tmp_path):
    info = open_raster(write_tif(tmp_path / "a.tif", scene(100, 120, [])))
    x0, y1 = _xy(10.4, 20.6)
    x1, y0 = _xy(30.2, 200.0)  # beyond the right edge
    w = roi_window((x0, y0, x1, y1), info)
    assert (w.col_off, w.row_off, w.width, w.height) == (20, 10, 100, 21)
    with pytest.raises(UsageError, match="does not overlap"):
        roi_window((0.0, 0.0, 10.0, 10.0), info)


@pytest.mark.parametrize("spec", ["1,2,3", "a,b,c,d", "5,0,1,1", "/no/such/file.gpkg"])
def test_bad_roi_specs_are_usage_errors(tmp_path, spec):
    info = open_raster(write_tif(tmp_path / "a.tif", scene(40, 40, [])))
    with pytest.raises(UsageError, match="--roi"):
        parse_roi(spec, info)


def test_window_vrt_keeps_pixels_georeferencing_nodata_and_mask(tmp_path):
    arr = scene(90, 110, [(5, 5, 20, 20)])
    mask = np.ones((90, 110), bool)
    mask[:, :8] = False
    src = write_tif(tmp_path / "m.tif", arr, nodata=None, mask=mask)
    info = open_raster(src)
    w = roi_window(_box(12, 3, 70, 60), info)
    vrt = write_window_vrt(info, w, tmp_path / "w.vrt")
    with rasterio.open(src) as a, rasterio.open(vrt) as b:
        assert b.crs == a.crs and b.count == a.count and b.dtypes == a.dtypes
        assert (b.width, b.height) == (57, 58)
        assert b.transform == a.window_transform(w)
        np.testing.assert_array_equal(b.read(), a.read(window=w))
        np.testing.assert_array_equal(b.dataset_mask(), a.dataset_mask(window=w))
        assert not b.dataset_mask()[:, :5].any() and b.dataset_mask()[:, 5:].all()


def test_roi_keeps_only_objects_inside_and_polygons_stay_in_place(tmp_path, seg):
    arr = scene(200, 260, [(20, 20, 50, 50), (120, 180, 160, 230)])
    full, out_full = run_pipeline(tmp_path, arr, seg, mode="all", out="full.gpkg")
    assert full["objects"] == 2
    res, out = run_pipeline(tmp_path, str(tmp_path / "in.tif"), seg, mode="all", out="roi.gpkg",
                   roi=_bounds(100, 150, 200, 260))
    assert res["objects"] == 1 and res["tiles"] < full["tiles"]
    got = pyogrio.read_dataframe(out)
    ref = pyogrio.read_dataframe(out_full)
    assert got.crs == ref.crs
    inside = ref[ref.intersects(box(*_box(100, 150, 200, 260)))]
    assert len(inside) == 1
    # the same polygon as in the full run, at the same coordinates
    assert got.geometry.iloc[0].symmetric_difference(inside.geometry.iloc[0]).area < 1.0
    assert not work_dir_for(out).exists()


def test_scene_words_refer_to_the_roi(tmp_path, seg):
    # three red boxes in a row; the ROI holds the right two. "on the left" of the ROI is the
    # middle box, not the leftmost box of the raster.
    arr = scene(120, 400, [(40, 20, 70, 60), (40, 180, 70, 220), (40, 330, 70, 370)])
    res, out = run_pipeline(tmp_path, arr, seg, expr="the red roof on the left",
                   roi=_bounds(0, 150, 120, 400))
    got = pyogrio.read_dataframe(out).geometry.iloc[0]
    assert res["objects"] == 1
    assert got.intersects(box(*_box(40, 180, 70, 220)))


def test_roi_from_vector_file_in_another_crs(tmp_path, seg):
    arr = scene(200, 260, [(20, 20, 50, 50), (120, 180, 160, 230)])
    src = write_tif(tmp_path / "in.tif", arr)
    region = gpd.GeoDataFrame(geometry=[box(*_box(100, 150, 200, 260))],
                              crs="EPSG:32633").to_crs("EPSG:4326")
    region.to_file(tmp_path / "region.geojson", driver="GeoJSON")
    res, out = run_pipeline(tmp_path, str(src), seg, mode="all", roi=str(tmp_path / "region.geojson"))
    assert res["objects"] == 1
    c = pyogrio.read_dataframe(out).geometry.iloc[0].centroid
    assert c.x > _xy(0, 150)[0] and c.y < _xy(100, 0)[1]


def test_cli_roi_outside_raster_exit_2_one_line_no_output(cli_standin, tmp_path):
    src = write_tif(tmp_path / "in.tif", scene(64, 64, [(5, 5, 20, 20)]))
    out = tmp_path / "o.gpkg"
    res = cli_standin.invoke(cli, ["segment", str(src), "-e", "red", "-o", str(out),
                                   "--progress", "none", "--roi", "0,0,10,10"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--roi does not overlap" in lines[0]
    assert not out.exists() and not work_dir_for(out).exists()
