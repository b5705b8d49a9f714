"""End-to-end spine tests with the stand-in red-pixel segmenter (no FIANet needed)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner
from rasterio.transform import Affine, from_origin

from rrsis_geo.cli.main import cli
from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster, work_dir_for
from rrsis_geo.inference.segmenter import Segmenter
from rrsis_geo.progress import Reporter
from tests.rasters import scene, write_tif
from tests.standin import RedSegmenter, run_pipeline

def test_object_across_four_tiles_is_one_polygon(tmp_path, seg):
    # tiles of 64 with stride 48: a 40x40 box centred on a tile corner straddles 4 tiles
    arr = scene(200, 200, [(30, 30, 70, 70)])
    res, out = run_pipeline(tmp_path, arr, seg, mode="all")
    df = pyogrio.read_dataframe(out, layer="referred_objects")
    assert len(df) == 1 and res["objects"] == 1
    assert df.crs.to_epsg() == 32633
    assert math.isclose(df.geometry.iloc[0].area, 40 * 40 * 0.25, rel_tol=0.02)
    assert math.isclose(df["area_m2"].iloc[0], 400.0, rel_tol=0.02)
    assert set(["expression", "score", "area_m2", "rank"]) <= set(df.columns)
    assert df["expression"].iloc[0] == "the red roof" and df["rank"].iloc[0] == 1
    assert 0.5 < df["score"].iloc[0] <= 1.0
    assert not work_dir_for(out).exists()


def test_text_encoded_once(tmp_path):
    model = RedSegmenter(input_size=64)
    seg = Segmenter(model=model, device="cpu")
    res, _ = run_pipeline(tmp_path, scene(300, 300, [(10, 10, 30, 30)]), seg, batch_size=2)
    assert res["model_tiles"] > 4
    assert model.encode_calls == 1


def test_single_mode_keeps_one_and_all_mode_keeps_every_object(tmp_path, seg):
    arr = scene(256, 256, [(10, 10, 40, 40), (150, 150, 200, 210)])
    _, out = run_pipeline(tmp_path, arr, seg, mode="single")
    assert len(pyogrio.read_dataframe(out)) == 1
    _, out2 = run_pipeline(tmp_path, arr, seg, mode="all", out="all.gpkg")
    df = pyogrio.read_dataframe(out2)
    assert len(df) == 2 and sorted(df["rank"]) == [1, 2]
    _, out3 = run_pipeline(tmp_path, arr, seg, mode="all", max_objects=1, out="cap.gpkg")
    assert len(pyogrio.read_dataframe(out3)) == 1


def test_no_target_gives_valid_empty_layer(tmp_path, seg):
    _, out = run_pipeline(tmp_path, scene(100, 120, []), seg)
    info = pyogrio.read_info(out, layer="referred_objects")
    assert info["features"] == 0
    assert "32633" in info["crs"]
    assert {"expression", "score", "area_m2", "rank"} <= set(info["fields"])


def test_geographic_crs_area_in_square_metres(tmp_path, seg):
    # 1e-5 degree pixels near 45°N: ~1.11 m x 0.79 m
    t = from_origin(10.0, 45.001, 1e-5, 1e-5)
    path = write_tif(tmp_path / "geo.tif", scene(150, 150, [(50, 50, 90, 90)]), crs="EPSG:4326",
                     transform=t)
    _, out = run_pipeline(tmp_path, str(path), seg)
    df = pyogrio.read_dataframe(out)
    assert df.crs.to_epsg() == 4326 and len(df) == 1
    # expected: 1600 px × (1e-5° in m along lat) × (1e-5° in m along lon at 45°)
    from pyproj import Geod

    g = Geod(ellps="WGS84")
    px_area = abs(g.polygon_area_perimeter([10, 10.00001, 10.00001, 10],
                                           [45.0005, 45.0005, 45.00051, 45.00051])[0])
    assert math.isclose(df["area_m2"].iloc[0], 1600 * px_area, rel_tol=0.03)


@pytest.mark.parametrize("dtype,bands", [(np.uint16, 3), (np.uint8, 4)])
def test_uint16_and_four_band(tmp_path, seg, dtype, bands):
    arr = scene(130, 170, [(20, 20, 60, 60)], dtype=dtype, bands=bands)
    res, out = run_pipeline(tmp_path, arr, seg, bands="1,2,3")
    assert len(pyogrio.read_dataframe(out)) == 1


def test_odd_size_and_raster_smaller_than_a_tile(tmp_path, seg):
    _, out = run_pipeline(tmp_path, scene(911, 1537, [(900, 1520, 911, 1537)]), seg, tile_size=256,
                 overlap=32, mode="all")
    df = pyogrio.read_dataframe(out)
    assert len(df) == 1 and math.isclose(df["area_m2"].iloc[0], 11 * 17 * 0.25, rel_tol=0.02)
    _, out2 = run_pipeline(tmp_path, scene(40, 30, [(5, 5, 15, 15)]), seg, tile_size=64, out="small.gpkg")
    df2 = pyogrio.read_dataframe(out2)
    assert len(df2) == 1 and math.isclose(df2["area_m2"].iloc[0], 25.0, rel_tol=0.02)


def test_no_polygon_on_nodata(tmp_path, seg):
    # red paint under the masked (nodata) border must not come out
    arr = scene(160, 160, [(0, 0, 160, 30), (60, 60, 100, 100)])
    valid = np.ones((160, 160), bool)
    valid[:, :30] = False
    path = write_tif(tmp_path / "masked.tif", arr, mask=valid)
    _, out = run_pipeline(tmp_path, str(path), seg, mode="all")
    df = pyogrio.read_dataframe(out)
    assert len(df) == 1
    minx = df.geometry.iloc[0].bounds[0]
    assert minx >= 500000.0 + 30 * 0.5 - 1e-6


def test_jsonl_progress_and_result(tmp_path, seg, capsys):
    write_tif(tmp_path / "in.tif", scene(150, 150, [(20, 20, 60, 60)]))
    rep = Reporter("jsonl")
    res = segment_raster(str(tmp_path / "in.tif"), "red", str(tmp_path / "o.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16), segmenter=seg, reporter=rep)
    rep.result(res)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    prog = [x for x in lines if x["event"] == "progress"]
    assert {p["stage"] for p in prog} >= {"tiles", "write"}
    tiles = [p for p in prog if p["stage"] == "tiles"]
    assert tiles[-1]["done"] == tiles[-1]["total"] > 0
    assert lines[-1]["event"] == "result" and lines[-1]["objects"] == 1
    assert "peak_rss_mb" in lines[-1] and "tiles" in lines[-1]["timings"]


def test_resume_continues_from_tiles_on_disk(tmp_path):
    arr = scene(300, 300, [(100, 100, 140, 140)])
    write_tif(tmp_path / "in.tif", arr)

    class Boom(RedSegmenter):
        calls = 0

        def segment_image(self, image, text):
            Boom.calls += 1
            if Boom.calls == 4:
                raise KeyboardInterrupt
            return super().segment_image(image, text)

    out = tmp_path / "r.gpkg"
    opts = SegmentOptions(tile_size=64, overlap=16, batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        segment_raster(str(tmp_path / "in.tif"), "red", str(out), opts,
                       segmenter=Segmenter(model=Boom(64), device="cpu"))
    assert not out.exists() and work_dir_for(out).exists()
    model = RedSegmenter(64)
    opts.resume = True
    res = segment_raster(str(tmp_path / "in.tif"), "red", str(out), opts,
                         segmenter=Segmenter(model=model, device="cpu"))
    assert res["model_tiles"] == res["tiles"] - 3
    df = pyogrio.read_dataframe(out)
    assert len(df) == 1 and math.isclose(df["area_m2"].iloc[0], 400.0, rel_tol=0.02)


# -- CLI: bad input gets one line, its exit code and no output -------------------------------

def _invoke(runner, args):
    res = runner.invoke(cli, args, catch_exceptions=False)
    return res.exit_code, res.output


def test_cli_success_writes_layer(cli_standin, tmp_path):
    src = write_tif(tmp_path / "in.tif", scene(100, 100, [(10, 10, 40, 40)]))
    out = tmp_path / "found.geojson"
    code, _ = _invoke(cli_standin, ["segment", str(src), "-e", "red", "-o", str(out),
                                    "--progress", "none", "--tile-size", "64"])
    assert code == 0 and out.exists()
    df = pyogrio.read_dataframe(out)
    assert len(df) == 1 and df.crs.to_epsg() == 32633


def _bad_inputs(tmp_path):
    good = write_tif(tmp_path / "good.tif", scene(64, 64, []))
    rotated = write_tif(tmp_path / "rot.tif", scene(64, 64, []),
                        transform=Affine(0.5, 0.1, 500000, 0.1, -0.5, 5000000))
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    trunc = tmp_path / "trunc.tif"
    big = write_tif(tmp_path / "big.tif", scene(512, 512, []))
    data = big.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    return {"rotated": (rotated, "red"), "not-a-raster": (text, "red"),
            "truncated": (trunc, "red"), "empty-expression": (good, "   "),
            "missing": (tmp_path / "nope.tif", "red")}


@pytest.mark.parametrize("case", ["rotated", "not-a-raster", "truncated", "empty-expression",
                                  "missing"])
def test_cli_bad_input_exit_3_one_line_no_output(cli_standin, tmp_path, case):
    src, expr = _bad_inputs(tmp_path)[case]
    out = tmp_path / "o.gpkg"
    res = cli_standin.invoke(cli, ["segment", str(src), "-e", expr, "-o", str(out),
                                   "--progress", "none"])
    assert res.exit_code == 3, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error:"), res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not work_dir_for(out).exists()


def test_cli_usage_error_exit_2(cli_standin, tmp_path):
    src = write_tif(tmp_path / "in.tif", scene(64, 64, []))
    res = cli_standin.invoke(cli, ["segment", str(src), "-e", "red", "-o",
                                   str(tmp_path / "o.gpkg"), "--threshold", "1.5"])
    assert res.exit_code == 2 and not (tmp_path / "o.gpkg").exists()


def test_cli_missing_weights_exit_4(tmp_path):
    src = write_tif(tmp_path / "in.tif", scene(64, 64, []))
    res = CliRunner().invoke(cli, ["segment", str(src), "-e", "red", "-o",
                                   str(tmp_path / "o.gpkg"), "--weights",
                                   str(tmp_path / "none.safetensors")])
    assert res.exit_code == 4 and "weights" in res.output


def test_cli_bad_input_one_line_with_default_progress_bars(cli_standin, tmp_path):
    src, expr = _bad_inputs(tmp_path)["not-a-raster"]
    res = cli_standin.invoke(cli, ["segment", str(src), "-e", expr, "-o",
                                   str(tmp_path / "o.gpkg")])
    assert res.exit_code == 3
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert res.output.startswith("rrsis-geo: error:")


def test_tiles_read_the_sentence_without_scene_frame_words(tmp_path):
    """Tiles of a multi-tile raster read "the red roof"; the global pass and a one-tile raster
    (where the tile frame is the scene) read the whole sentence."""
    seg = Segmenter(model=RedSegmenter(input_size=64), device="cpu")
    seen: list[str] = []
    encode = seg.encode
    seg.encode = lambda e: (seen.append(e), encode(e))[1]
    sentence = "the red roof in the north-east of the scene"
    res, _ = run_pipeline(tmp_path, scene(300, 300, [(10, 250, 30, 280)]), seg, expr=sentence)
    assert res["objects"] == 1
    assert seen.count("the red roof") >= res["model_tiles"] // 4  # one call per batch
    assert sentence in seen  # checked up front and read by the global pass
    seen.clear()
    run_pipeline(tmp_path, scene(60, 60, [(10, 40, 20, 50)]), seg, expr=sentence, out="one.gpkg")
    assert seen and set(seen) == {sentence}


def _orange_box(arr, r0, c0, r1, c1):
    arr[0, r0:r1, c0:c1] = 255
    arr[1, r0:r1, c0:c1] = 128
    arr[2, r0:r1, c0:c1] = 0
    return arr


@pytest.fixture
def class_seg():
    from tests.standin import ColourClassSegmenter

    return Segmenter(model=ColourClassSegmenter(input_size=64), device="cpu")


def test_class_check_rejects_a_candidate_of_another_class(tmp_path, class_seg):
    """The tile pass for "the building" also paints an orange car; position words alone would
    pick it (it is in the east). Checked against "the car" and "the tree", it drops out."""
    arr = _orange_box(scene(160, 160, [(60, 10, 80, 30)]), 60, 120, 80, 140)
    expr = "the building in the east of the scene"
    res, out = run_pipeline(tmp_path, arr, class_seg, expr=expr, class_check=False)
    assert res["objects"] == 1
    east = pyogrio.read_dataframe(out).geometry[0].centroid.x
    res, out = run_pipeline(tmp_path, arr, class_seg, expr=expr, out="checked.gpkg")
    assert res["objects"] == 1
    west = pyogrio.read_dataframe(out).geometry[0].centroid.x
    assert west < east - 40  # metres: the red building on the west side


def test_class_check_turns_a_wrong_class_into_no_target(tmp_path, class_seg):
    arr = _orange_box(scene(100, 100, []), 40, 40, 60, 60)
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", class_check=False)
    assert res["objects"] == 1
    res, out = run_pipeline(tmp_path, arr, class_seg, expr="the building", out="checked.gpkg")
    assert res["objects"] == 0 and len(pyogrio.read_dataframe(out)) == 0
    # the car itself passes its own check
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the orange car", out="car.gpkg")
    assert res["objects"] == 1


def test_class_check_skipped_without_a_class_word(tmp_path, class_seg):
    calls = []
    margins = class_seg.margins
    class_seg.margins = lambda *a: (calls.append(1), margins(*a))[1]
    arr = _orange_box(scene(100, 100, []), 40, 40, 60, 60)
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the orange thing")
    assert calls == [] and res["objects"] == 0  # no class named: nothing to check, nothing painted
    run_pipeline(tmp_path, arr, class_seg, expr="the car", out="car.gpkg")
    assert calls


def test_relation_picks_the_candidate_next_to_its_anchor(tmp_path, class_seg):
    """Two buildings, a bright red one alone and a duller one beside a green tree: "the building
    near the tree" takes the one whose window shows a tree next to it."""
    arr = scene(200, 200, [(140, 140, 160, 160)])
    arr[:, 20:34, 20:34] = np.array([128, 77, 77], np.uint8)[:, None, None]  # a dull red (p ~0.95)
    arr[:, 20:34, 38:52] = np.array([0, 153, 0], np.uint8)[:, None, None]  # the tree
    expr = "the building near the tree"
    _, out = run_pipeline(tmp_path, arr, class_seg, expr=expr, class_check=False)
    assert pyogrio.read_dataframe(out).geometry[0].centroid.y < 5000000 - 60  # the brighter one
    seen: list[str] = []
    encode = class_seg.encode
    class_seg.encode = lambda e: (seen.append(e), encode(e))[1]
    res, out = run_pipeline(tmp_path, arr, class_seg, expr=expr, out="rel.gpkg")
    assert res["objects"] == 1
    assert pyogrio.read_dataframe(out).geometry[0].centroid.y > 5000000 - 20  # beside the tree
    # the tiles read "the building": a tile showing the building but not the tree would
    # otherwise suppress it; the relation is judged in the candidates' windows
    assert "the building" in seen


