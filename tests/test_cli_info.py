"""``rrsis-geo info``: text and JSON descriptions; bad inputs exit 3 with one stderr line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from rrsis_geo.cli.main import cli
from tests import rasters as R


def run(*args: str):
    return CliRunner().invoke(cli, ["info", *args])


def test_info_text_for_utm_raster(tmp_path):
    path = R.utm_raster(tmp_path / "r.tif", width=1537, height=911, dtype="uint16", blocksize=256)
    res = run(str(path))
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert "1537 x 911 pixels, 3 band(s)" in out
    assert "EPSG:32633" in out and "projected" in out
    assert "0.5 x 0.5 m per pixel" in out
    assert "uint16" in out and "red" in out and "p98" in out
    assert "Default RGB bands: 1,2,3" in out


def test_info_json_has_value_ranges(tmp_path):
    img = R.smooth_image(300, 200, 3, "uint8")
    path = R.write_raster(tmp_path / "r.tif", img)
    res = run(str(path), "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert (d["width"], d["height"], d["count"]) == (300, 200, 3)
    assert d["crs"]["epsg"] == 32633 and d["crs"]["is_geographic"] is False
    assert d["res"] == [0.5, 0.5] and d["ground_resolution_m"] == [0.5, 0.5]
    assert d["dtypes"] == ["uint8"] * 3 and d["colorinterp"] == ["red", "green", "blue"]
    assert d["valid_fraction_estimate"] == 1.0
    for b in d["bands"]:
        band = img[b["index"] - 1].astype(float)
        assert b["min"] == band.min() and b["max"] == band.max()
        assert b["p2"] == pytest.approx(np.percentile(band, 2), abs=1)
        assert b["p98"] == pytest.approx(np.percentile(band, 98), abs=1)


def test_info_geographic_shows_metres(tmp_path):
    path = R.geographic_raster(tmp_path / "g.tif", res=1e-5, origin=(10.0, 60.0))
    res = run(str(path))
    assert res.exit_code == 0, res.stderr
    assert "EPSG:4326" in res.stdout and "geographic" in res.stdout and "degrees" in res.stdout
    d = json.loads(run(str(path), "--json").stdout)
    mx, my = d["ground_resolution_m"]
    assert mx == pytest.approx(0.558, rel=0.01) and my == pytest.approx(1.116, rel=0.01)


def test_info_reports_masks(tmp_path):
    nd = json.loads(run(str(R.nodata_border_raster(tmp_path / "nd.tif", border=8)), "--json").stdout)
    assert nd["nodata"] == 0.0 and nd["valid_fraction_estimate"] == pytest.approx(48 * 32 / (64 * 48))
    al = json.loads(run(str(R.alpha_raster(tmp_path / "al.tif")), "--json").stdout)
    assert al["has_alpha"] is True and al["colorinterp"][3] == "alpha"
    mk = run(str(R.masked_raster(tmp_path / "mk.tif")))
    assert mk.exit_code == 0 and "internal mask" in mk.stdout
    gray = json.loads(run(str(R.utm_raster(tmp_path / "g.tif", count=1, dtype="float32")), "--json").stdout)
    assert gray["default_bands"] == [1, 1, 1] and gray["bands"][0]["dtype"] == "float32"


def test_info_on_raster_without_crs_still_works(tmp_path):
    res = run(str(R.write_raster(tmp_path / "n.tif", crs=None)))
    assert res.exit_code == 0, res.stderr
    assert "CRS:         none" in res.stdout


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_info_on_plain_image_prints_no_warning(tmp_path):
    """A TIFF with no georeferencing at all: described, nothing on stderr."""
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=10, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 10, 20), 7, np.uint8))
    proc = subprocess.run(
        [sys.executable, "-m", "rrsis_geo", "info", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert "CRS:         none" in proc.stdout and "20 x 10 pixels" in proc.stdout


def test_info_all_nodata_raster(tmp_path):
    path = R.write_raster(tmp_path / "z.tif", np.zeros((3, 16, 16), np.uint8), nodata=0)
    d = json.loads(run(str(path), "--json").stdout)
    assert d["valid_fraction_estimate"] == 0.0 and d["bands"][0]["p2"] is None


def _empty_file(path):
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "rotated", "empty"])
def test_bad_input_exits_3_with_one_line(tmp_path, kind):
    path = {
        "missing": lambda: tmp_path / "missing.tif",
        "text": lambda: R.not_a_raster(tmp_path / "t.tif"),
        "truncated": lambda: R.truncated_raster(tmp_path / "c.tif"),
        "rotated": lambda: R.rotated_raster(tmp_path / "r.tif"),
        "empty": lambda: _empty_file(tmp_path / "e.tif"),
    }[kind]()
    res = run(str(path))
    assert res.exit_code == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error: ")
    assert "Traceback" not in res.output
    assert res.stdout == ""


def test_info_subprocess_one_stderr_line(tmp_path):
    """The real entry point (python -m rrsis_geo): exit 3 and exactly one stderr line."""
    path = R.truncated_raster(tmp_path / "cut.tif")
    proc = subprocess.run(
        [sys.executable, "-m", "rrsis_geo", "info", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "truncated or corrupt" in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "rrsis_geo", "info", "--json", str(R.utm_raster(tmp_path / "ok.tif"))],
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["count"] == 3


def test_info_says_when_value_ranges_come_from_sampled_windows(tmp_path, monkeypatch):
    import rrsis_geo.geo.overview as overview

    path = R.utm_raster(tmp_path / "r.tif", width=600, height=400)
    monkeypatch.setattr(overview, "DECODE_BUDGET_PIXELS", 50_000)
    res = run(str(path))
    assert res.exit_code == 0, res.stderr
    assert "sampled across the raster" in res.stdout
    d = json.loads(run(str(path), "--json").stdout)
    assert d["overview_sampled"] is True and d["bands"][0]["p98"] > d["bands"][0]["p2"]
