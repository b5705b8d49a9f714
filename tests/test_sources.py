"""Raster inputs GDAL opens: /vsizip/, a COG over HTTP (loopback server with range requests),
URL mapping, network failures (exit 3, one line) and the output guard on archive inputs."""

from __future__ import annotations

import zipfile

import numpy as np
import pyogrio
import pytest
import shapely
import rasterio
from click.testing import CliRunner
from rasterio.shutil import copy as rio_copy

from rrsis_geo.cli.main import cli
from rrsis_geo.errors import BadInputError, OutputError
from rrsis_geo.geo.raster import open_raster
from rrsis_geo.geo.sources import gdal_path, is_local, is_remote, local_container
from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
from rrsis_geo.inference.segmenter import Segmenter
from rrsis_geo.safety import check_outputs
from tests.httpserve import serve_folder
from tests.standin import RedSegmenter
from tests.rasters import scene, write_tif


def test_url_forms_map_to_gdal_virtual_file_systems():
    assert gdal_path("https://h.org/a.tif") == "/vsicurl/https://h.org/a.tif"
    assert gdal_path("http://h.org/a.tif?x=1") == "/vsicurl/http://h.org/a.tif?x=1"
    assert gdal_path("s3://bucket/k/a.tif") == "/vsis3/bucket/k/a.tif"
    assert gdal_path("gs://bucket/a.tif") == "/vsigs/bucket/a.tif"
    assert gdal_path("file:///data/a.tif") == "/data/a.tif"
    assert gdal_path("/vsizip/a.zip/b.tif") == "/vsizip/a.zip/b.tif"
    assert gdal_path("rel/a.tif") == "rel/a.tif"
    assert is_local("rel/a.tif") and not is_local("s3://b/a.tif")
    assert not is_local("/vsizip/a.zip/b.tif") and not is_remote("/vsizip/a.zip/b.tif")
    assert is_remote("https://h/a.tif") and is_remote("/vsizip//vsicurl/http://h/a.zip/b.tif")


def _zip_scene(tmp_path):
    src = write_tif(tmp_path / "scene.tif", scene(100, 100, [(10, 10, 40, 40)]))
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(src, "inner/scene.tif")
    src.unlink()
    return archive


def test_vsizip_raster_segments_and_the_archive_is_protected(tmp_path):
    archive = _zip_scene(tmp_path)
    path = f"/vsizip/{archive}/inner/scene.tif"
    assert local_container(path) == str(archive)
    info = open_raster(path)
    assert (info.width, info.height) == (100, 100)

    seg = Segmenter(model=RedSegmenter(input_size=64), device="cpu")
    out = tmp_path / "found.gpkg"
    opts = SegmentOptions(tile_size=64, overlap=16, simplify=0.0)
    res = segment_raster(path, "red", str(out), opts, segmenter=seg)
    df = pyogrio.read_dataframe(out)
    assert res["objects"] == 1 and len(df) == 1
    assert df.crs.to_epsg() == 32633
    assert df.area.iloc[0] == pytest.approx(30 * 30 * 0.25, rel=0.05)

    # writing over the archive the input is read from is refused before any work
    with pytest.raises(OutputError, match="archive of the input"):
        check_outputs([("input", path)], [("output", str(archive))])


def test_cli_info_on_vsizip_and_missing_member_exit_3(tmp_path):
    archive = _zip_scene(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(cli, ["info", f"/vsizip/{archive}/inner/scene.tif", "--json"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(cli, ["info", f"/vsizip/{archive}/inner/nope.tif"])
    assert bad.exit_code == 3
    lines = [ln for ln in bad.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error:") and "no such file" in lines[0]


def _cog(tmp_path):
    """A 512 x 512 tiled COG with overviews whose bytes are mostly pixel data."""
    rng = np.random.default_rng(1)
    arr = scene(512, 512, [(100, 100, 200, 220)])
    arr[:, 300:, :] = rng.integers(0, 255, (3, 212, 512), dtype=np.uint8)  # incompressible
    plain = write_tif(tmp_path / "plain.tif", arr)
    folder = tmp_path / "www"
    folder.mkdir()
    cog = folder / "scene_cog.tif"
    rio_copy(plain, cog, driver="COG", blocksize=128, overview_resampling="average")
    return cog


def test_cog_over_http_is_read_with_range_requests_and_segmented(tmp_path):
    cog = _cog(tmp_path)
    seg = Segmenter(model=RedSegmenter(input_size=64), device="cpu")
    with serve_folder(cog.parent) as (base, log), rasterio.Env(
            GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):  # no listing of the folder
        url = base + cog.name
        info = open_raster(url)
        assert info.path == "/vsicurl/" + url and (info.width, info.height) == (512, 512)
        header_requests = len(log())
        out = tmp_path / "found.geojson"
        opts = SegmentOptions(tile_size=128, overlap=32, simplify=0.0)
        res = segment_raster(url, "red", str(out), opts, segmenter=seg)
    assert res["objects"] == 1
    df = pyogrio.read_dataframe(out)
    assert len(df) == 1 and df.area.iloc[0] == pytest.approx(100 * 120 * 0.25, rel=0.05)
    log = log()
    ranged = [r for r in log if r[0] == "GET" and r[2]]
    assert header_requests >= 1 and ranged, log
    # opening read a small part of the file, not all of it
    first = [r for r in log[:header_requests] if r[2]]
    sizes = [int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for _, _, r in first]
    assert sum(sizes) < cog.stat().st_size / 2, (sizes, cog.stat().st_size)


def test_http_404_and_refused_connection_exit_3_one_line(tmp_path):
    runner = CliRunner()
    with serve_folder(tmp_path) as (base, _log):
        res = runner.invoke(cli, ["info", base + "missing.tif"])
    assert res.exit_code == 3, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "network" in lines[0], res.output

    out = tmp_path / "o.gpkg"
    with serve_folder(tmp_path) as (base, _log):
        dead = base  # the port is free again once the server is gone
    res = runner.invoke(cli, ["segment", dead + "x.tif", "-e", "red", "-o", str(out),
                              "--progress", "none"])
    assert res.exit_code == 3, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error:") and "network" in lines[0]
    assert not out.exists()


def test_remote_output_is_refused():
    with pytest.raises(OutputError, match="local files only"):
        check_outputs([], [("output", "s3://bucket/out.gpkg")])


def test_missing_local_file_still_says_no_such_file(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        open_raster(tmp_path / "nope.tif")


def test_roi_from_a_vector_inside_a_zip(tmp_path):
    from rrsis_geo.geo.output import write_layer
    from rrsis_geo.geo.roi import parse_roi

    src = write_tif(tmp_path / "scene.tif", scene(100, 100, []))
    region = write_layer(tmp_path / "region.gpkg", [{"expression": "r", "score": 1.0,
                                                     "area_m2": 1.0, "rank": 1}],
                         [shapely.box(500005, 4999960, 500020, 4999990)], "EPSG:32633")
    archive = tmp_path / "region.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(region, "region.gpkg")
    bounds = parse_roi(f"/vsizip/{archive}/region.gpkg", open_raster(src))
    assert bounds == pytest.approx((500005, 4999960, 500020, 4999990))