def test_class_check_looks_at_the_candidates_the_words_favour(tmp_path, class_seg, monkeypatch):
    """Only the best candidates are checked (here 2): "the biggest building" must check the
    big one even though three small ones have more evidence (brighter red)."""
    from rrsis_geo.inference import scene as scene_mod

    monkeypatch.setattr(scene_mod, "CLASS_CHECK_TOP", 2)
    arr = scene(200, 200, [(20, 20, 34, 34), (20, 100, 34, 114), (100, 20, 114, 34)])
    arr[:, 120:160, 120:160] = np.array([115, 77, 77], np.uint8)[:, None, None]  # big, dull
    res, out = run_pipeline(tmp_path, arr, class_seg, expr="the building that is the biggest")
    assert res["objects"] == 1
    assert pyogrio.read_dataframe(out).area_m2[0] > 300  # 40 x 40 px of 0.5 m = 400 m²


def _cars(n):
    """A row of ``n`` orange boxes: cars that the lax building prompt paints too."""
    arr = scene(100, 60 * n, [])
    for i in range(n):
        _orange_box(arr, 40, 20 + 60 * i, 60, 40 + 60 * i)
    return arr


def test_a_car_sized_candidate_is_not_the_truck(tmp_path):
    """A stand-in that cannot tell a car from a truck (both prompts paint orange alike): the
    size and shape of what it found decide. A car's footprint (4.5 x 2 m) is no answer to "the
    truck", nor a square of a truck's area; a truck's (10 x 2.5 m) is, and the car stays a car."""
    from tests.standin import ColourClassSegmenter

    class VehicleSegmenter(ColourClassSegmenter):
        CLASSES = {"truck": ((1.0, 0.5, 0.0), 0.35), "car": ((1.0, 0.5, 0.0), 0.35),
                   "tree": ((0.0, 0.6, 0.0), 0.35)}

    seg = Segmenter(model=VehicleSegmenter(input_size=64), device="cpu")
    car = _orange_box(scene(100, 100, []), 40, 40, 49, 44)  # 0.5 m pixels: 9 x 4 = 9 m²
    truck = _orange_box(scene(100, 100, []), 40, 30, 45, 50)  # 5 x 20 = 25 m²
    res, _ = run_pipeline(tmp_path, car, seg, expr="the truck", class_check=False)
    assert res["objects"] == 1  # the model alone takes the car for a truck
    res, out = run_pipeline(tmp_path, car, seg, expr="the truck", out="checked.gpkg")
    assert res["objects"] == 0 and len(pyogrio.read_dataframe(out)) == 0
    res, _ = run_pipeline(tmp_path, car, seg, expr="the car", out="car.gpkg")
    assert res["objects"] == 1
    res, _ = run_pipeline(tmp_path, truck, seg, expr="the truck", out="truck.gpkg")
    assert res["objects"] == 1
    # a truck's area but square (a small building, 6 x 6 m): not a truck either
    square = _orange_box(scene(100, 100, []), 40, 40, 52, 52)
    res, _ = run_pipeline(tmp_path, square, seg, expr="the truck", out="square.gpkg")
    assert res["objects"] == 0
    # a square of one car's size is no car; two cars parked side by side and merged (a square
    # of twice a car's footprint) are not judged by shape
    small = _orange_box(scene(100, 100, []), 40, 40, 46, 46)  # 3 x 3 m
    res, _ = run_pipeline(tmp_path, small, seg, expr="the car", out="small.gpkg")
    assert res["objects"] == 0
    pair = _orange_box(scene(100, 100, []), 40, 40, 48, 48)  # 4 x 4 m
    res, _ = run_pipeline(tmp_path, pair, seg, expr="the cars", out="pair.gpkg", mode="all")
    assert res["objects"] == 1


