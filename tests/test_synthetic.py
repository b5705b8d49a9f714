"""Synthetic referring-scene generator: chips, RefSegRS layout, scenes, CLI."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio import features

from rrsis_geo.data.synth.canvas import Canvas, Chip, frac, region_in, region_out
from rrsis_geo.data.synth.chips import generate_chip, make_chip, write_chips
from rrsis_geo.data.synth.scenes import (
    generate_mosaic_3x3,
    generate_scene,
    targets_path,
    write_mosaic_3x3,
    write_scene,
)
from rrsis_geo.data.synth.vocabulary import (
    ABSENT_ONLY_WORDS,
    CATEGORIES,
    CATEGORY_WORDS,
    CHIP_GSD,
    COLOUR_WORDS,
    REGION_PHRASES,
    VEHICLES,
)
from rrsis_geo.errors import UsageError

TYPES = {"category", "attribute", "spatial-absolute", "spatial-relative", "combined"}


def _components(mask: np.ndarray) -> int:
    """8-connected components of a bool mask."""
    m = mask.astype(np.uint8)
    return sum(1 for _ in features.shapes(m, mask=mask, connectivity=8))


@pytest.fixture(scope="module")
def chips200() -> list[Chip]:
    return [generate_chip(s, 160) for s in range(200)]


def test_chip_is_deterministic_per_seed():
    a, b = generate_chip(7, 192), generate_chip(7, 192)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.expression == b.expression and a.type == b.type
    c = generate_chip(8, 192)
    assert not np.array_equal(a.image, c.image)


def test_chip_fields_and_masks(chips200):
    for chip in chips200:
        assert chip.image.shape == (160, 160, 3) and chip.image.dtype == np.uint8
        assert chip.mask.shape == (160, 160) and chip.mask.dtype == bool
        assert chip.mask.any(), chip.expression
        assert chip.type in TYPES
        assert chip.category in CATEGORIES
        assert chip.expression and "\n" not in chip.expression
        # the union of the named category always contains the referent
        assert not (chip.mask & ~chip.category_union_mask).any()
        # the referent is drawn: its pixels are not nodata
        assert (chip.image[chip.mask] > 0).all()


def test_half_of_the_expressions_need_disambiguation(chips200):
    share = np.mean([c.needs_disambiguation for c in chips200])
    assert share >= 0.5
    types = Counter(c.type for c in chips200)
    assert set(types) == TYPES, types
    assert all(c.needs_disambiguation == (c.type != "category") for c in chips200)


def test_disambiguation_union_has_distractors(chips200):
    for chip in chips200:
        if chip.needs_disambiguation:
            assert chip.category_union_mask.sum() > chip.mask.sum()
            assert _components(chip.category_union_mask) >= 2, chip.expression
        else:
            assert np.array_equal(chip.category_union_mask, chip.mask)


def test_expression_names_the_category_and_its_attribute(chips200):
    for chip in chips200:
        e, d = chip.expression, chip.details
        words = CATEGORY_WORDS[chip.category] + (["vehicle"] if chip.category == "car" else [])
        assert any(w in e for w in words), e
        if "colour" in d:
            assert any(w in e for w in COLOUR_WORDS[d["colour"]]), e
        if chip.type in ("spatial-absolute", "combined"):
            assert any(p in e for p in REGION_PHRASES[d["region"]]), e


def test_spatial_absolute_words_match_positions():
    """'left' etc.: the referent's centroid is in the region, every distractor clearly out."""
    checked = 0
    for seed in range(60):
        chip, label, objs = make_chip(seed, 192, "spatial-absolute")
        region = chip.details["region"]
        ys, xs = np.nonzero(chip.mask)
        assert region_in(region, xs.mean() / 192, ys.mean() / 192), chip.expression
        same = [o for o in objs if o.category == chip.category and (label == o.id).any()
                and not np.array_equal(label == o.id, chip.mask)]
        for o in same:
            fx, fy = frac(Canvas(192, 192), o)
            assert region_out(region, fx, fy), (chip.expression, fx, fy)
        checked += 1
    assert checked == 60


