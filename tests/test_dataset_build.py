"""``rrsis-geo dataset build``: sentences and masks from hand-made label layers, spatial split,
label reading (CRS, CSV boxes, lines), decoupler round trip and bad inputs."""

from __future__ import annotations

import json
import math
import re

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from shapely.geometry import LineString, Point, box

from rrsis_geo.cli.main import cli
from rrsis_geo.data.layers.attributes import colour_shares, dominant_colour
from rrsis_geo.data.layers.expressions import (
    POSITIONS, ChipObject, absent_expression, chip_expressions, plural,
)
from rrsis_geo.data.layers.labels import read_labels
from rrsis_geo.text.decouple import analyse
from tests.rasters import UTM, write_raster

SIDE = 96
RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- hand-made chips
def disc(fid, cat, cx, cy, r, colour=None, side=SIDE):
    """A round object centred at pixel (cx, cy) of a ``side`` chip (may be cut off)."""
    g = Point(cx, cy).buffer(r, 32)
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    return ChipObject(fid, cat, m, g.area, not g.within(box(0, 0, side, side)), g,
                      colour if colour is not None else {"green": 1.0})


def texts(exprs, fid=None, etype=None):
    return [e.text for e in exprs if (fid is None or e.feature_ids == [fid])
            and (etype is None or e.type == etype)]


def test_category_only_when_one_object_of_the_class():
    a = disc("a", "tree", 30, 40, 8)
    exprs = chip_expressions([a], np.random.default_rng(0))
    cat = [e for e in exprs if e.type == "category"]
    assert [e.text for e in cat] == ["the tree"]
    assert np.array_equal(cat[0].mask, a.mask) and cat[0].feature_ids == ["a"]
    # a second tree, even cut off by the chip edge, makes "the tree" ambiguous
    b = disc("b", "tree", 94, 80, 10)
    assert b.cut
    exprs = chip_expressions([a, b], np.random.default_rng(0))
    assert "the tree" not in texts(exprs)


def test_all_sentence_has_the_union_mask():
    objs = [disc("a", "tree", 20, 20, 7), disc("b", "tree", 70, 30, 7),
            disc("c", "tree", 50, 75, 7), disc("h", "building", 80, 80, 9)]
    exprs = chip_expressions(objs, np.random.default_rng(1))
    allx = [e for e in exprs if e.type == "all"]
    assert len(allx) == 1 and allx[0].text in ("all the trees", "the trees")
    assert np.array_equal(allx[0].mask, objs[0].mask | objs[1].mask | objs[2].mask)
    assert sorted(allx[0].feature_ids) == ["a", "b", "c"]
    assert plural("storage tank") == "storage tanks" and plural("bus") == "buses"
    assert plural("ferry") == "ferries"


def test_position_sentence_and_mask():
    a = disc("a", "tree", 14, 48, 8)   # left column, middle row
    b = disc("b", "tree", 82, 48, 8)   # right column
    exprs = chip_expressions([a, b], np.random.default_rng(0))
    pa = [e for e in exprs if e.feature_ids == ["a"] and e.type == "spatial-absolute"]
    assert [e.text for e in pa] == ["the tree on the left"]
    assert np.array_equal(pa[0].mask, a.mask) and pa[0].needs_disambiguation
    assert "the tree on the right" in texts(exprs, "b", "spatial-absolute")


def test_borderline_position_gets_no_position_word():
    # a's centroid sits where the 1/3 grid lines cross: every cell is borderline for it
    a = disc("a", "tree", SIDE / 3, SIDE / 3, 6)
    b = disc("b", "tree", 85, 80, 6)
    exprs = chip_expressions([a, b], np.random.default_rng(0))
    for t in texts(exprs, "a"):
        assert not any(p in t for p in POSITIONS), t
    # b is clearly on the right, and a clearly is not
    assert "the tree on the right" in texts(exprs, "b")


def test_object_that_cannot_be_told_apart_gets_no_sentence():
    # two equal, equally coloured trees side by side in the same cell; a third far away
    a = disc("a", "tree", 14, 14, 6)
    b = disc("b", "tree", 18, 19, 6)
    c = disc("c", "tree", 80, 80, 6)
    exprs = chip_expressions([a, b, c], np.random.default_rng(0))
    assert texts(exprs, "a") == [] and texts(exprs, "b") == []
    assert texts(exprs, "c")  # the lone one is describable ("on the right", ...)
    for t in texts(exprs, "c"):
        assert "tree" in t