def test_class_check_stays_within_its_budget(tmp_path, class_seg, monkeypatch):
    """Five painted cars, "the building", --mode all: each checked car costs a screen-free
    window per prompt; a budget of 4 windows pays for the screen (3 prompts) and the named
    prompt of the first car, not for the others, which are then not considered. (One prompt
    per forward, so that a car is left as soon as it is out of reach.)"""
    from rrsis_geo.inference import scene as scene_mod

    monkeypatch.setattr(scene_mod, "CHECK_CPU_FORWARD_BATCHES", 1)
    arr = _cars(5)
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", mode="all", min_score=0.3,
                 class_check=False)
    assert res["objects"] == 5 and res["check_images"] == 0
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", mode="all", min_score=0.3,
                 batch_size=1, out="budget.gpkg", check_budget=4)
    assert res["check_images"] == 4 and res["check_windows"] <= 4  # 64-px tiles: 1 per image
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", mode="all", min_score=0.3,
                 batch_size=1, out="more.gpkg", check_budget=100)
    assert res["check_images"] == 3 + 5 * 2  # screen, then named + car prompt per car
    assert res["objects"] == 0  # every one is a car


def test_class_check_runs_a_windows_prompts_in_one_cpu_forward(tmp_path, class_seg, monkeypatch):
    """On a CPU a check forward holds CHECK_CPU_FORWARD_BATCHES tile batches' worth of prompt
    pixels: with --batch-size 1 and 64-px tiles, 3 prompts per forward (the screen's 3 in one),
    1 with the factor at 1; the answer and the prompts run are the same either way."""
    from rrsis_geo.inference import scene as scene_mod
    from rrsis_geo.inference.segmenter import Segmenter

    sizes: list[int] = []
    orig = Segmenter.margins_of_one_image

    def spy(self, image, text_features):
        out = orig(self, image, text_features)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(Segmenter, "margins_of_one_image", spy)
    arr = _cars(2)
    results = {}
    for factor in (3, 1):
        monkeypatch.setattr(scene_mod, "CHECK_CPU_FORWARD_BATCHES", factor)
        sizes.clear()
        res, out = run_pipeline(tmp_path, arr, class_seg, expr="the building", min_score=0.3,
                                batch_size=1, out=f"f{factor}.gpkg", check_budget=100)
        results[factor] = (res["objects"], list(sizes))
    assert max(results[3][1]) == 3 and results[3][1][0] == 3  # the screen: one forward
    assert set(results[1][1]) == {1}
    assert results[3][0] == results[1][0] == 0  # cars, not buildings
    assert sum(results[3][1]) >= sum(results[1][1])  # early exits only within the smaller forwards


