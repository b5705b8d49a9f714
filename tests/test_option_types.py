"""Typed options: flags parsed once at the command-line edge (rrsis_geo/cli/types.py), the same
parsers behind ``SegmentOptions`` for the Python API's text values (rrsis_geo/option_text.py),
and the errors that name the option's field."""

from __future__ import annotations

import pickle

import pytest
from click.testing import CliRunner

from rrsis_geo.cli.main import cli
from rrsis_geo.errors import OptionError, UsageError
from rrsis_geo.inference.pipeline import SegmentOptions


@pytest.mark.parametrize("flag, value, field", [
    ("--bands", "1,x", "bands"), ("--bands", "1,2", "bands"), ("--bands", "1,2,3,4", "bands"),
    ("--batch-size", "many", "batch_size"), ("--batch-size", "0", "batch_size"),
    ("--check-budget", "0", "check_budget"), ("--check-budget", "1.5", "check_budget"),
    ("--gsd", "nan", "gsd"), ("--gsd", "-1", "gsd"), ("--gsd", "metres", "gsd"),
])
@pytest.mark.parametrize("command", [["segment", "-o", "o.gpkg"],
                                     ["segment-many", "--out-dir", "o"]])
def test_bad_flag_value_is_refused_at_the_edge(tmp_path, monkeypatch, command, flag, value,
                                               field):
    """exit 2 and one line naming the flag, before the (missing) raster is looked at."""
    monkeypatch.chdir(tmp_path)
    name, *rest = command
    r = CliRunner().invoke(cli, [name, "missing.tif", *rest, "-e", "the pond", flag, value])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"rrsis-geo: error: {flag}"), r.output
    assert "missing.tif" not in r.output  # the raster was not opened
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    with pytest.raises(OptionError) as info:  # the library names the same field
        SegmentOptions(**{field: value}).validate()
    assert info.value.field == field and isinstance(info.value, UsageError)


@pytest.mark.parametrize("command", [["render", "missing.tif", "-o", "x.png"],
                                     ["dataset", "build", "missing.tif", "labels.gpkg",
                                      "--out", "out"]])
def test_bad_bands_is_refused_at_the_edge_of_other_commands(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, [*command, "--bands", "a,b,c"])
    assert r.exit_code == 2, r.output
    assert "rrsis-geo: error: --bands must be 1 or 3 comma-separated integers" in r.output


def test_typed_and_text_values_give_the_same_options():
    text = SegmentOptions(bands=" 4, 3 ,2", gsd="0.5", batch_size=" 8", check_budget="AUTO",
                          roi="10,20,30,40", mode="all")
    typed = SegmentOptions(bands=(4, 3, 2), gsd=0.5, batch_size=8, check_budget="auto",
                           roi="10,20,30,40", mode="all")
    text.validate()
    typed.validate()
    assert text == typed
    assert text.bands == (4, 3, 2) and text.gsd == 0.5 and text.batch_size == 8
    one = SegmentOptions(bands="2", gsd="native")
    one.validate()
    assert one.bands == (2,) and one.gsd == "native"


def test_roi_bounds_tuple_is_checked_and_kept_as_bounds_text():
    opts = SegmentOptions(roi=(10, 20.5, 30, 40))
    opts.validate()
    assert opts.roi == "10.0,20.5,30.0,40.0"
    for bad in [(30, 20, 10, 40), (1, 2, 3), (0, 0, float("inf"), 1)]:
        with pytest.raises(OptionError) as info:
            SegmentOptions(roi=bad).validate()
        assert info.value.field == "roi"
    with pytest.raises(OptionError, match="need XMIN < XMAX"):
        SegmentOptions(roi="5,2,1,4").validate()


def test_band_range_error_names_the_field(tmp_path):
    from rrsis_geo.geo.raster import open_raster, parse_bands
    from tests import rasters as R

    info = open_raster(R.utm_raster(tmp_path / "r.tif", count=4))
    assert parse_bands((4, 3, 2), info) == (4, 3, 2)
    with pytest.raises(OptionError, match="band 5 does not exist") as exc:
        parse_bands((5, 1, 2), info)
    assert exc.value.field == "bands"


def test_option_error_survives_pickling():
    """segment-many's workers send errors back through pickling."""
    err = pickle.loads(pickle.dumps(OptionError("gsd", "--gsd must be auto")))
    assert isinstance(err, OptionError) and err.field == "gsd"
    assert str(err) == "--gsd must be auto"

