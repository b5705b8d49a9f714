"""geo.vectorize and geo.output: whole objects across tiles and blocks, m² areas, atomic layers."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from rrsis_geo.errors import UsageError
from rrsis_geo.geo import output
from rrsis_geo.geo.output import write_layer
from rrsis_geo.geo.stitch import ProbAccumulator
from rrsis_geo.geo.vectorize import (area_m2, component_stats, find_components, pixel_area_m2,
                                     pixel_areas_m2, vectorize)
from tests.rasters import utm_grid

UTM = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)


def wgs84_grid(h: int, w: int, res: float = 1e-5, lat0: float = 45.0) -> SimpleNamespace:
    return SimpleNamespace(height=h, width=w, crs=WGS84,
                           transform=Affine(res, 0, 10.0, 0, -res, lat0))


class ArraySource:
    """A probability source backed by an in-memory array (tests only)."""

    def __init__(self, prob: np.ndarray) -> None:
        self.prob = prob.astype(np.float32)
        self.height, self.width = prob.shape
        self.reads: list[tuple[slice, slice]] = []

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        self.reads.append((rows, cols))
        return self.prob[rows, cols]


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 < r * r


# ------------------------------------------------------------- seams: tiles and blocks
def _stitched_disk(tmp_path: Path, h: int, w: int, cy: float, cx: float, r: float):
    """A disk predicted by 2x2 overlapping tiles, each seeing only its own part of the disk."""
    truth = disk(h, w, cy, cx, r)
    t = 96
    acc = ProbAccumulator(tmp_path / "acc", h, w, t)
    offsets = [(0, 0), (0, w - t), (h - t, 0), (h - t, w - t)]
    for ro, co in offsets:
        acc.add(truth[ro:ro + t, co:co + t].astype(np.float32) * 0.9, None, ro, co)
    return acc, truth


@pytest.mark.parametrize("kind", ["utm", "wgs84"])
def test_object_across_four_tiles_and_blocks_is_one_polygon_with_true_area(tmp_path, kind):
    h, w = 170, 180
    acc, truth = _stitched_disk(tmp_path, h, w, cy=85.0, cx=90.0, r=60.0)
    # the disk straddles both tile seams (tiles overlap over rows 74..96, cols 84..96)
    np.testing.assert_allclose(acc.read()[truth], 0.9, rtol=1e-5)
    grid = utm_grid(h, w) if kind == "utm" else wgs84_grid(h, w)
    comps = vectorize(acc, grid, 0.5, block_rows=23)  # 8 strip borders cross the disk
    assert len(comps) == 1
    c = comps[0]
    assert c.geometry.geom_type == "Polygon" and c.geometry.is_valid
    assert c.pixel_count == truth.sum()
    rows, cols = np.nonzero(truth)
    assert c.bbox_px == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    assert c.mean_prob == pytest.approx(0.9, rel=1e-5) and c.max_prob == pytest.approx(0.9, 1e-5)
    px_area = 0.25 if kind == "utm" else pixel_area_m2(grid, h / 2, w / 2)
    true_area = math.pi * 60.0**2 * px_area
    assert c.area_m2 == pytest.approx(true_area, rel=0.02)
    if kind == "wgs84":
        assert 0.5 < px_area < 1.0  # ~0.79 x 1.11 m at 45° N: the degrees really were converted


def test_ring_keeps_its_hole_across_blocks():
    h, w = 120, 120
    ring = disk(h, w, 60, 60, 45) & ~disk(h, w, 60, 60, 20)
    comps = vectorize(ArraySource(ring), utm_grid(h, w), 0.5, block_rows=16)
    assert len(comps) == 1
    g = comps[0].geometry
    assert g.geom_type == "Polygon" and len(g.interiors) == 1
    assert g.area == pytest.approx(ring.sum() * 0.25)
    hole = Polygon(g.interiors[0])
    assert hole.area == pytest.approx(disk(h, w, 60, 60, 20).sum() * 0.25)


def test_u_and_n_shapes_join_through_other_blocks():
    m = np.zeros((60, 50), bool)
    m[5:40, 5:12] = True  # U: two arms joined by a bottom bar
    m[5:40, 30:37] = True
    m[33:40, 5:37] = True
    m[45:58, 2:48] = True  # n: top bar with two legs below it
    m[45:50, 2:48] = True
    m[50:58, 10:20] = False
    m[50:58, 25:40] = False
    comps = vectorize(ArraySource(m), utm_grid(*m.shape), 0.5, block_rows=4)
    assert len(comps) == 2
    assert sorted(c.pixel_count for c in comps) == sorted(
        [int(m[:42].sum()), int(m[42:].sum())])
    assert all(c.geometry.geom_type == "Polygon" for c in comps)


def test_candidate_axes_are_its_length_and_width_in_any_orientation_across_blocks():
    m = np.zeros((300, 300), bool)
    m[50:60, 20:60] = True  # 40 x 10, axis-aligned, in two 7-row strips and more
    yy, xx = np.mgrid[0:300, 0:300]
    u, v = ((xx - 200) + (yy - 200)) / math.sqrt(2), ((xx - 200) - (yy - 200)) / math.sqrt(2)
    m[(abs(u) < 16) & (abs(v) < 4)] = True  # 32 x 8 at 45 degrees, far down the raster
    m[250:251, 20:21] = True  # a lone pixel
    comps = sorted(find_components(ArraySource(m), utm_grid(*m.shape), 0.5, block_rows=7),
                   key=lambda c: c.bbox_px)
    assert comps[0].axes_px == pytest.approx((40.0, 10.0))
    length, width = comps[1].axes_px
    assert length == pytest.approx(32.0, abs=1.0) and width == pytest.approx(8.0, abs=0.6)
    assert comps[2].axes_px == pytest.approx((1.0, 1.0))


def test_diagonal_touch_is_not_a_connection():
    m = np.zeros((10, 10), bool)
    m[2:5, 2:5] = True
    m[5:8, 5:8] = True  # touches only at a corner, across a block border
    comps = vectorize(ArraySource(m), utm_grid(10, 10), 0.5, block_rows=5)
    assert len(comps) == 2


def test_stats_threshold_and_valid_fn():
    prob = np.zeros((40, 40), np.float32)
    prob[5:15, 5:15] = 0.6
    prob[8, 8] = 0.95
    prob[20:30, 20:30] = 0.49  # below threshold
    prob[30:38, 2:10] = 0.8  # declared nodata by valid_fn
    src = ArraySource(prob)

    def valid_fn(rows: slice, cols: slice) -> np.ndarray:
        v = np.ones((40, 40), bool)
        v[30:, :12] = False
        return v[rows, cols]

    comps = vectorize(src, utm_grid(40, 40), 0.5, valid_fn=valid_fn, block_rows=6)
    assert len(comps) == 1
    c = comps[0]
    assert c.pixel_count == 100 and c.max_prob == pytest.approx(0.95)
    assert c.mean_prob == pytest.approx((99 * 0.6 + 0.95) / 100, rel=1e-5)
    assert c.bbox_px == (5, 5, 15, 15)
    assert c.geometry.equals(box(500002.5, 3999992.5, 500007.5, 3999997.5))
    # every read is at most block_rows tall: full-width strips to find objects, then only the
    # kept object's bounding box (columns 5..15) to build its polygon
    assert all(r.stop - r.start <= 6 for r, _ in src.reads)
    full = [(r, cl) for r, cl in src.reads if (cl.start, cl.stop) == (0, 40)]
    boxed = [(r, cl) for r, cl in src.reads if (cl.start, cl.stop) != (0, 40)]
    assert len(full) == 7 and boxed and all((cl.start, cl.stop) == (5, 15) and r.start >= 5
                                            and r.stop <= 15 for r, cl in boxed)


def test_sorted_by_mean_probability():
    prob = np.zeros((30, 30), np.float32)
    prob[2:6, 2:6] = 0.6
    prob[10:20, 10:20] = 0.9
    comps = vectorize(ArraySource(prob), utm_grid(30, 30), 0.5)
    assert [c.pixel_count for c in comps] == [100, 16]


def test_min_area_in_square_metres_utm_and_geographic():
    m = np.zeros((100, 100), bool)
    m[5:15, 5:15] = True  # 100 px
    m[40:80, 40:80] = True  # 1600 px
    src = ArraySource(m)
    utm = vectorize(src, utm_grid(100, 100), 0.5, min_area_m2=100.0)  # 25 m² and 400 m²
    assert [c.pixel_count for c in utm] == [1600]
    assert utm[0].area_m2 == pytest.approx(400.0, rel=1e-3)
    geo = wgs84_grid(100, 100, res=1e-4, lat0=60.0)  # ~5.6 m x 11.1 m pixels at 60° N
    px = pixel_area_m2(geo, 50, 50)
    assert 55 < px < 70
    kept = vectorize(src, geo, 0.5, min_area_m2=200 * px)
    assert [c.pixel_count for c in kept] == [1600]
    assert kept[0].area_m2 == pytest.approx(1600 * px, rel=0.01)
    assert len(vectorize(src, geo, 0.5, min_area_m2=50 * px)) == 2


def test_simplify_reduces_vertices_and_keeps_area():
    m = disk(200, 200, 100, 100, 80)
    src = ArraySource(m)
    raw = vectorize(src, utm_grid(200, 200), 0.5)[0]
    simple = vectorize(src, utm_grid(200, 200), 0.5, simplify_px=1.0)[0]
    n_raw = shapely.get_num_coordinates(raw.geometry)
    n_simple = shapely.get_num_coordinates(simple.geometry)
    assert n_simple < n_raw / 3, (n_raw, n_simple)
    assert simple.geometry.is_valid
    assert simple.area_m2 == pytest.approx(raw.area_m2, rel=0.01)
    assert simple.pixel_count == raw.pixel_count


def test_empty_mask_gives_no_components():
    src = ArraySource(np.zeros((50, 60), np.float32))
    assert vectorize(src, utm_grid(50, 60), 0.5) == []
    with pytest.raises(ValueError):
        vectorize(src, utm_grid(50, 61), 0.5)
    with pytest.raises(ValueError):
        vectorize(src, utm_grid(50, 60), 0.0)


def test_component_stats_reads_only_the_bbox():
    prob = np.zeros((100, 100), np.float32)
    prob[20:30, 40:50] = 0.5
    prob[25, 45] = 1.0
    src = ArraySource(prob)
    grid = utm_grid(100, 100)
    poly = shapely.geometry.box(*(grid.transform @ (40, 30)), *(grid.transform @ (50, 20)))
    st = component_stats(src, poly, grid)
    assert st.pixel_count == 100 and st.max_prob == 1.0
    assert st.mean_prob == pytest.approx((99 * 0.5 + 1.0) / 100)
    assert src.reads == [(slice(20, 30), slice(40, 50))]


# ---------------------------------------------------------------------------- areas
def test_area_m2_across_crs_kinds():
    sq = box(500000, 4000000, 500100, 4000100)  # 100 m x 100 m in UTM 33N
    assert area_m2(sq, UTM) == pytest.approx(10000.0, rel=1e-3)
    assert area_m2(sq, "EPSG:32633") == pytest.approx(10000.0, rel=1e-3)
    deg = box(0, 0, 1, 1)  # one degree cell at the equator: ~12 308 km²
    assert area_m2(deg, WGS84) == pytest.approx(1.2308e10, rel=2e-3)
    # Web Mercator at 60° N: planar area is 4x too large; the ellipsoidal area is not fooled
    tr = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    x, y = tr.transform(10.0, 60.0)
    merc = box(x, y, x + 1000, y + 1000)
    assert area_m2(merc, "EPSG:3857") == pytest.approx(1e6 / 4, rel=0.01)
    assert area_m2(sq, None) == pytest.approx(10000.0)
    assert area_m2(Polygon(), UTM) == 0.0


# --------------------------------------------------------------------------- output
RECORDS = [
    {"expression": "the large white building", "score": 0.91, "area_m2": 400.0, "rank": 1},
    {"expression": "the large white building", "score": 0.55, "area_m2": 25.5, "rank": 2},
]
GEOMS = [box(500000, 4000000, 500020, 4000020),
         box(500100, 4000100, 500105, 4000105).difference(box(500101, 4000101, 500102, 4000102))]


@pytest.mark.parametrize("name", ["out.gpkg", "out.geojson"])
def test_layer_round_trip(tmp_path, name):
    path = tmp_path / name
    write_layer(path, RECORDS, GEOMS, UTM)
    info = pyogrio.read_info(path)
    assert info["features"] == 2 and CRS.from_user_input(info["crs"]) == UTM
    df = pyogrio.read_dataframe(path)
    assert list(df["expression"]) == [r["expression"] for r in RECORDS]
    assert list(df["rank"]) == [1, 2] and df["score"].tolist() == [0.91, 0.55]
    assert df["area_m2"].tolist() == [400.0, 25.5]
    assert df.geometry.iloc[1].area == pytest.approx(GEOMS[1].area)  # hole kept
    assert all(t == "MultiPolygon" for t in df.geometry.geom_type)
    if name.endswith(".gpkg"):
        assert pyogrio.list_layers(path)[0][0] == "referred_objects"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_empty_layer_is_valid_with_crs_and_schema(tmp_path):
    path = tmp_path / "none.gpkg"
    write_layer(path, [], [], UTM, layer="custom")
    info = pyogrio.read_info(path, layer="custom")
    assert info["features"] == 0 and CRS.from_user_input(info["crs"]) == UTM
    assert list(info["fields"]) == ["expression", "score", "area_m2", "rank"]
    assert list(info["ogr_types"]) == ["OFTString", "OFTReal", "OFTReal", "OFTInteger64"]
    assert info["geometry_type"] == "MultiPolygon"
    gj = tmp_path / "none.geojson"
    write_layer(gj, [], [], UTM)
    gi = pyogrio.read_info(gj)
    assert gi["features"] == 0 and CRS.from_user_input(gi["crs"]) == UTM


def test_vectorized_components_written_in_source_crs(tmp_path):
    m = disk(64, 64, 32, 32, 20)
    grid = wgs84_grid(64, 64)
    comps = vectorize(ArraySource(m), grid, 0.5)
    recs = [{"expression": "the pond", "score": c.mean_prob, "area_m2": c.area_m2, "rank": i + 1}
            for i, c in enumerate(comps)]
    path = tmp_path / "pond.gpkg"
    write_layer(path, recs, [c.geometry for c in comps], grid.crs)
    df = pyogrio.read_dataframe(path)
    assert CRS.from_user_input(df.crs.to_wkt()) == WGS84
    assert df.geometry.iloc[0].bounds == pytest.approx(comps[0].geometry.bounds)


def test_rfc7946_geojson_is_reprojected(tmp_path):
    path = tmp_path / "strict.geojson"
    write_layer(path, RECORDS[:1], GEOMS[:1], UTM, rfc7946=True)
    df = pyogrio.read_dataframe(path)
    assert CRS.from_user_input(df.crs.to_wkt()) == WGS84
    lon, lat = df.geometry.iloc[0].centroid.coords[0]
    assert 14 < lon < 16 and 35 < lat < 37  # UTM 33N, 4000 km north


def test_write_failure_leaves_no_file(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="does not exist"):
        write_layer(tmp_path / "nope" / "x.gpkg", RECORDS, GEOMS, UTM)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UsageError):
        write_layer(tmp_path / "a_file" / "x.gpkg", RECORDS, GEOMS, UTM)

    existing = tmp_path / "keep.gpkg"
    write_layer(existing, RECORDS, GEOMS, UTM)
    before = existing.read_bytes()

    def boom(frame, path, **kwargs):
        Path(path).write_bytes(b"half a geopackage")
        Path(f"{path}-journal").write_bytes(b"x")
        raise pyogrio.errors.DataSourceError("disk full")

    monkeypatch.setattr(pyogrio, "write_dataframe", boom)
    for name in ("keep.gpkg", "new.gpkg"):
        with pytest.raises(UsageError, match="disk full"):
            write_layer(tmp_path / name, RECORDS, GEOMS, UTM)

    def interrupted(frame, path, **kwargs):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pyogrio, "write_dataframe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_layer(tmp_path / "new.gpkg", RECORDS, GEOMS, UTM)
    assert existing.read_bytes() == before  # the old result survives a failed overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "keep.gpkg"]


def test_driver_choice():
    assert output.driver_for("a.GeoJSON") == "GeoJSON"
    assert output.driver_for("a.gpkg") == "GPKG"
    with pytest.raises(ValueError):
        write_layer("x.gpkg", RECORDS, GEOMS[:1], UTM)


def test_strip_height_is_capped_by_max_block_pixels():
    m = np.zeros((30, 40), bool)
    m[3:27, 5:30] = True
    src = ArraySource(m)
    comps = vectorize(src, utm_grid(30, 40), 0.5, block_rows=2048, max_block_pixels=100)
    assert len(comps) == 1 and comps[0].pixel_count == 24 * 25
    assert max(r.stop - r.start for r, _ in src.reads) == 2  # 100 px // 40 columns


def test_extra_fields_and_numpy_values(tmp_path):
    recs = [dict(r, perimeter_m=np.float32(80.0), run_id="abc") for r in RECORDS]
    recs[0]["score"] = np.float32(0.5)
    recs[1]["rank"] = np.int64(2)
    path = tmp_path / "extra.gpkg"
    write_layer(path, recs, [GEOMS[0], shapely.MultiPolygon([GEOMS[0], GEOMS[1]])], UTM)
    df = pyogrio.read_dataframe(path)
    assert list(df.columns[:6]) == ["expression", "score", "area_m2", "rank", "perimeter_m",
                                    "run_id"]
    assert df["score"].tolist() == [0.5, 0.55] and df["run_id"].tolist() == ["abc", "abc"]
    assert len(df.geometry.iloc[1].geoms) == 2


@pytest.mark.parametrize("kind", ["utm", "wgs84"])
def test_pixel_areas_interpolated_match_exact(kind):
    grid = utm_grid(3000, 2000) if kind == "utm" else wgs84_grid(3000, 2000, res=1e-3, lat0=60.0)
    rng = np.random.default_rng(1)
    rows, cols = rng.uniform(0, 3000, 50), rng.uniform(0, 2000, 50)
    exact = np.array([pixel_area_m2(grid, r, c) for r, c in zip(rows, cols)])
    got = pixel_areas_m2(grid, rows, cols)
    # the exact geodesic area of one sub-metre pixel itself carries ~1e-5 numerical noise
    np.testing.assert_allclose(got, exact, rtol=1e-4)
    if kind == "wgs84":  # 3 degrees of latitude: areas really differ, so this is not trivial
        assert exact.max() / exact.min() > 1.05
