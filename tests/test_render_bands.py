"""``render --bands``: a B,G,R,NIR raster renders in its true colours, as segment reads it."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from rasterio.enums import ColorInterp

from rrsis_geo.cli.main import cli
from tests.rasters import write_raster


def _bgrn(path, colorinterp=None):
    """256² uint8 B,G,R,NIR: a pure red square (high R, low B and G) on a dark-blue ground."""
    data = np.zeros((4, 256, 256), np.uint8)
    data[0] = 120  # blue everywhere
    data[3] = 200  # NIR
    data[:, 64:192, 64:192] = 0
    data[2, 64:192, 64:192] = 250  # red inside the square (band 3)
    data[3, 64:192, 64:192] = 50
    return write_raster(path, data, colorinterp=colorinterp)


def _colour_at_centre(png):
    img = np.asarray(Image.open(png).convert("RGB"))
    h, w = img.shape[:2]
    # the picture is square (the caption, if any, sits below it): sample the square's centre
    return img[w // 2, w // 2].astype(int)


def test_render_bands_shows_true_colours(tmp_path):
    src = _bgrn(tmp_path / "bgrn.tif")
    runner = CliRunner()
    right, wrong = tmp_path / "right.png", tmp_path / "wrong.png"
    r = runner.invoke(cli, ["render", str(src), "-o", str(right), "--bands", "3,2,1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["render", str(src), "-o", str(wrong)])  # default: bands 1,2,3
    assert r.exit_code == 0, r.output
    red, green, blue = _colour_at_centre(right)
    assert red > 150 and green < 60 and blue < 60, (red, green, blue)
    red, green, blue = _colour_at_centre(wrong)
    assert blue > 150 and red < 60, (red, green, blue)


def test_render_default_follows_colour_interpretation(tmp_path):
    src = _bgrn(tmp_path / "bgrn.tif", colorinterp=[ColorInterp.blue, ColorInterp.green,
                                                      ColorInterp.red, ColorInterp.undefined])
    out = tmp_path / "ci.png"
    r = CliRunner().invoke(cli, ["render", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    red, green, blue = _colour_at_centre(out)
    assert red > 150 and blue < 60, (red, green, blue)


@pytest.mark.parametrize("bands", ["5,2,1", "3,2", "a,b,c"])
def test_render_bad_bands_is_a_usage_error(tmp_path, bands):
    src = _bgrn(tmp_path / "bgrn.tif")
    out = tmp_path / "x.png"
    r = CliRunner().invoke(cli, ["render", str(src), "-o", str(out), "--bands", bands])
    assert r.exit_code == 2, r.output
    assert "--bands" in r.output and not out.exists()


def _square_layer(path, raster):
    """A GeoPackage (layer "objects") with one polygon over the middle of ``raster``."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(raster) as ds:
        b, crs = ds.bounds, ds.crs
    dx, dy = (b.right - b.left) / 4, (b.top - b.bottom) / 4
    gdf = gpd.GeoDataFrame({"score": [0.9]}, crs=crs,
                           geometry=[box(b.left + dx, b.bottom + dy, b.right - dx, b.top - dy)])
    gdf.to_file(path, layer="objects", driver="GPKG")
    return path


@pytest.mark.parametrize("flag, case", [
    ("--vector", "missing"), ("--vector", "not_vector"), ("--vector", "no_layer"),
    ("--truth", "missing"), ("--truth", "not_vector"), ("--truth", "table"),
    ("--vector", "table")])  # --layer applies to --vector only
def test_render_unreadable_layer_is_bad_input(tmp_path, case, flag):
    """A missing or unreadable --vector / --truth, or an unknown --layer: exit 3, one line
    naming the file, no PNG."""
    src = _bgrn(tmp_path / "bgrn.tif")
    out = tmp_path / "out.png"
    layer = []
    if case == "missing":
        vec = tmp_path / "nope.gpkg"
    elif case == "not_vector":
        vec = tmp_path / "notes.gpkg"
        vec.write_text("not a vector file\n")
    elif case == "table":  # a deepforest CSV of crown boxes: rows, no geometry
        vec = tmp_path / "boxes.csv"
        vec.write_text("image_path,xmin,ymin,xmax,ymax,label\nbgrn.tif,1,1,5,5,Tree\n")
    else:
        vec = _square_layer(tmp_path / "res.gpkg", src)
        layer = ["--layer", "missing_layer"]
    r = CliRunner().invoke(cli, ["render", str(src), "-o", str(out), flag, str(vec), *layer])
    assert r.exit_code == 3, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rrsis-geo: error: {vec}: "), r.output
    assert "unexpected" not in r.output
    if case == "no_layer":
        assert "no layer 'missing_layer' (layers: objects)" in r.output
    if case == "table":
        assert "has no geometry (a table, not a vector layer)" in r.output
    assert not out.exists()


def test_render_outlines_a_readable_layer(tmp_path):
    src = _bgrn(tmp_path / "bgrn.tif")
    vec = _square_layer(tmp_path / "res.gpkg", src)
    out = tmp_path / "out.png"
    r = CliRunner().invoke(cli, ["render", str(src), "-o", str(out), "--vector", str(vec),
                                 "--layer", "objects", "--bands", "3,2,1"])
    assert r.exit_code == 0, r.output
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    yellow = (img[..., 0] > 200) & (img[..., 1] > 180) & (img[..., 2] < 80)
    assert yellow.sum() > 100  # the outline is drawn