def test_mode_all_keeps_unchecked_look_alikes_of_passing_candidates(tmp_path, class_seg):
    """Eight red buildings, --mode all, a budget that checks only one of them: the unchecked
    ones take the checked one's (passing) factor instead of being dropped; cars that fail the
    check pass their failure on."""
    arr = scene(100, 60 * 8, [(20, 20 + 60 * i, 40, 40 + 60 * i) for i in range(8)])
    kw = {"mode": "all", "min_score": 0.3, "batch_size": 1, "check_budget": 7}
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the red building", **kw)
    assert 0 < res["check_images"] <= 7 and res["objects"] == 8
    res, _ = run_pipeline(tmp_path, _cars(5), class_seg, expr="the building", out="cars.gpkg", **kw)
    assert 0 < res["check_images"] <= 7 and res["objects"] == 0


def test_class_check_runs_the_screened_rivals_and_stops_early(tmp_path, class_seg, monkeypatch):
    """The screen (all prompts on the best candidate) ranks "the car" above "the tree" for an
    orange box; checked against one rival, the car candidate meets "the car" and never "the
    tree". With all rivals, it is out after "the car" (the margin only drops), so "the tree"
    is skipped too: 3 screen + 2 check images either way (one tile batch of prompt pixels per
    forward, as on a GPU)."""
    from rrsis_geo.inference import scene as scene_mod

    monkeypatch.setattr(scene_mod, "CHECK_CPU_FORWARD_BATCHES", 1)
    prompts: list[int] = []
    margins = class_seg.margins
    class_seg.margins = lambda imgs, feats: (prompts.extend(feats["cls"].tolist()),
                                             margins(imgs, feats))[1]
    arr = _cars(1)
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", batch_size=1)
    assert res["objects"] == 0 and res["check_images"] == 5
    building, car, tree = 0, 1, 2  # ColourClassSegmenter's class order
    assert len(prompts) == 5  # the check's forwards (tiles go through predict)
    assert sorted(prompts[:3]) == [building, car, tree] and prompts[3:] == [building, car]
    prompts.clear()
    monkeypatch.setattr(scene_mod, "CHECK_RIVALS", 1)
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", batch_size=3, out="b3.gpkg")
    assert prompts[-2:] == [building, car] and res["check_images"] == 5


