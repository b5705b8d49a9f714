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