def test_size_superlative_needs_a_clear_margin_and_full_visibility():
    big = disc("big", "tree", 48, 48, 14)
    s1 = disc("s1", "tree", 15, 15, 6)
    s2 = disc("s2", "tree", 80, 15, 7)
    exprs = chip_expressions([big, s1, s2], np.random.default_rng(0))
    assert "the largest tree" in texts(exprs, "big", "attribute")
    e = next(e for e in exprs if e.text == "the largest tree")
    assert np.array_equal(e.mask, big.mask)
    # a cut-off tree whose true size beats the margin forbids "largest"
    huge = disc("huge", "tree", SIDE + 10, 48, 20)
    assert huge.cut and huge.vis_px < big.vis_px
    exprs = chip_expressions([big, s1, s2, huge], np.random.default_rng(0))
    assert "the largest tree" not in texts(exprs)
    # nearly equal sizes: no superlative
    exprs = chip_expressions([disc("x", "tree", 20, 20, 10), disc("y", "tree", 70, 70, 9)],
                             np.random.default_rng(0))
    assert not any("largest" in t or "smallest" in t for t in texts(exprs))


def _chip_image(objs, rgb_of):
    img = np.full((SIDE, SIDE, 3), 128, np.uint8)
    for o in objs:
        img[o.mask] = rgb_of[o.fid]
    return img


def test_colour_word_from_the_pixels_and_none_when_ambiguous():
    objs = [disc("r", "building", 20, 20, 8), disc("g1", "building", 75, 20, 8),
            disc("g2", "building", 48, 50, 8)]
    img = _chip_image(objs, {"r": (180, 40, 40), "g1": (130, 130, 132), "g2": (120, 121, 120)})
    for o in objs:
        o.colours = colour_shares(img, o.mask)
    assert dominant_colour(objs[0].colours) == "red"
    assert dominant_colour(objs[1].colours) == "grey"
    assert dominant_colour(colour_shares(np.full((3, 3, 3), 250, np.uint8),
                                         np.ones((3, 3), bool))) is None  # too few pixels
    exprs = chip_expressions(objs, np.random.default_rng(0))
    assert "the red building" in texts(exprs, "r", "attribute")
    # half red, half grey: no colour word at all for it, and "red" is no longer unique
    mixed = img.copy()
    half = objs[1].mask & (np.arange(SIDE)[None, :] < 75)
    mixed[half] = (180, 40, 40)
    for o in objs:
        o.colours = colour_shares(mixed, o.mask)
    assert dominant_colour(objs[1].colours) is None
    exprs = chip_expressions(objs, np.random.default_rng(0))
    assert not any("red" in t or "grey" in t for t in texts(exprs))


def test_light_and_dark_achromatic():
    m = np.ones((8, 8), bool)
    assert dominant_colour(colour_shares(np.full((8, 8, 3), 240, np.uint8), m)) == "white"
    assert dominant_colour(colour_shares(np.full((8, 8, 3), 30, np.uint8), m)) == "dark"


def test_relation_to_a_unique_object_of_another_class():
    house = disc("h", "building", 48, 48, 10)
    a = disc("a", "tree", 26, 48, 6)     # just left of the building
    b = disc("b", "tree", 48, 85, 6)     # below it
    exprs = chip_expressions([house, a, b], np.random.default_rng(0))
    rel_a = texts(exprs, "a", "spatial-relative")
    assert rel_a and re.fullmatch(r"the tree (left of|to the left of|west of|next to|beside|"
                                  r"near) the building", rel_a[0]), rel_a
    rel_b = texts(exprs, "b", "spatial-relative")
    assert rel_b and re.fullmatch(r"the tree (below|south of|next to|beside|near) the building",
                                  rel_b[0]), rel_b
    e = next(e for e in exprs if e.text == rel_a[0])
    assert np.array_equal(e.mask, a.mask) and e.details["anchor_fid"] == "h"