def test_check_progress_stage_and_no_target_log(tmp_path, class_seg, capsys):
    """The check reports as its own stage in JSON lines, and a "no target" answer says the best
    score found and what it was before the check."""
    write_tif(tmp_path / "in.tif", _cars(2))
    rep = Reporter("jsonl")
    res = segment_raster(str(tmp_path / "in.tif"), "the building", str(tmp_path / "o.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16), segmenter=class_seg,
                         reporter=rep)
    rep.result(res)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    stages = [x["stage"] for x in lines if x["event"] == "progress"]
    assert stages.index("select") < stages.index("check") < stages.index("write")
    check = [x for x in lines if x["event"] == "progress" and x["stage"] == "check"]
    assert check[-1]["done"] == check[-1]["total"] == res["check_images"] > 0
    assert all(x["done"] <= x["total"] for x in check)
    texts = [x["text"] for x in lines if x["event"] == "message"]
    no_target = [t for t in texts if t.startswith("no target")]
    assert res["objects"] == 0 and len(no_target) == 1
    best_after, best_before = (float(v) for v in
                               re.findall(r"(\d\.\d\d) (?:\(a|for)", no_target[0]))
    assert best_after < 0.5 <= best_before  # the class check took the cars out
    assert "check" in lines[-1]["timings"] and "select" in lines[-1]["timings"]


def test_a_class_the_model_never_learned_is_no_target(tmp_path, class_seg, capsys):
    """A model whose metadata lists the classes it was trained to find answers "no target" for
    any other class, and says so; without that list, or with --no-class-check, it answers."""
    arr = scene(100, 100, [])
    arr[:, 40:60, 40:60] = np.array([0, 153, 0], np.uint8)[:, None, None]  # a green crown
    write_tif(tmp_path / "in.tif", arr)
    res, _ = run_pipeline(tmp_path, str(tmp_path / "in.tif"), class_seg, expr="the tree")
    assert res["objects"] == 1
    class_seg.meta = {**class_seg.meta, "trained_classes": ["building", "car"]}
    rep = Reporter("jsonl")
    res = segment_raster(str(tmp_path / "in.tif"), "the tree", str(tmp_path / "t.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16), segmenter=class_seg,
                         reporter=rep)
    texts = [json.loads(x)["text"] for x in capsys.readouterr().out.splitlines()
             if json.loads(x)["event"] == "message"]
    assert res["objects"] == 0 and len(pyogrio.read_dataframe(tmp_path / "t.gpkg")) == 0
    assert [t for t in texts if t.startswith("no target")] == [
        "no target: this model was not trained to find a tree (it learned: building, car); "
        "--no-class-check lets its look-alikes through"]
    # answered before the tile pass: the model saw no tile
    assert res["model_tiles"] == 0 and res["tiles"] > 0
    # ... unless the probability raster was asked for: the tiles run, the answer is the same
    res = segment_raster(str(tmp_path / "in.tif"), "the tree", str(tmp_path / "p.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16,
                                        prob_raster=str(tmp_path / "p.tif")),
                         segmenter=class_seg, reporter=Reporter("jsonl"))
    assert res["objects"] == 0 and res["model_tiles"] > 0 and (tmp_path / "p.tif").is_file()
    # several sentences: the tiles run when one of them names a class it learned, and the
    # refusal is said once
    capsys.readouterr()
    res = segment_raster(str(tmp_path / "in.tif"), ["the tree", "the car"],
                         str(tmp_path / "m.gpkg"), SegmentOptions(tile_size=64, overlap=16),
                         segmenter=class_seg, reporter=Reporter("jsonl"))
    assert res["model_tiles"] > 0
    texts = [json.loads(x).get("text", "") for x in capsys.readouterr().out.splitlines()]
    assert sum(t.startswith("no target: this model was not trained") for t in texts) == 1
    learned = class_seg.meta["trained_classes"]
    class_seg.meta["trained_classes"] = ["building"]  # both sentences refused
    res = segment_raster(str(tmp_path / "in.tif"), ["the tree", "the car"],
                         str(tmp_path / "n.gpkg"), SegmentOptions(tile_size=64, overlap=16),
                         segmenter=class_seg, reporter=Reporter("jsonl"))
    assert res["model_tiles"] == 0 and res["objects"] == 0 and res["expressions"] == 2
    class_seg.meta["trained_classes"] = learned
    capsys.readouterr()
    res, _ = run_pipeline(tmp_path, str(tmp_path / "in.tif"), class_seg, expr="the tree",
                          out="unchecked.gpkg", class_check=False)
    assert res["objects"] == 1
    res, _ = run_pipeline(tmp_path, _cars(1), class_seg, expr="the car", out="car.gpkg")
    assert res["objects"] == 1  # a class it learned is answered as before


def test_check_budget_must_be_positive(tmp_path, class_seg):
    from rrsis_geo.errors import UsageError

    with pytest.raises(UsageError, match="--check-budget"):
        run_pipeline(tmp_path, _cars(1), class_seg, expr="the building", check_budget=0)


def test_auto_check_budget_scales_with_the_tiles_within_its_bounds():
    """auto: a quarter of the tiles, at least 64 windows of the check's own size (so 64 with
    tiles no larger than that window, fewer tile-equivalents with larger tiles), at most 64."""
    from rrsis_geo.inference.scene import CHECK_WINDOW, auto_check_budget

    for n in (1, 49, 195, 820, 10_000):  # the demo model's tiles = the check window: always 64
        assert auto_check_budget(n, CHECK_WINDOW) == 64
        assert auto_check_budget(n, 96) == 64
    big = 480  # the official layout: a check window is (192/480)² of a tile
    floor = 64 * (CHECK_WINDOW / big) ** 2
    assert auto_check_budget(1, big) == auto_check_budget(36, big) == pytest.approx(floor)
    assert auto_check_budget(100, big) == pytest.approx(25)  # between: a quarter of the tiles
    assert auto_check_budget(300, big) == 64
    budgets = [auto_check_budget(n, big) for n in range(0, 400)]
    assert all(b <= a for a, b in zip(budgets[1:], budgets))  # never drops with more tiles


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("AUTO ", "auto"), ("12", 12),
                                             (7, 7)])