def test_size_words_have_clear_gaps():
    for seed in range(80):
        chip, label, objs = make_chip(seed, 192, "attribute")
        if chip.details.get("attribute") != "size":
            continue
        ref_area = chip.mask.sum()
        others = [int((label == o.id).sum()) for o in objs if o.category == chip.category]
        others.remove(ref_area)
        if chip.details["size"] in ("large", "largest"):
            assert all(ref_area >= 1.7 * a for a in others)
        else:
            assert all(a >= 1.7 * ref_area for a in others)


def test_chip_size_is_validated():
    with pytest.raises(UsageError):
        generate_chip(0, 32)
    with pytest.raises(UsageError):
        generate_chip(-1, 192)


def _read(path):
    with warnings.catch_warnings():  # plain TIFFs: no georeferencing on purpose
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = rasterio.open(path)
    with src:
        return src.read()


def test_write_chips_refsegrs_layout_and_append(tmp_path):
    root = tmp_path / "ds"
    recs = write_chips(root, 12, size=128, seed=3, split="train")
    write_chips(root, 5, size=128, seed=4, split="val")
    lines = (root / "output_phrase_train.txt").read_text().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == [r["id"] for r in recs]
    assert len((root / "output_phrase_val.txt").read_text().splitlines()) == 5
    meta = [json.loads(ln) for ln in (root / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 17 and len({m["id"] for m in meta}) == 17
    assert {m["split"] for m in meta} == {"train", "val"}
    for m, line in zip(meta[:12], lines):
        assert line == f"{m['id']} {m['expression']}"
        img = _read(root / "images" / f"{m['id']}.tif")
        mask = _read(root / "masks" / f"{m['id']}.tif")
        union = _read(root / m["union_mask"])
        assert img.shape == (3, 128, 128) and img.dtype == np.uint8
        assert mask.shape == (1, 128, 128) and set(np.unique(mask)) <= {0, 255}
        assert (mask > 50).any() and not ((mask > 50) & ~(union > 50)).any()
        # the written chip is exactly the one generate_chip makes from the recorded seed
        chip = generate_chip(m["seed"], 128)
        assert np.array_equal(chip.image, img.transpose(1, 2, 0))
        assert np.array_equal(chip.mask, mask[0] > 50)
        assert m["gsd"] == CHIP_GSD
        assert set(m) >= {"id", "split", "expression", "category", "type",
                          "needs_disambiguation", "union_mask"}
    # the same split and seed again would duplicate ids: refused
    with pytest.raises(UsageError):
        write_chips(root, 2, size=128, seed=3, split="train")
    # another seed for the same split is appended
    write_chips(root, 2, size=128, seed=9, split="train")
    assert len((root / "output_phrase_train.txt").read_text().splitlines()) == 14


def test_write_chips_rejects_bad_arguments(tmp_path):
    with pytest.raises(UsageError):
        write_chips(tmp_path / "a", 0)
    with pytest.raises(UsageError):
        write_chips(tmp_path / "b", 2, split="bad name")


def test_cli_chips(tmp_path):
    from rrsis_geo.cli.main import cli

    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, ["synth", "chips", str(out), "--count", "3", "--size", "128",
                                   "--seed", "5", "--split", "test"])
    assert res.exit_code == 0, res.output
    assert len((out / "output_phrase_test.txt").read_text().splitlines()) == 3
    res = CliRunner().invoke(cli, ["synth", "chips", str(out), "--count", "0"])
    assert res.exit_code == 2
    res = CliRunner().invoke(cli, ["synth", "chips", str(out), "--size", "16"])
    assert res.exit_code == 2 and "size" in res.output


# ------------------------------------------------------------------------ absent (negative)


def _nouns(cat: str) -> list[str]:
    return CATEGORY_WORDS.get(cat, [cat]) + (["vehicle"] if cat == "car" else [])


def test_absent_chips_name_something_not_in_the_chip():
    kinds: Counter = Counter()
    pools: Counter = Counter()
    for seed in range(70):
        chip, label, objs = make_chip(seed, 160, "absent")
        e, d = chip.expression, chip.details
        assert chip.type == "absent" and not chip.needs_disambiguation
        assert chip.mask.shape == (160, 160) and chip.mask.dtype == bool and not chip.mask.any()
        assert any(w in e for w in _nouns(chip.category)), e
        same = [o for o in objs if o.category == chip.category]
        assert np.array_equal(chip.category_union_mask,
                              np.isin(label, [o.id for o in same])), e
        kinds[d["kind"]] += 1
        assert d["kind"] == {"category": "a", "attribute": "b", "spatial": "c"}[d["absent_kind"]]
        if d["kind"] == "a":  # the category is nowhere in the chip, not even hidden
            assert not same and not chip.category_union_mask.any(), e
            assert (chip.category in ABSENT_ONLY_WORDS) == (d["pool"] == "never-drawn")
            pools[d["pool"]] += 1
            if e.startswith("the vehicle") or " vehicle" in e:
                assert not any(o.category in VEHICLES for o in objs), e
        elif d["kind"] == "b":  # present category, but none of its objects has that colour
            assert chip.category_union_mask.any(), e
            assert d["colour"] not in {o.colour for o in same}, e
            assert any(w in e for w in COLOUR_WORDS[d["colour"]]), e
            if " vehicle" in e:
                assert not any(o.category in ("truck", "bus") for o in objs), e
        else:  # present category, every object of it clearly outside the named region
            assert chip.category_union_mask.any(), e
            assert any(p in e for p in REGION_PHRASES[d["region"]]), e
            for o in same:
                ys, xs = np.nonzero(label == o.id)
                if ys.size:
                    assert region_out(d["region"], (xs.mean() + 0.5) / 160,
                                           (ys.mean() + 0.5) / 160), e
                assert region_out(d["region"], *frac(Canvas(160, 160), o)), e
    assert set(kinds) == {"a", "b", "c"} and min(kinds.values()) >= 10, kinds
    assert set(pools) == {"drawable", "never-drawn"}, pools


def test_confusable_negatives_name_a_look_alike_of_what_the_chip_shows(tmp_path):
    """--confusable-negatives: a category negative on a chip with cars names a truck or a bus
    (absent from the chip); with the share at 0 every chip is the same as without the option."""
    from rrsis_geo.data.synth.vocabulary import CONFUSABLE

    n_conf = 0
    for seed in range(60):
        chip, label, objs = make_chip(seed, 160, "absent", confusable=1.0)
        plain = make_chip(seed, 160, "absent")[0]
        off = make_chip(seed, 160, "absent", confusable=0.0)[0]
        assert off.expression == plain.expression and np.array_equal(off.image, plain.image)
        present = {o.category for o in objs}
        d = chip.details
        if d.get("pool") == "confusable":
            n_conf += 1
            assert chip.category not in present and not chip.category_union_mask.any()
            assert any(chip.category in CONFUSABLE.get(c, ()) for c in present), chip.expression
            assert any(w in chip.expression for w in _nouns(chip.category)), chip.expression
            assert not chip.mask.any()
        elif d["kind"] == "a":  # a category negative: only when no look-alike was available
            assert not any(s not in present for c in present for s in CONFUSABLE.get(c, ()))
    assert n_conf >= 10, n_conf
    recs = write_chips(tmp_path / "c", 20, size=128, seed=3, absent_fraction=0.5, confusable=0.8)
    base = write_chips(tmp_path / "p", 20, size=128, seed=3, absent_fraction=0.5)
    for r, b in zip(recs, base):  # positive chips are untouched
        if r["type"] != "absent":
            assert r == b
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UsageError):
            write_chips(tmp_path / "d", 2, size=128, confusable=bad)
    from rrsis_geo.cli.main import cli

    res = CliRunner().invoke(cli, ["synth", "chips", str(tmp_path / "x"), "--absent-fraction",
                                   "0.5", "--confusable-negatives", "2"])
    assert res.exit_code == 2 and "confusable" in res.output, res.output
    assert not (tmp_path / "x").exists()