def test_relation_on_a_sector_border_is_not_used():
    house = disc("h", "building", 48, 48, 6)
    # a sits at 45 degrees up-left of the building (the left/above border), far enough not to
    # be "next to"; b is elsewhere
    a = disc("a", "tree", 48 - 20, 48 - 20, 5)
    b = disc("b", "tree", 85, 85, 5)
    exprs = chip_expressions([house, a, b], np.random.default_rng(0))
    assert texts(exprs, "a", "spatial-relative") == []


def test_absent_expression_has_an_empty_mask():
    e = absent_expression("tree", (SIDE, SIDE))
    assert e.text == "the tree" and e.type == "absent" and not e.mask.any()


def _round_trip(sentence, classes):
    a = analyse(sentence, list(classes))
    return a


def test_every_sentence_round_trips_through_the_decoupler():
    objs = [disc("h", "building", 48, 48, 10), disc("a", "tree", 26, 48, 6),
            disc("b", "tree", 48, 85, 6), disc("c", "tree", 85, 15, 9),
            disc("d", "storage tank", 12, 85, 8), disc("e", "storage tank", 80, 70, 5)]
    exprs = chip_expressions(objs, np.random.default_rng(3))
    classes = ["building", "tree", "storage tank"]
    assert len({e.type for e in exprs}) >= 4
    for e in exprs:
        a = _round_trip(e.text, classes)
        assert e.category in a.matched_classes, e.text
        for phrase in POSITIONS:
            if e.text.endswith(phrase):
                # the position phrase is chunked from its preposition on
                assert any(k.startswith(phrase.split()[0] + " the ") and k in phrase
                           for k in a.kept_phrases), (e.text, a.kept_phrases)


# --------------------------------------------------------------------------- files and CLI
RES = 0.25
ORIGIN = (500_000.0, 5_000_000.0)