def test_check_budget_accepts_auto_or_a_whole_number(value, expected):
    opts = SegmentOptions(check_budget=value)
    opts.validate()
    assert opts.check_budget == expected


@pytest.mark.parametrize("value", ["many", "1.5", "-3", "0", ""])
def test_check_budget_refuses_other_values(value):
    from rrsis_geo.errors import UsageError

    with pytest.raises(UsageError, match="--check-budget must be auto or a whole number"):
        SegmentOptions(check_budget=value).validate()


def test_auto_check_budget_follows_the_rasters_tiles(tmp_path, class_seg, capsys,
                                                    monkeypatch):
    """--check-budget auto spends at most the rule's budget for the raster's tiles (here the
    floor is lowered so that the quarter of the tiles decides) and says which budget it took;
    a larger explicit budget checks more."""
    from rrsis_geo.geo.raster import open_raster
    from rrsis_geo.geo.workgrid import make_work_grid
    from rrsis_geo.geo.tiling import plan_tiles
    from rrsis_geo.inference import scene as scene_mod

    monkeypatch.setattr(scene_mod, "CHECK_BUDGET_MIN", 2)
    arr = _cars(8)
    tif = write_tif(tmp_path / "in.tif", arr)
    info = open_raster(str(tif))
    n_tiles = len(plan_tiles(info, make_work_grid(info, None), 64, 16))
    budget = scene_mod.auto_check_budget(n_tiles, 64)
    assert budget == pytest.approx(n_tiles / 4)
    rep = Reporter("jsonl")
    res = segment_raster(str(tif), "the building", str(tmp_path / "a.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16, mode="all", min_score=0.3,
                                        batch_size=1, check_budget="auto"),
                         segmenter=class_seg, reporter=rep)
    texts = [json.loads(x).get("text", "") for x in capsys.readouterr().out.splitlines()]
    assert any(f"budget {budget:g} windows (auto: {n_tiles} tiles)" in t for t in texts)
    assert 0 < res["check_windows"] <= budget
    more, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", mode="all", min_score=0.3,
                  batch_size=1, out="more.gpkg", check_budget=int(budget) + 40)
    assert more["check_windows"] > res["check_windows"]