def test_absent_chip_is_deterministic_and_leaves_positive_chips_alone():
    a, b = generate_chip(12, 160, etype="absent"), generate_chip(12, 160, etype="absent")
    assert a.expression == b.expression and np.array_equal(a.image, b.image)
    assert a.details == b.details
    # the default draw never gives a negative chip
    assert all(generate_chip(s, 128).type != "absent" for s in range(15))
    with pytest.raises(UsageError):
        generate_chip(0, 128, etype="nonsense")


def test_write_chips_absent_fraction(tmp_path):
    from rrsis_geo.data.refsegrs import RefSegRSDataset

    recs = write_chips(tmp_path / "a", 30, size=128, seed=2, absent_fraction=0.5)
    again = write_chips(tmp_path / "b", 30, size=128, seed=2, absent_fraction=0.5)
    plain = write_chips(tmp_path / "c", 30, size=128, seed=2)
    assert recs == again  # deterministic
    n_abs = sum(r["type"] == "absent" for r in recs)
    assert 7 <= n_abs <= 23, n_abs  # Binomial(30, 0.5): 7..23 is about 3 sigma
    assert not any(r["type"] == "absent" for r in plain)
    for r, p in zip(recs, plain):
        mask = _read(tmp_path / "a" / r["mask"])
        img = _read(tmp_path / "a" / r["image"])
        assert r["seed"] == p["seed"]
        if r["type"] == "absent":
            assert not mask.any() and r["needs_disambiguation"] is False
            chip = generate_chip(r["seed"], 128, etype="absent")  # regenerable from the seed
            assert chip.expression == r["expression"]
            assert np.array_equal(chip.image, img.transpose(1, 2, 0))
        else:  # positive chips are exactly those of a run without negatives
            assert r == p and (mask > 50).any()
            assert np.array_equal(_read(tmp_path / "c" / p["image"]), img)
    # the RefSegRS reader takes the empty masks as all-background targets
    ds = RefSegRSDataset(tmp_path / "a", "train", img_size=64, cache=False)
    for i, r in enumerate(recs[:12]):
        sample = ds[i]
        assert sample["id"] == r["id"] and sample["type"] == r["type"]
        assert (sample["mask"].sum() == 0) == (r["type"] == "absent")
    for bad in (-0.1, 0.95, float("nan")):
        with pytest.raises(UsageError):
            write_chips(tmp_path / "d", 2, size=128, absent_fraction=bad)


