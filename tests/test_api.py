"""The Python API: rrsis_geo.Model / segment / quicklook with the stand-in model, the CLI's
repeated -e and --expressions FILE, and the README's "From Python" example run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
from click.testing import CliRunner

import rrsis_geo
from rrsis_geo.cli.main import cli
from rrsis_geo.inference.segmenter import Segmenter
from tests.standin import RedSegmenter
from tests.rasters import scene, write_tif

REPO = Path(__file__).resolve().parent.parent


def test_import_is_cheap_and_exports_the_api():
    code = ("import sys, rrsis_geo; heavy = [m for m in ('torch', 'rasterio', 'geopandas') "
            "if m in sys.modules]; print(heavy, sorted(rrsis_geo.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.startswith("[] ") and "'Model'" in out and "'segment'" in out


@pytest.fixture
def model():
    return rrsis_geo.Model.from_segmenter(Segmenter(model=RedSegmenter(input_size=64),
                                                    device="cpu"))


def test_model_segments_several_sentences_with_progress(tmp_path, model):
    src = write_tif(tmp_path / "in.tif", scene(100, 100, [(10, 10, 40, 40)]))
    steps = []
    gdf = model.segment(src, ["red", "the red roof"], tile_size=64, simplify=0.0,
                        progress=lambda stage, done, total: steps.append((stage, done, total)))
    assert list(gdf["expression"]) == ["red", "the red roof"]
    assert gdf.crs.to_epsg() == 32633 and gdf.geometry.iloc[0].area == pytest.approx(225.0)
    # one pass over the raster: one "tiles" stage for both sentences, one step per tile
    tiles = [s for s in steps if s[0] == "tiles"]
    single = []
    model.segment(src, "red", tile_size=64, progress=lambda *s: single.append(s))
    n = [s for s in single if s[0] == "tiles"][-1][2]
    assert tiles and tiles[-1][1] == tiles[-1][2] == n > 0  # not n per sentence
    assert {s[2] for s in tiles} == {n} and not [s for s in steps if "/" in s[0]]
    assert not list(tmp_path.glob(".rrsis-geo-*"))  # temporaries gone

    out = tmp_path / "found.fgb"
    one = model.segment(src, "red", tile_size=64, output=out, dst_crs="EPSG:4326")
    back = pyogrio.read_dataframe(out)
    assert len(back) == len(one) == 1 and back.crs.to_epsg() == 4326
    from rrsis_geo.errors import OutputError

    with pytest.raises(OutputError, match="exists"):
        model.segment(src, "red", tile_size=64, output=out)
    png = rrsis_geo.quicklook(src, one)
    assert bytes(png).startswith(b"\x89PNG") and png._repr_png_() == bytes(png)


def test_unknown_option_is_one_clear_error(tmp_path, model):
    from rrsis_geo.errors import UsageError

    with pytest.raises(UsageError, match="unknown option"):
        model.segment(tmp_path / "x.tif", "red", tile=64)


def test_cli_repeated_e_and_expressions_file_write_one_layer(tmp_path, monkeypatch):
    import rrsis_geo.model as model_pkg

    monkeypatch.setattr(model_pkg, "load_fianet", lambda p, **k: RedSegmenter(64), raising=False)
    src = write_tif(tmp_path / "in.tif", scene(100, 100, [(10, 10, 40, 40)]))
    sentences = tmp_path / "s.txt"
    sentences.write_text("# sentences\nthe red roof\n\nred things\n", encoding="utf-8")
    out = tmp_path / "found.gpkg"
    res = CliRunner().invoke(cli, ["segment", str(src), "-e", "red", "--expressions",
                                   str(sentences), "-o", str(out), "--progress", "none",
                                   "--tile-size", "64", "--layer", "many"])
    assert res.exit_code == 0, res.output
    df = pyogrio.read_dataframe(out, layer="many")
    assert list(df["expression"]) == ["red", "the red roof", "red things"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    res = CliRunner().invoke(cli, ["segment", str(src), "-o", str(tmp_path / "x.gpkg")])
    assert res.exit_code == 2 and "-e" in res.output


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no python-example block"
    return m.group(1)


def test_readme_python_example_runs(tmp_path):
    """The README's example, as written, with the shipped demo model and scene."""
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")
    script = tmp_path / "example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + _readme_example())
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    df = pyogrio.read_dataframe(tmp_path / "courts.gpkg")
    assert len(df) >= 1 and set(df["expression"]) <= {"the blue basketball court",
                                                      "the ship"}
    assert (tmp_path / "courts.png").read_bytes().startswith(b"\x89PNG")