def test_screen_sees_a_large_candidate_in_a_small_window(tmp_path, class_seg, monkeypatch):
    """The screen's window stays CHECK_SCREEN_WINDOW for a candidate larger than it (it ranks
    rivals on the candidate's central part): its prompts cost that window's share of a tile,
    and the large red building still passes the check."""
    from rrsis_geo.inference import scene as scene_mod

    monkeypatch.setattr(scene_mod, "CHECK_SCREEN_WINDOW", 32)
    sides: list[int] = []
    margins = class_seg.margins
    class_seg.margins = lambda imgs, feats: (sides.extend([imgs.shape[-1]] * len(feats["cls"])),
                                             margins(imgs, feats))[1]  # one side per prompt
    arr = scene(200, 200, [(40, 40, 90, 90)])  # 50 px: its check window grows to the tile
    res, _ = run_pipeline(tmp_path, arr, class_seg, expr="the building", batch_size=1)
    assert res["objects"] == 1
    assert sides[:3] == [32, 32, 32]  # the screen: 3 prompts in a 32-px window
    assert set(sides[3:]) == {64}  # the candidate itself: in full, the tile
    assert res["check_windows"] == pytest.approx(3 * (32 / 64) ** 2 + len(sides[3:]))


@pytest.mark.parametrize("args, message", [
    (["--check-budget", "many"], "--check-budget must be auto or a whole number"),
    (["--batch-size", "lots"], "--batch-size must be auto or a whole number"),
])
def test_cli_refuses_bad_budget_or_batch_with_exit_2(tmp_path, args, message):
    tif = write_tif(tmp_path / "in.tif", scene(64, 64, []))
    r = CliRunner().invoke(cli, ["segment", str(tif), "-e", "the building", "-o",
                                 str(tmp_path / "o.gpkg"), *args])
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "o.gpkg").exists()


def _png(path, arr):
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0))).save(path)
    return str(path)