def test_cli_chips_absent_fraction(tmp_path):
    from rrsis_geo.cli.main import cli

    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, ["synth", "chips", str(out), "--count", "6", "--size", "128",
                                   "--absent-fraction", "0.9"])
    assert res.exit_code == 0, res.output
    meta = [json.loads(ln) for ln in (out / "metadata.jsonl").read_text().splitlines()]
    assert sum(m["type"] == "absent" for m in meta) >= 3
    for bad in ("1.5", "-0.2", "0.95"):
        res = CliRunner().invoke(cli, ["synth", "chips", str(tmp_path / "x"),
                                       "--absent-fraction", bad])
        assert res.exit_code == 2 and "absent" in res.output, res.output


# ------------------------------------------------------------------------------------ scenes


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "scene.tif"
    rows = write_scene(out, size=1024, seed=11, n_targets=6, n_absent=2)
    return out, rows


def test_scene_geotiff_profile(scene_files):
    out, _ = scene_files
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633
        assert src.count == 3 and src.dtypes[0] == "uint8"
        assert src.nodata == 0
        assert src.res == (CHIP_GSD, CHIP_GSD)
        assert src.block_shapes[0] == (512, 512)
        assert src.compression.name.lower() == "deflate"
        img = src.read()
    nodata = (img == 0).all(axis=0)
    assert 0.01 < nodata.mean() < 0.35  # an irregular margin, not the whole raster
    assert nodata[0].any() and nodata[-1].any() and nodata[:, 0].any() and nodata[:, -1].any()
    assert not ((img == 0).any(axis=0) & ~nodata).any()  # valid pixels are never 0


def test_scene_targets_match_rasterized_referents(scene_files):
    import geopandas as gpd

    out, rows = scene_files
    gdf = gpd.read_file(targets_path(out), layer="targets")
    assert len(gdf) == 8 and gdf.crs.to_epsg() == 32633
    assert gdf["absent"].sum() == 2
    assert gdf.loc[gdf["absent"], "geometry"].isna().all()
    scene = generate_scene(11, 1024, n_targets=6, n_absent=2)
    with rasterio.open(out) as src:
        img, transform = src.read(), src.transform
    present = gdf[~gdf["absent"]]
    assert len(present) == 6
    for _, row in present.iterrows():
        i = int(row["target_id"])
        burnt = features.rasterize([(row.geometry, 1)], out_shape=(1024, 1024),
                                   transform=transform, fill=0).astype(bool)
        ref = scene.referent_mask(i)
        assert ref.any()
        assert np.array_equal(burnt, ref), row["expression"]
        assert (img[:, burnt] > 0).all()  # on valid pixels
        assert row["expression"] == scene.targets[i].expression
        assert row["area_m2"] == pytest.approx(ref.sum() * CHIP_GSD ** 2)