def scene_raster(tmp_path, size=640, objects=()):
    """UTM raster at 0.25 m, grey ground; ``objects`` = (cx, cy, r, rgb) in pixels."""
    img = np.full((3, size, size), 110, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for cx, cy, r, rgb in objects:
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        for k in range(3):
            img[k][m] = rgb[k]
    return write_raster(tmp_path / "scene.tif", img, width=size, height=size, res=RES,
                        origin=ORIGIN, crs=UTM)


def tree_field(n=60, size=640, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        cx, cy = rng.uniform(10, size - 10, 2)
        r = float(rng.uniform(5, 11))
        if all(math.hypot(cx - x, cy - y) > r + q + 3 for x, y, q, _ in out):
            out.append((float(cx), float(cy), r, (40, int(rng.integers(100, 170)), 50)))
    return out


def to_map(cx, cy):
    return ORIGIN[0] + cx * RES, ORIGIN[1] - cy * RES


def write_tree_layer(path, objects, crs=UTM, layer="trees"):
    geoms = [Point(*to_map(cx, cy)).buffer(r * RES, 32) for cx, cy, r, _ in objects]
    gdf = gpd.GeoDataFrame({"kind": ["tree"] * len(geoms)}, geometry=geoms, crs=UTM)
    gdf.to_crs(crs).to_file(path, layer=layer, engine="pyogrio")
    return path


def run(*args):
    return CliRunner().invoke(cli, ["dataset", "build", *map(str, args)])


def build(tmp_path, raster, *labels, extra=()):
    out = tmp_path / "ds"
    res = run(raster, *labels, "--out", out, "--chip-size", 64, "--no-progress", *extra)
    assert res.exit_code == 0, res.output
    return out


def rows_of(out):
    return [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]


def test_build_writes_the_layout_train_and_evaluate_read(tmp_path):
    from rrsis_geo.data.refsegrs import RefSegRSDataset

    objs = tree_field()
    raster = scene_raster(tmp_path, objects=objs)
    labels = write_tree_layer(tmp_path / "trees.gpkg", objs)
    out = build(tmp_path, raster, labels, extra=("--class-field", "kind"))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["sentences"]) == {"train", "val", "test"}
    rows = rows_of(out)
    assert summary["total"] == len(rows)
    for r in rows:
        for key in ("type", "category", "needs_disambiguation", "union_mask", "transform",
                    "crs", "feature_ids", "attributes", "template", "block", "chip"):
            assert key in r
        assert r["crs"] == UTM and r["gsd"] == pytest.approx(RES)
    ds = RefSegRSDataset(out, "train", img_size=64)
    s = ds[0]
    assert s["type"] is not None and s["union_mask"] is not None
    # the mask of a positive sentence sits on the painted tree pixels of its chip
    pos = next(r for r in rows if r["type"] == "category" or r["type"] == "spatial-absolute")
    img = np.asarray(Image.open(out / pos["image"])).transpose(2, 0, 1)
    mask = np.asarray(Image.open(out / pos["mask"])) > 0
    assert mask.sum() > 16
    assert (img[0][mask] == 40).mean() > 0.9  # red channel of every painted tree is 40
    info = json.loads((out / "dataset.json").read_text())
    assert info["chip_size"] == 64 and "tree" in info["classes"]


def test_absent_class_names_classes_missing_from_the_raster(tmp_path):
    # without --absent-class, negatives can only name the labelled class on chips without it
    objs = tree_field(n=120, seed=3)
    raster = scene_raster(tmp_path, objects=objs)
    labels = write_tree_layer(tmp_path / "trees.gpkg", objs)
    common = ("--class", "tree", "--val-fraction", 0, "--test-fraction", 0,
              "--absent-fraction", 0.3)
    plain = [r for r in rows_of(build(tmp_path, raster, labels, extra=common))
             if r["type"] == "absent"]
    assert {r["category"] for r in plain} <= {"tree"}
    import shutil

    shutil.rmtree(tmp_path / "ds")
    rows = rows_of(build(tmp_path, raster, labels,
                         extra=(*common, "--absent-class", "Building", "--absent-class", "car")))
    absent = [r for r in rows if r["type"] == "absent"]
    named = [r for r in absent if r["category"] != "tree"]
    assert {r["category"] for r in named} == {"building", "car"}
    assert 0.15 < len(absent) / len(rows) < 0.45
    for r in absent:
        assert r["expression"] == f"the {r['category']}"
        assert not (np.asarray(Image.open(tmp_path / "ds" / r["mask"])) > 0).any()


def test_no_train_chip_near_a_val_or_test_block(tmp_path):
    objs = tree_field(n=80, seed=2)
    raster = scene_raster(tmp_path, objects=objs)
    labels = write_tree_layer(tmp_path / "trees.gpkg", objs)
    out = build(tmp_path, raster, labels, extra=("--class", "tree", "--stride", 32))
    blocks = gpd.read_file(out / "splits.gpkg", layer="blocks")
    chips = gpd.read_file(out / "splits.gpkg", layer="chips")
    assert set(blocks.split) >= {"train", "val", "test"}
    chip_m = 64 * RES
    for _, c in chips.iterrows():
        own = blocks[blocks.split == c.split].union_all()
        assert c.geometry.difference(own).area < 1e-6  # inside blocks of its own split
        if c.split == "train":
            held = blocks[blocks.split != "train"].union_all()
            assert c.geometry.distance(held) >= chip_m - 1e-6
    # overlapping chips only inside train
    for split in ("val", "test"):
        sub = chips[chips.split == split].geometry.tolist()
        for i in range(len(sub)):
            for j in range(i + 1, len(sub)):
                assert sub[i].intersection(sub[j]).area < 1e-6
    train = chips[chips.split == "train"].geometry.tolist()
    assert any(train[i].intersection(train[j]).area > 0 for i in range(len(train))
               for j in range(i + 1, len(train)))
    # every sentence's chip carries the split of its metadata row
    split_of = dict(zip(chips.chip, chips.split))
    assert all(split_of[r["chip"]] == r["split"] for r in rows_of(out))


def test_labels_in_wgs84_on_a_utm_raster(tmp_path):
    objs = tree_field(seed=4)
    raster = scene_raster(tmp_path, objects=objs)
    labels = write_tree_layer(tmp_path / "trees_4326.gpkg", objs, crs="EPSG:4326")
    out = build(tmp_path, raster, labels, extra=("--class", "tree"))
    hits = []
    for r in rows_of(out):
        if r["type"] in ("all", "absent"):
            continue
        img = np.asarray(Image.open(out / r["image"]))[..., 0]
        mask = np.asarray(Image.open(out / r["mask"])) > 0
        hits.append((img[mask] == 40).mean())
    assert hits and np.mean(hits) > 0.9


def test_csv_boxes_become_ellipses_or_boxes(tmp_path):
    raster = scene_raster(tmp_path, size=128)
    csv = tmp_path / "boxes.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\n"
                   "scene.png,10,20,50,40,Tree\nother.png,0,0,5,5,Tree\n"
                   "scene.png,60,60,100,110,Tree\n")
    with rasterio.open(raster) as src:
        crs, transform = src.crs, src.transform
    ell = read_labels([csv], str(raster), crs, transform, class_field="label")
    boxes = read_labels([csv], str(raster), crs, transform, box_mask="box")
    assert [lab.category for lab in ell] == ["tree", "tree"]  # other image skipped, lower case
    px = RES * RES
    assert boxes[0].geometry.area / px == pytest.approx(40 * 20)
    assert ell[0].geometry.area / px == pytest.approx(math.pi * 20 * 10, rel=0.01)
    # the box's map position: pixel (10, 20) is the top-left corner
    assert boxes[0].geometry.bounds == pytest.approx(
        (ORIGIN[0] + 10 * RES, ORIGIN[1] - 40 * RES, ORIGIN[0] + 50 * RES, ORIGIN[1] - 20 * RES))
    # in a chip, the box corners are outside the ellipse's mask
    out = build(tmp_path, raster, csv, extra=("--gsd", "native", "--chip-size", 128,
                                              "--val-fraction", 0, "--test-fraction", 0))
    row = next(r for r in rows_of(out) if r["type"] == "all")
    m = np.asarray(Image.open(out / row["mask"])) > 0
    assert m[30, 30] and not m[21, 11] and m[21, 30]


