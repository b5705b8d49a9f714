"""Output formats, --dst-crs, GeoPackage version, GeoJSON layer name and the overwrite rules,
each read back with pyogrio (and the real CLI with the stand-in model for the rules)."""

from __future__ import annotations

import sqlite3

import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from rrsis_geo.cli.main import cli
from rrsis_geo.errors import OutputError, UsageError
from rrsis_geo.geo.output import GPKG_VERSION, driver_for, write_layer
from tests.rasters import scene, write_tif

UTM = "EPSG:32633"
RECS = [{"expression": "the roof", "score": 0.9, "area_m2": 100.0, "rank": 1}]
GEOMS = [shapely.box(500000, 4999990, 500010, 5000000)]


@pytest.mark.parametrize("name,driver", [("o.gpkg", "GPKG"), ("o.geojson", "GeoJSON"),
                                         ("o.shp", "ESRI Shapefile"), ("o.fgb", "FlatGeobuf"),
                                         ("o.kml", "KML"), ("o.csv", "CSV"), ("o.gml", "GML"),
                                         ("o.geojsonl", "GeoJSONSeq"), ("o.sqlite", "SQLite")])
def test_each_format_by_extension_reads_back(tmp_path, name, driver):
    out = write_layer(tmp_path / name, RECS, GEOMS, UTM)
    read_by = pyogrio.read_info(out)["driver"]
    # LIBKML reads KML; one GeoJSON text sequence line is also GeoJSON
    assert read_by == driver or (driver, read_by) in (("KML", "LIBKML"), ("GeoJSONSeq", "GeoJSON"))
    df = pyogrio.read_dataframe(out)
    assert len(df) == 1
    assert float(df["area_m2"].iloc[0]) == 100.0 and str(df["expression"].iloc[0]) == "the roof"
    # KML and GeoJSON text sequences are always WGS 84; CSV holds WKT without a CRS
    if driver not in ("KML", "CSV", "GeoJSONSeq"):
        assert df.crs.to_epsg() == 32633
        assert df.geometry.iloc[0].area == pytest.approx(100.0)
    # nothing but the output (and a Shapefile's own sidecars) is left in the folder
    stray = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert stray == []


def test_driver_option_and_unknown_extension(tmp_path):
    out = write_layer(tmp_path / "o.dat", RECS, GEOMS, UTM, driver="FlatGeobuf")
    assert pyogrio.read_info(out)["driver"] == "FlatGeobuf"
    with pytest.raises(UsageError, match="--driver"):
        driver_for(tmp_path / "o.xyz")
    with pytest.raises(UsageError, match="not a vector format"):
        driver_for(tmp_path / "o.gpkg", "NoSuchDriver")


def test_dst_crs_reprojects_and_keeps_area(tmp_path):
    out = write_layer(tmp_path / "o.gpkg", RECS, GEOMS, UTM, dst_crs="EPSG:4326")
    df = pyogrio.read_dataframe(out)
    assert df.crs.to_epsg() == 4326 and float(df["area_m2"].iloc[0]) == 100.0
    x, y = df.geometry.iloc[0].centroid.coords[0]
    assert 14.9 < x < 15.1 and 45.0 < y < 45.2  # UTM 33N 500 km E, 5000 km N


def test_geopackage_version_and_geojson_name(tmp_path):
    gpkg = write_layer(tmp_path / "o.gpkg", RECS, GEOMS, UTM)
    with sqlite3.connect(gpkg) as con:
        user_version = con.execute("pragma user_version").fetchone()[0]
    major, minor = (int(v) for v in GPKG_VERSION.split("."))
    assert user_version == major * 10000 + minor * 100
    gj = write_layer(tmp_path / "buildings.geojson", RECS, GEOMS, UTM)
    assert '"name": "buildings"' in gj.read_text()


def test_overwrite_keeps_other_layers_and_append_adds(tmp_path):
    out = tmp_path / "o.gpkg"
    write_layer(out, RECS, GEOMS, UTM, layer="first", mode="create")
    with pytest.raises(OutputError, match="exists"):
        write_layer(out, RECS, GEOMS, UTM, layer="second", mode="create")
    write_layer(out, RECS * 2, GEOMS * 2, UTM, layer="second", mode="overwrite")
    write_layer(out, RECS, GEOMS, UTM, layer="second", mode="overwrite")
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["first", "second"]
    assert len(pyogrio.read_dataframe(out, layer="second")) == 1
    # append in another CRS: reprojected to the layer's, features added
    write_layer(out, RECS, GEOMS, UTM, layer="first", mode="append", dst_crs="EPSG:4326")
    first = pyogrio.read_dataframe(out, layer="first")
    assert len(first) == 2 and first.crs.to_epsg() == 32633
    assert first.geometry.iloc[1].area == pytest.approx(100.0, rel=1e-6)
    # append to a layer of another schema is refused, the file unchanged
    other = tmp_path / "other.gpkg"
    write_layer(other, [{"name": "x"}], GEOMS, UTM, schema={"name": str})
    before = other.read_bytes()
    with pytest.raises(OutputError, match="schema"):
        write_layer(other, RECS, GEOMS, UTM, mode="append")
    assert other.read_bytes() == before


def test_shapefile_overwrite_replaces_the_set(tmp_path):
    out = tmp_path / "o.shp"
    write_layer(out, RECS * 3, GEOMS * 3, UTM)
    write_layer(out, RECS, GEOMS, UTM, mode="overwrite")
    assert len(pyogrio.read_dataframe(out)) == 1
    write_layer(out, RECS, GEOMS, UTM, mode="append")
    assert len(pyogrio.read_dataframe(out)) == 2


@pytest.fixture
def runner(monkeypatch):
    import rrsis_geo.model as model_pkg
    from tests.standin import RedSegmenter

    monkeypatch.setattr(model_pkg, "load_fianet", lambda p, **k: RedSegmenter(64), raising=False)
    return CliRunner()


def _segment(runner, src, out, *extra):
    res = runner.invoke(cli, ["segment", str(src), "-e", "red", "-o", str(out), "--progress",
                              "none", "--tile-size", "64", *extra])
    return res.exit_code, res.output


def test_cli_overwrite_rules(runner, tmp_path):
    src = write_tif(tmp_path / "in.tif", scene(100, 100, [(10, 10, 40, 40)]))
    out = tmp_path / "found.gpkg"
    assert _segment(runner, src, out, "--layer", "first")[0] == 0
    code, text = _segment(runner, src, out, "--layer", "second")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "--overwrite" in lines[0], text
    assert list(pyogrio.list_layers(out)[:, 0]) == ["first"]
    assert _segment(runner, src, out, "--layer", "second", "--overwrite")[0] == 0
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["first", "second"]
    assert _segment(runner, src, out, "--layer", "second", "--append")[0] == 0
    assert len(pyogrio.read_dataframe(out, layer="second")) == 2
    assert _segment(runner, src, out, "--overwrite", "--append")[0] == 2
    # other formats and --dst-crs through the CLI
    fgb = tmp_path / "found.fgb"
    assert _segment(runner, src, fgb, "--dst-crs", "EPSG:4326")[0] == 0
    df = pyogrio.read_dataframe(fgb)
    assert len(df) == 1 and df.crs.to_epsg() == 4326
    assert _segment(runner, src, tmp_path / "x.gpkg", "--dst-crs", "EPSG:nope")[0] == 2
    code, text = _segment(runner, src, tmp_path / "x.xyz")
    assert code == 2 and "--driver" in text and not (tmp_path / "x.xyz").exists()