def test_scene_targets_are_unambiguous_scene_wide():
    scene = generate_scene(5, 1200, n_targets=6, n_absent=3)
    n = scene.label.shape[0]
    present = set(scene.categories.values())
    for i, t in enumerate(scene.targets):
        if t.absent:
            assert t.category not in present, t.expression
            continue
        ids = [k for k, c in scene.categories.items() if c == t.category]
        assert len(ids) == t.n_same_category
        assert t.needs_disambiguation == (len(ids) > 1)
        if t.type == "category":
            assert len(ids) == 1
        ref = scene.referent_mask(i)
        if "region" in t.details:  # spatial words refer to the whole scene
            ys, xs = np.nonzero(ref)
            assert region_in(t.details["region"], xs.mean() / n, ys.mean() / n)
            assert "scene" in t.expression
            for k in ids:
                m = scene.label == k
                if k == t.referent_id or (t.type == "combined"):
                    continue
                ys, xs = np.nonzero(m)
                assert region_out(t.details["region"], xs.mean() / n, ys.mean() / n)
        if t.details.get("size") == "largest":
            areas = [(scene.label == k).sum() for k in ids if k != t.referent_id]
            assert all(ref.sum() >= 1.7 * a for a in areas), t.expression


def test_scene_is_deterministic_and_gsd_scales_objects():
    a = generate_scene(2, 600, gsd=0.5, n_targets=2, n_absent=1)
    b = generate_scene(2, 600, gsd=0.5, n_targets=2, n_absent=1)
    assert np.array_equal(a.image, b.image)
    assert [t.expression for t in a.targets] == [t.expression for t in b.targets]
    with pytest.raises(UsageError):
        generate_scene(2, 600, n_targets=9)
    with pytest.raises(UsageError):
        generate_scene(2, 100)


def test_cli_scene(tmp_path):
    from rrsis_geo.cli.main import cli

    out = tmp_path / "s.tif"
    res = CliRunner().invoke(cli, ["synth", "scene", str(out), "--size", "800", "--seed", "1",
                                   "--targets", "2", "--absent", "1"])
    assert res.exit_code == 0, res.output
    assert out.exists() and targets_path(out).exists()
    res = CliRunner().invoke(cli, ["synth", "scene", str(out), "--size", "800", "--gsd", "-1"])
    assert res.exit_code == 2
    res = CliRunner().invoke(cli, ["synth", "scene", str(out), "--epsg", "4326"])
    assert res.exit_code == 2
    res = CliRunner().invoke(cli, ["synth", "mosaic", str(tmp_path / "m.tif"), "--chip-size",
                                   "128", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert targets_path(tmp_path / "m.tif").exists()
    res = CliRunner().invoke(cli, ["synth", "mosaic", str(tmp_path / "m.tif"), "--chip-size",
                                   "8"])
    assert res.exit_code == 2


def test_mosaic_has_one_referent_in_one_tile(tmp_path):
    mos = generate_mosaic_3x3(4, 128)
    t = mos.targets[0]
    ref = mos.referent_mask(0)
    r, c = t.details["tile"]
    ys, xs = np.nonzero(ref)
    assert (ys // 128 == r).all() and (xs // 128 == c).all()
    assert [k for k, v in mos.categories.items() if v == t.category] == [t.referent_id]
    assert mos.targets[1].absent and mos.targets[1].category not in mos.categories.values()
    rows = write_mosaic_3x3(tmp_path / "m.tif", 4, 128)
    assert rows[0]["geometry"] is not None and rows[1]["geometry"] is None
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.shape == (384, 384) and src.crs.to_epsg() == 32633