def test_lines_are_buffered_and_need_a_buffer(tmp_path):
    raster = scene_raster(tmp_path, size=256)
    x0, y0 = to_map(20, 128)
    x1, y1 = to_map(236, 128)
    path = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame({"t": ["road"]}, geometry=[LineString([(x0, y0), (x1, y1)])],
                     crs=UTM).to_file(path, engine="pyogrio")
    with rasterio.open(raster) as src:
        crs, transform = src.crs, src.transform
    labs = read_labels([path], str(raster), crs, transform, class_field="t", buffer="2")
    assert labs[0].geometry.geom_type == "Polygon"
    assert labs[0].geometry.area == pytest.approx(216 * RES * 4 + math.pi * 4, rel=0.02)
    labs = read_labels([path], str(raster), crs, transform, class_field="t", buffer="1,road=3")
    assert labs[0].geometry.area == pytest.approx(216 * RES * 6 + math.pi * 9, rel=0.02)
    res = run(raster, path, "--class", "road", "--out", tmp_path / "x", "--no-progress")
    assert res.exit_code == 2 and "--buffer" in res.stderr


def _assert_clean_failure(res, code, tmp_path, out, needle):
    assert res.exit_code == code, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error: "), res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_inputs_one_line_and_nothing_left(tmp_path):
    objs = tree_field(n=20, size=256)
    raster = scene_raster(tmp_path, size=256, objects=objs)
    out = tmp_path / "ds"
    good = write_tree_layer(tmp_path / "trees.gpkg", objs)
    # labels far away from the raster
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"k": ["tree"]}, geometry=[Point(600_000, 5_100_000).buffer(3)],
                     crs=UTM).to_file(far, engine="pyogrio")
    res = run(raster, far, "--class", "tree", "--out", out, "--no-progress")
    _assert_clean_failure(res, 3, tmp_path, out, "do not overlap the raster")
    res = run(raster, good, "--class-field", "nope", "--out", out, "--no-progress")
    _assert_clean_failure(res, 3, tmp_path, out, "no field 'nope'")
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"k": []}, geometry=[], crs=UTM).to_file(empty, engine="pyogrio")
    res = run(raster, empty, "--class", "tree", "--out", out, "--no-progress")
    _assert_clean_failure(res, 3, tmp_path, out, "empty")
    # objects too small to be referents: no chip holds one
    tiny = tmp_path / "tiny.gpkg"
    gpd.GeoDataFrame({"k": ["tree"]}, geometry=[Point(*to_map(100, 100)).buffer(0.3)],
                     crs=UTM).to_file(tiny, engine="pyogrio")
    res = run(raster, tiny, "--class", "tree", "--out", out, "--no-progress", "--chip-size",
              64, "--val-fraction", 0, "--test-fraction", 0)
    _assert_clean_failure(res, 3, tmp_path, out, "no chip holds a referent")
    res = run(raster, good, "--out", out, "--no-progress")
    _assert_clean_failure(res, 2, tmp_path, out, "--class")
    res = run(raster, tmp_path / "missing.gpkg", "--class", "tree", "--out", out)
    _assert_clean_failure(res, 3, tmp_path, out, "no such file")
    # an existing, non-empty --out is refused and left untouched
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = run(raster, good, "--class", "tree", "--out", out, "--no-progress")
    assert res.exit_code == 2 and (out / "keep.txt").read_text() == "x"