def test_an_image_without_crs_is_read_in_pixel_coordinates(tmp_path, seg, capsys):
    """A PNG or JPEG export (or a photo) has no CRS: segment reads it in its own pixel frame
    (x = column, y = row) and writes the objects there, without a CRS. With --pixel-size equal
    to the pixel of its georeferenced twin it finds the same objects, at the same pixels, with
    the same areas in m²."""
    import rasterio

    arr = scene(200, 160, [(30, 20, 70, 60), (120, 90, 170, 150)])
    tif = str(write_tif(tmp_path / "geo.tif", arr))  # 0.5 m UTM
    png = _png(tmp_path / "plain.png", arr)
    _, geo_out = run_pipeline(tmp_path, tif, seg, mode="all", out="geo.gpkg")
    with rasterio.open(tif) as src:
        to_pixels = ~src.transform
    capsys.readouterr()
    out = tmp_path / "px.gpkg"
    res = segment_raster(png, "the red roof", str(out),
                         SegmentOptions(tile_size=64, overlap=16, simplify=0.0, mode="all",
                                        pixel_size=0.5, prob_raster=str(tmp_path / "p.tif")),
                         segmenter=seg, reporter=Reporter("jsonl"))
    texts = [json.loads(x).get("text", "") for x in capsys.readouterr().out.splitlines()]
    assert any(t.startswith("plain.png has no CRS: objects are written in its pixel "
                            "coordinates") and "pixels of 0.5 m (--pixel-size)" in t
               for t in texts)
    geo = pyogrio.read_dataframe(geo_out).sort_values("area_m2").reset_index(drop=True)
    px = pyogrio.read_dataframe(out).sort_values("area_m2").reset_index(drop=True)
    assert res["objects"] == len(px) == len(geo) == 2 and px.crs is None
    for g, p in zip(geo.geometry, px.geometry):
        (c0, r0), (c1, r1) = to_pixels @ g.bounds[:2], to_pixels @ g.bounds[2:]
        expected = (min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1))
        assert np.allclose(p.bounds, expected, atol=1e-6), (p.bounds, expected)
    # the UTM twin's pixels are 0.5 m in grid units, a little more on the ground (scale factor)
    assert np.allclose(px["area_m2"], [400.0, 750.0]) and np.allclose(
        px["area_m2"], geo["area_m2"], rtol=1e-3)
    with rasterio.open(tmp_path / "p.tif") as prob:  # the probabilities in the same frame
        assert prob.crs is None
        assert np.allclose(prob.transform @ (0, 0), (0, 0))
        assert np.allclose(prob.transform @ (prob.width, prob.height), (160, 200))
    assert not work_dir_for(out).exists()
    # a GeoTIFF that lost its CRS but kept its geotransform: the objects in that frame
    nocrs = str(write_tif(tmp_path / "nocrs.tif", arr, crs=None))
    segment_raster(nocrs, "the red roof", str(tmp_path / "gt.gpkg"),
                   SegmentOptions(tile_size=64, overlap=16, simplify=0.0, mode="all",
                                  pixel_size=0.5), segmenter=seg, reporter=Reporter("jsonl"))
    gt = pyogrio.read_dataframe(tmp_path / "gt.gpkg").sort_values("area_m2")
    assert gt.crs is None and np.allclose(
        [g.bounds for g in gt.geometry], [g.bounds for g in geo.geometry], atol=1e-6)
    texts = [json.loads(x).get("text", "") for x in capsys.readouterr().out.splitlines()]
    assert any("nocrs.tif has no CRS: objects are written in its geotransform's coordinates"
               in t for t in texts)
    # pixel size unknown: the image is read as it is, and the run says so
    res = segment_raster(png, "the red roof", str(tmp_path / "asis.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16, mode="all"),
                         segmenter=seg, reporter=Reporter("jsonl"))
    texts = [json.loads(x).get("text", "") for x in capsys.readouterr().out.splitlines()]
    assert res["objects"] == 2 and any("its pixel size is unknown" in t for t in texts)


def test_map_options_on_an_image_without_crs_are_refused(tmp_path):
    arr = scene(64, 64, [])
    png = _png(tmp_path / "plain.png", arr)
    tif = str(write_tif(tmp_path / "geo.tif", arr))
    out = tmp_path / "o.gpkg"
    for args, text in (
            ([png, "--roi", "0,0,10,10"], "--roi needs a georeferenced raster"),
            ([png, "--dst-crs", "EPSG:4326"], "--dst-crs needs a georeferenced raster"),
            ([tif, "--pixel-size", "0.3"], "--pixel-size is for a raster without a CRS"),
            ([png, "--pixel-size", "-1"], "--pixel-size must be a positive number")):
        r = CliRunner().invoke(cli, ["segment", *args, "-e", "the tree", "-o", str(out)])
        assert r.exit_code == 2, r.output
        assert r.output.strip().splitlines()[-1].startswith("rrsis-geo: error: ") and \
            text in r.output, r.output
        assert not out.exists() and not work_dir_for(out).exists()


def test_resume_key_follows_the_pixel_size(tmp_path, seg):
    """--pixel-size changes the grid the tiles are read on: a resumed run with another one must
    not reuse the tiles on disk."""
    from rrsis_geo.inference.pipeline import _run_key

    png = _png(tmp_path / "plain.png", scene(64, 64, []))
    keys = {_run_key(png, "the tree", SegmentOptions(pixel_size=p), seg) for p in (None, 0.1, 0.2)}
    assert len(keys) == 3


def test_no_target_up_front_on_an_image_without_crs_has_no_crs(tmp_path, class_seg):
    """The answer given before the tile pass (a class the model never learned) on an image
    without a CRS is an empty layer without a CRS, like any other answer there."""
    png = _png(tmp_path / "plain.png", scene(64, 64, []))
    class_seg.meta = {**class_seg.meta, "trained_classes": ["building"]}
    res = segment_raster(png, "the tree", str(tmp_path / "t.gpkg"),
                         SegmentOptions(tile_size=64, overlap=16), segmenter=class_seg,
                         reporter=Reporter("none"))
    assert res["model_tiles"] == 0 and res["objects"] == 0
    assert pyogrio.read_info(tmp_path / "t.gpkg")["crs"] is None
