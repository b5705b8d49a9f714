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


# -- polygon regions: a true mask ------------------------------------------------------------
def _poly(*rowcols):
    """A shapely polygon of (row, col) pixel corners, in the CRS."""
    from shapely.geometry import Polygon

    return Polygon([_xy(r, c) for r, c in rowcols])


# an L over rows 0..256, cols 0..256 of a 300 x 300 raster: the left band (cols 0..96) and the
# bottom band (rows 160..256); the notch (rows 0..160, cols 96..256) is outside
L_SHAPE = ((0, 0), (0, 96), (160, 96), (160, 256), (256, 256), (256, 0))
IN_L, IN_NOTCH, ACROSS = (190, 180, 230, 230), (30, 160, 80, 220), (100, 60, 140, 140)


class _Counting:
    """Wraps a model and counts the images its forward sees."""

    def __init__(self, model):
        self.model, self.images = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def segment_image(self, image, text):
        self.images += image.shape[0]
        return self.model.segment_image(image, text)


def _counting_seg():
    from rrsis_geo.inference.segmenter import Segmenter
    from tests.standin import RedSegmenter

    seg = Segmenter(model=RedSegmenter(input_size=64), device="cpu")
    seg.model = _Counting(seg.model)
    return seg


def test_polygon_roi_is_a_mask_not_its_extent(tmp_path):
    arr = scene(300, 300, [IN_L, IN_NOTCH, ACROSS])
    src = write_tif(tmp_path / "in.tif", arr)
    l_shape = _poly(*L_SHAPE)
    gpd.GeoDataFrame(geometry=[l_shape], crs="EPSG:32633").to_file(tmp_path / "region_l.gpkg")
    (r0, c0), (r1, c1) = (0, 0), (256, 256)

    seg_box = _counting_seg()
    res_box, out_box = run_pipeline(tmp_path, str(src), seg_box, mode="all", out="box.gpkg",
                           roi=_bounds(r0, c0, r1, c1))
    seg_l = _counting_seg()
    res_l, out_l = run_pipeline(tmp_path, str(src), seg_l, mode="all", out="l.gpkg",
                       roi=str(tmp_path / "region_l.gpkg"), prob_raster=str(tmp_path / "p.tif"))

    # a bounding box stays a bounding box: all three objects, nothing clipped
    got_box = pyogrio.read_dataframe(out_box)
    assert res_box["objects"] == 3 and res_box["outside_tiles"] == 0
    assert any(g.intersects(box(*_box(*IN_NOTCH))) for g in got_box.geometry)
    # the L: the notch's object is gone, the one across the edge is clipped to the L
    got = pyogrio.read_dataframe(out_l)
    assert res_l["objects"] == 2, got
    for g in got.geometry:
        assert g.difference(l_shape).area < 1e-6, g.difference(l_shape).area
        assert not g.intersects(box(*_box(*IN_NOTCH)))
    across = got[got.intersects(box(*_box(*ACROSS)))]
    assert len(across) == 1
    full_across = got_box[got_box.intersects(box(*_box(*ACROSS)))].geometry.iloc[0]
    clipped = across.geometry.iloc[0]
    assert clipped.area < 0.6 * full_across.area  # 36 of 80 columns lie inside the L
    assert clipped.symmetric_difference(full_across.intersection(l_shape)).area < 0.1 * \
        clipped.area
    assert across["area_m2"].iloc[0] == pytest.approx(clipped.area, rel=1e-3)
    # tiles wholly in the notch never reach the model: stats and the model agree
    assert res_l["outside_tiles"] > 0
    # (and tiles that touch it with no pixel centre inside are read but not run)
    assert res_l["model_tiles"] <= res_box["model_tiles"] - res_l["outside_tiles"]
    assert res_l["tile_reads"] == res_box["tile_reads"] - res_l["outside_tiles"]
    assert seg_l.model.images < seg_box.model.images
    # probabilities outside the L are never above the threshold
    from rasterio.features import geometry_mask

    with rasterio.open(tmp_path / "p.tif") as p:
        prob = p.read(1, masked=True).filled(0).astype(float)
        if p.dtypes[0] == "uint8":
            prob /= 255.0
        outside = geometry_mask([l_shape], out_shape=prob.shape, transform=p.transform)
    assert prob[outside].max() <= 0.5
    assert prob[~outside].max() > 0.5


def test_wkt_triangle_roi(tmp_path, seg):
    arr = scene(200, 200, [(20, 20, 60, 60), (140, 140, 180, 180), (20, 140, 60, 180)])
    src = write_tif(tmp_path / "in.tif", arr)
    tri = _poly((0, 0), (200, 0), (200, 200))  # the lower-left half: below the diagonal
    res, out = run_pipeline(tmp_path, str(src), seg, mode="all", roi=tri.wkt)
    got = pyogrio.read_dataframe(out)
    # the box on the diagonal's upper side is outside; the two on the diagonal are clipped
    assert not any(g.intersects(box(*_box(20, 140, 60, 180))) for g in got.geometry)
    assert res["objects"] == 2
    for g in got.geometry:
        assert g.difference(tri).area < 1e-6


def test_roi_polygon_parsing(tmp_path):
    from rrsis_geo.geo.roi import parse_region

    info = open_raster(write_tif(tmp_path / "a.tif", scene(40, 40, [])))
    assert parse_region(_bounds(0, 0, 20, 20), info).polygon is None
    r = parse_region(_poly((0, 0), (0, 20), (20, 0)).wkt, info)
    assert r.polygon.geom_type == "Polygon" and r.bounds == pytest.approx(_box(0, 0, 20, 20))
    # points only: their extent, a rectangle as before
    gpd.GeoDataFrame(geometry=gpd.points_from_xy([X0 + 1, X0 + 9], [Y0 - 1, Y0 - 9]),
                     crs="EPSG:32633").to_file(tmp_path / "pts.gpkg")
    r = parse_region(str(tmp_path / "pts.gpkg"), info)
    assert r.polygon is None and r.bounds == pytest.approx((X0 + 1, Y0 - 9, X0 + 9, Y0 - 1))
    # GeoJSON text (longitude/latitude)
    g = gpd.GeoSeries([_poly((0, 0), (0, 20), (20, 0))], crs="EPSG:32633").to_crs("EPSG:4326")
    r = parse_region(g.to_json(), info)
    assert r.polygon is not None and r.bounds == pytest.approx(_box(0, 0, 20, 20), abs=0.01)
    with pytest.raises(UsageError, match="--roi"):
        parse_region("POLYGON ((0 0, 1 1", info)