def test_synth_scene_objects_layer_builds_a_dataset(tmp_path):
    tif = tmp_path / "syn.tif"
    res = CliRunner().invoke(cli, ["synth", "scene", str(tif), "--size", "768", "--seed", "5",
                                   "--objects"])
    assert res.exit_code == 0, res.output
    layer = gpd.read_file(f"{tif}.objects.gpkg", layer="objects")
    assert len(layer) > 20 and {"building", "tree"} <= set(layer.category)
    with rasterio.open(tif) as src:
        assert layer.crs == src.crs
    out = build(tmp_path, tif, f"{tif}.objects.gpkg",
                extra=("--class-field", "category", "--chip-size", 96, "--seed", 1))
    rows = rows_of(out)
    types = {r["type"] for r in rows}
    assert {"category", "all", "spatial-absolute"} <= types
    classes = sorted({r["category"] for r in rows})
    for r in rows:
        a = analyse(r["expression"], classes)
        assert r["category"] in a.matched_classes


@pytest.mark.slow
def test_generated_scene_dataset_fine_tune_and_evaluate(tmp_path):
    """synth scene --objects -> dataset build -> one minute of fine-tuning from the demo
    model -> evaluate on the test blocks."""
    from rrsis_geo.defaults import DEMO_WEIGHTS

    tif = tmp_path / "syn.tif"
    r = CliRunner().invoke(cli, ["synth", "scene", str(tif), "--size", "1536", "--seed", "7",
                                 "--objects"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "ds"
    r = run(tif, f"{tif}.objects.gpkg", "--class-field", "category", "--out", out,
            "--no-progress", "--seed", "3")
    assert r.exit_code == 0, r.output
    n_test = len((out / "output_phrase_test.txt").read_text().splitlines())
    assert n_test > 0
    runs = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", str(out), "--weights", str(DEMO_WEIGHTS), "--out",
                                 str(runs), "--max-minutes", "1", "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    weights = sorted(runs.glob("*.safetensors"))
    assert weights
    report = tmp_path / "test.json"
    r = CliRunner().invoke(cli, ["evaluate", str(out), "--split", "test", "--weights",
                                 str(weights[0]), "--json", str(report), "--threads", "1",
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(report.read_text())
    assert metrics["count"] == n_test and 0.0 <= metrics["mIoU"] <= 1.0
    types = {json.loads(x)["type"] for x in (out / "metadata.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "test"}
    assert set(metrics["subsets"]) >= types - {"absent"}


def test_scene_objects_layer_matches_the_label_map(tmp_path):
    from rasterio.transform import from_origin

    from rrsis_geo.data.synth import scenes

    scene = scenes.generate_scene(9, 512, nodata_margin=False, n_targets=2, n_absent=0)
    n = scenes._write_objects(tmp_path / "o.gpkg", scene,
                              from_origin(0, 512 * 0.25, 0.25, 0.25), "EPSG:32633")
    layer = gpd.read_file(tmp_path / "o.gpkg", layer="objects")
    ids, counts = np.unique(scene.label[scene.label > 0], return_counts=True)
    assert n == len(layer) == len(ids)
    px = dict(zip(ids.tolist(), counts.tolist()))
    for _, row in layer.iterrows():
        assert row.category == scene.categories[row.object_id]
        assert row.geometry.area == pytest.approx(px[row.object_id] * 0.0625)
